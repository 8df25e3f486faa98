"""What a catalog entry is: value types of options and inputs, parameters, components.

Every entry is a :class:`Component`: a name, a typed signature (tensor inputs in order, keyword
options with defaults), a paragraph of documentation with the formula and the paper, shape rules
for its inputs and, for connectors, which options can be inferred from the tensors. Entries are
plain data and the implementation is named by an import path, so the static checker can see every
signature without importing torch; the implementation is imported only when a component is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from kdsl.catalog.shapes import ShapeRule
from kdsl.core.literals import literal_text

KINDS: Tuple[str, ...] = ("loss", "connector", "schedule", "optimizer", "lr_schedule", "function",
                          "batch_transform")
KIND_PLURALS = {"loss": "losses", "connector": "connectors", "schedule": "schedules",
                "optimizer": "optimizers", "lr_schedule": "lr_schedules", "function": "functions",
                "batch_transform": "batch_transforms"}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


# --------------------------------------------------------------------------------------------
# Value types of options and inputs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValueType:
    """The type of an option or input, as the checker sees it.

    ``name`` is one of ``float int bool str any list choice union module tensor labels``.
    ``module`` is a reference to a module of a model (``teacher.layer2.0.bn1``); ``tensor`` and
    ``labels`` are inputs computed at run time (records, connector outputs, batch fields).
    """

    name: str
    choices: Tuple[Any, ...] = ()
    item: Optional["ValueType"] = None
    alternatives: Tuple["ValueType", ...] = ()
    nullable: bool = False

    @property
    def is_runtime(self) -> bool:
        """True for inputs whose value only exists at run time (not a literal)."""
        return self.name in ("tensor", "labels", "module")

    def accepts(self, value: Any) -> bool:
        """Whether a literal value (int, float, str, bool, None, list) fits this type."""
        if value is None:
            return self.nullable or self.name == "any"
        n = self.name
        if n == "any":
            return True
        if n == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if n == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if n == "bool":
            return isinstance(value, bool)
        if n == "str":
            return isinstance(value, str)
        if n == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if n == "list":
            return isinstance(value, (list, tuple)) and (
                self.item is None or all(self.item.accepts(v) for v in value))
        if n == "union":
            return any(a.accepts(value) for a in self.alternatives)
        return False  # module / tensor / labels are never literals

    def describe(self) -> str:
        n = self.name
        if n == "choice":
            text = " | ".join(literal_text(c) for c in self.choices)
        elif n == "list":
            text = f"list[{self.item.describe()}]" if self.item else "list"
        elif n == "union":
            text = " | ".join(a.describe() for a in self.alternatives)
        else:
            text = n
        return text + (" | none" if self.nullable else "")


FLOAT = ValueType("float")
INT = ValueType("int")
BOOL = ValueType("bool")
STR = ValueType("str")
ANY = ValueType("any")
MODULE = ValueType("module")
TENSOR = ValueType("tensor")
LABELS = ValueType("labels")


def choice(*values: Any) -> ValueType:
    return ValueType("choice", choices=tuple(values))


def list_of(item: ValueType) -> ValueType:
    return ValueType("list", item=item)


def one_of(*alternatives: ValueType) -> ValueType:
    return ValueType("union", alternatives=tuple(alternatives))


def optional(t: ValueType) -> ValueType:
    return ValueType(t.name, t.choices, t.item, t.alternatives, nullable=True)


# --------------------------------------------------------------------------------------------
# Value constraints of options
# --------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_text(x: float) -> str:
    return literal_text(int(x)) if float(x).is_integer() else literal_text(x)


@dataclass(frozen=True)
class Violation:
    """How a literal breaks a :class:`Constraint`: ``requirement`` in words ("must be > 0"),
    the offending ``value`` and, for a list item, its index ``item`` (None: the value itself)."""

    requirement: str
    value: Any
    item: Optional[int] = None
    hint: Optional[str] = None


@dataclass(frozen=True)
class Constraint:
    """A condition on the value of an option, beyond its type, checked before anything is built.

    ``lo``/``hi`` bound a number (open ends with ``lo_open``/``hi_open``); ``min_items`` and
    ``max_items`` bound the length of a list and ``each`` constrains every item of a list. A
    constraint with both parts fits a union type such as ``int | list[int]``: the bounds apply
    to a number, ``each`` and the lengths to a list. ``None`` always passes (nullability is the
    type's business). Build them with :data:`POSITIVE`, :func:`at_least`, :func:`interval`,
    :func:`each` and friends.
    """

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    min_items: int = 0
    max_items: Optional[int] = None
    each: Optional["Constraint"] = None

    # ---- words ----------------------------------------------------------------------------
    def bounds_text(self) -> str:
        """The bounds alone ("> 0", "in [0, 1)"), empty when there are none."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_number_text(lo)}, {_number_text(hi)}"
                    f"{')' if self.hi_open else ']'}")
        if lo is not None:
            return f"{'>' if self.lo_open else '>='} {_number_text(lo)}"
        if hi is not None:
            return f"{'<' if self.hi_open else '<='} {_number_text(hi)}"
        return ""

    def _length_text(self) -> str:
        low, high = self.min_items, self.max_items
        if high is not None and low == high:
            return f"have {low} item{'' if low == 1 else 's'}"
        if high is not None:
            return f"have {low} to {high} items" if low else f"have at most {high} items"
        if low == 1:
            return "be non-empty"
        return f"have at least {low} items" if low else ""

    def _list_text(self) -> str:
        length = self._length_text()
        if self.each is None:
            return length
        items = f"every item {self.each._as_item()}"
        return f"{length} with {items}" if length else f"have {items}"

    def _as_item(self) -> str:
        # "every item >= 1" reads better than "every item that must be >= 1"
        if not self._list_text():
            return self.bounds_text()
        return f"that must {self.describe()}"

    def describe(self) -> str:
        """The whole constraint in words, to follow "must": "be > 0", "be in [0, 1]",
        "be >= 1, or a list that must be non-empty with every item >= 1"."""
        bounds = self.bounds_text()
        lists = self._list_text()
        if bounds and lists:
            return f"be {bounds}, or a list that must {lists}"
        return f"be {bounds}" if bounds else lists

    # ---- checking -------------------------------------------------------------------------
    def _in_bounds(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def violation(self, value: Any) -> Optional[Violation]:
        """None if ``value`` (a literal of the right type) satisfies the constraint; a number
        no tensor can hold (:func:`unrepresentable`) never does."""
        if _is_number(value):
            requirement = unrepresentable(value)
            if requirement is None and self._in_bounds(value):
                return None
            return Violation(requirement or f"must be {self.bounds_text()}", value,
                             hint=_UNREPRESENTABLE_HINTS.get(requirement))
        if not isinstance(value, (list, tuple)):
            return None
        if len(value) < self.min_items or (self.max_items is not None and len(value) > self.max_items):
            return Violation(f"must {self._length_text()}", list(value))
        for i, item in enumerate(value):
            requirement = unrepresentable(item) if _is_number(item) else None
            if requirement is not None:
                return Violation(requirement, item, i, _UNREPRESENTABLE_HINTS[requirement])
            if self.each is not None and self.each.violation(item) is not None:
                return Violation(f"must have every item {self.each._as_item()}", item, i)
        return None


_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1
_UNREPRESENTABLE_HINTS = {
    "must be finite": "a number beyond about 1.8e308 reads as infinity; write a smaller one",
    "must fit in 64 bits": f"integers range from {_INT64_MIN} to {_INT64_MAX}",
}


def unrepresentable(x: float) -> Optional[str]:
    """What every numeric option requires whatever its declared range, or None: a float must be
    finite (a literal such as 1e400 reads as inf, and inf passes "> 0") and an int must fit in
    the 64 bits torch converts it to."""
    if isinstance(x, float) and not math.isfinite(x):
        return "must be finite"
    if isinstance(x, int) and not _INT64_MIN <= x <= _INT64_MAX:
        return "must fit in 64 bits"
    return None


def at_least(lo: float) -> Constraint:
    """``>= lo`` (``at_least(1)`` on an int: a count such as a channel number)."""
    return Constraint(lo=lo)


def greater_than(lo: float) -> Constraint:
    return Constraint(lo=lo, lo_open=True)


def interval(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Constraint:
    """``lo <= x <= hi``, either end open on request."""
    return Constraint(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def each(item: Constraint, *, min_items: int = 0, max_items: Optional[int] = None) -> Constraint:
    """A list whose every item satisfies ``item``, of ``min_items`` to ``max_items`` items."""
    return Constraint(min_items=min_items, max_items=max_items, each=item)


def one_or_each(item: Constraint) -> Constraint:
    """For ``T | list[T]`` options: a number satisfying ``item``, or a non-empty list of them."""
    return Constraint(item.lo, item.hi, item.lo_open, item.hi_open, min_items=1, each=item)


POSITIVE = greater_than(0)
NON_NEGATIVE = at_least(0)
PROBABILITY = interval(0, 1)
COUNT = at_least(1)  # channel counts, sizes, kernel sizes: integers >= 1
NON_EMPTY = Constraint(min_items=1)
ANY_NUMBER = Constraint()  # no declared range: only what :func:`unrepresentable` refuses


@dataclass(frozen=True)
class Param:
    """One input or option of a component; ``constraint`` limits an option's literal values."""

    name: str
    type: ValueType = ANY
    default: Any = REQUIRED
    doc: str = ""
    constraint: Optional[Constraint] = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def signature_text(self) -> str:
        text = f"{self.name}: {self.type.describe()}"
        if not self.required:
            text += f" = {literal_text(self.default)}"
        return text


@dataclass(frozen=True)
class Infer:
    """An option the compiler may fill in from a tensor's shape when the spec leaves it out.

    ``source="input"``: from a connector's (first) input; ``source="target"``: from the tensor
    that a connector's output is compared with (found through the consuming loss's shape
    rules); any other ``source`` names an input of a loss (``Infer("in_channels", "preds_S")``).
    ``dim`` is the dimension read (negative counts from the end); ``flat=True`` reads the
    number of elements per sample instead (all dimensions but the first).
    """

    option: str
    source: str = "input"
    dim: int = 1
    flat: bool = False


def _named(params: Tuple[Param, ...], name: str) -> Optional[Param]:
    return next((p for p in params if p.name == name), None)


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    impl: Any
    summary: str
    doc: str = ""
    paper: str = ""
    inputs: Tuple[Param, ...] = ()
    options: Tuple[Param, ...] = ()
    rules: Tuple[ShapeRule, ...] = ()
    infer: Tuple[Infer, ...] = ()
    origin: str = "kdsl"
    open_options: bool = False  # accepts keyword options beyond ``options`` (torch_nn)
    # connectors: methods a spec may apply besides forward (``para.encode(x)``), name -> doc
    methods: Tuple[Tuple[str, str], ...] = ()

    # ---- signature ------------------------------------------------------------------------
    def option(self, name: str) -> Optional[Param]:
        return _named(self.options, name)

    def input(self, name: str) -> Optional[Param]:
        return _named(self.inputs, name)

    def inferable(self, option: str) -> Optional[Infer]:
        return next((i for i in self.infer if i.option == option), None)

    def signature_text(self) -> str:
        parts = [p.signature_text() for p in self.inputs]
        opts = [p.signature_text() for p in self.options]
        if opts and parts:
            parts.append("*")
        return f"{self.name}({', '.join(parts + opts)})"

    # ---- implementation -------------------------------------------------------------------
    def load(self) -> Any:
        """The implementation object (imports it on first use)."""
        if isinstance(self.impl, str):
            from kdsl.core.resolve import import_ref

            return import_ref(self.impl, f"{self.kind} '{self.name}'")
        return self.impl


# --------------------------------------------------------------------------------------------
# Declaring the built-in entries
# --------------------------------------------------------------------------------------------
IMPLEMENTATIONS = "kdsl.components"
_SEQUENCE_FIELDS = ("inputs", "options", "rules", "infer", "methods")


def implementation_module(family: str) -> str:
    """Where the entries declared in the catalog module ``family`` are implemented: the torch
    module of the same name (``kdsl.catalog.logit_losses`` -> ``kdsl.components.logit_losses``)."""
    return f"{IMPLEMENTATIONS}.{family.rpartition('.')[2]}"


def declarer(kind: str, family: str, **shared: Any) -> Callable[..., Component]:
    """The function a catalog module (``family``, its ``__name__``) declares its ``kind`` entries
    with: ``declare(name, impl, summary, doc, paper="", inputs=..., options=..., rules=...)``,
    ``impl`` the class name in :func:`implementation_module`. ``shared`` holds the fields
    (inputs, rules, paper) an entry leaves out; the doc's line breaks are folded."""
    module = implementation_module(family)

    def declare(name: str, impl: str, summary: str, doc: str, paper: str = "",
                **fields: Any) -> Component:
        given = {**shared, **({"paper": paper} if paper else {}), **fields}
        given.update({k: tuple(v) for k, v in given.items() if k in _SEQUENCE_FIELDS})
        return Component(kind, name, f"{module}:{impl}", summary, " ".join(doc.split()), **given)

    return declare
