"""What a catalog entry is: value types of options and inputs, parameters, components.

Every entry is a :class:`Component`: a name, a typed signature (tensor inputs in order, keyword
options with defaults), a paragraph of documentation with the formula and the paper, shape rules
for its inputs and, for connectors, which options can be inferred from the tensors. Entries are
plain data and the implementation is named by an import path, so the static checker can see every
signature without importing torch; the implementation is imported only when a component is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from kdsl.catalog.shapes import ShapeRule
from kdsl.core.literals import literal_text

KINDS: Tuple[str, ...] = ("loss", "connector", "schedule", "optimizer", "lr_schedule")
KIND_PLURALS = {"loss": "losses", "connector": "connectors", "schedule": "schedules",
                "optimizer": "optimizers", "lr_schedule": "lr_schedules"}


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


@dataclass(frozen=True)
class Param:
    """One input or option of a component."""

    name: str
    type: ValueType = ANY
    default: Any = REQUIRED
    doc: str = ""

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

    # ---- signature ------------------------------------------------------------------------
    @property
    def positional_options(self) -> bool:
        """Schedules, optimizers and lr schedules take their options positionally too."""
        return self.kind in ("schedule", "optimizer", "lr_schedule")

    def option(self, name: str) -> Optional[Param]:
        return next((p for p in self.options if p.name == name), None)

    def input(self, name: str) -> Optional[Param]:
        return next((p for p in self.inputs if p.name == name), None)

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
