"""The component registry: losses, connectors, weight schedules, optimizers, lr schedules.

Every entry is a :class:`Component`: a name, a typed signature (tensor inputs in order, keyword
options with defaults), a paragraph of documentation with the formula and the paper, shape rules
for its inputs and, for connectors, which options can be inferred from the tensors. Entries are
plain data and the implementation is named by an import path, so the static checker can see every
signature without importing torch; the implementation is imported only when a component is built.

Built-in entries are declared in :mod:`kdsl.catalog`; users add their own with
:func:`register_loss` / :func:`register_connector`, activated by ``import "pkg.module"`` in a spec.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .shapes import ShapeRule

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
            text = " | ".join(_literal_text(c) for c in self.choices)
        elif n == "list":
            text = f"list[{self.item.describe()}]" if self.item else "list"
        elif n == "union":
            text = " | ".join(a.describe() for a in self.alternatives)
        else:
            text = n
        return text + (" | none" if self.nullable else "")


def _literal_text(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return repr(value)


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
            text += f" = {_literal_text(self.default)}"
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
            module_name, _, attr = self.impl.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            return obj
        return self.impl


# --------------------------------------------------------------------------------------------
# Binding arguments to a signature (shared by the static checker and the builders)
# --------------------------------------------------------------------------------------------
@dataclass
class ArgProblem:
    """A problem binding arguments; ``index`` is the positional index or the keyword's position."""

    code: str
    message: str
    keyword: Optional[str] = None
    position: Optional[int] = None
    hint: Optional[str] = None


@dataclass
class Binding:
    inputs: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    problems: List[ArgProblem] = field(default_factory=list)


def bind(component: Component, args: Sequence[Any], kwargs: Sequence[Tuple[str, Any]], *,
         inputs: bool, inferable_ok: bool = True) -> Binding:
    """Bind positional ``args`` and keyword ``kwargs`` (a list, to see duplicates) to the
    component's inputs (``inputs=True``: a loss call or a connector application) or options.

    For a loss call, positional arguments fill the inputs and keywords may name inputs or
    options. For a declaration of options, positional arguments fill the options in order.
    Values are opaque here; type checks are the caller's.
    """
    from .suggest import did_you_mean

    out = Binding()
    slots: List[Param] = list(component.inputs) if inputs else list(component.options)
    target = out.inputs if inputs else out.options
    what = "input" if inputs else "option"
    for i, value in enumerate(args):
        if i >= len(slots):
            names = ", ".join(p.name for p in slots) or "none"
            out.problems.append(ArgProblem(
                "KD306", f"'{component.name}' takes {len(slots)} positional "
                f"{what}{'' if len(slots) == 1 else 's'} ({names}), got {len(args)}", position=i))
            break
        target[slots[i].name] = value
    seen: Dict[str, int] = {}
    for j, (key, value) in enumerate(kwargs):
        if key in seen:
            out.problems.append(ArgProblem("KD307", f"'{key}' is given twice", keyword=key, position=j))
            continue
        seen[key] = j
        if inputs and component.input(key) is not None:
            dest = out.inputs
        elif component.option(key) is not None or (component.open_options and not inputs):
            dest = out.options
        else:
            known = [p.name for p in component.inputs] if inputs else []
            known += [p.name for p in component.options]
            out.problems.append(ArgProblem(
                "KD305", f"'{component.name}' has no {'input or option' if inputs else 'option'} "
                f"'{key}'", keyword=key, position=j, hint=did_you_mean(key, known)
                or (f"it takes {', '.join(known)}" if known else f"it takes no {what}s")))
            continue
        if key in dest:
            out.problems.append(ArgProblem(
                "KD307", f"'{key}' is given both by position and by keyword", keyword=key, position=j))
            continue
        dest[key] = value
    required_inputs = [p for p in component.inputs if p.required] if inputs else []
    for p in required_inputs:
        if p.name not in out.inputs:
            out.problems.append(ArgProblem(
                "KD308", f"'{component.name}' is missing its input '{p.name}'"))
    for p in component.options:
        if p.required and p.name not in out.options:
            if inferable_ok and component.inferable(p.name):
                continue
            if inputs and component.kind == "connector":
                continue  # connector options are bound at its declaration, not its application
            out.problems.append(ArgProblem(
                "KD308", f"'{component.name}' is missing its option '{p.name}'"
                + (f" ({p.doc})" if p.doc else "")))
    return out


def type_problem(component: Component, param: Param, value: Any) -> Optional[str]:
    """A message if the literal ``value`` does not fit ``param``'s type, else None."""
    if param.type.accepts(value):
        return None
    return (f"'{param.name}' of '{component.name}' must be {param.type.describe()}, "
            f"got {_literal_text(value)}")


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
class Registry:
    def __init__(self) -> None:
        self._entries: Dict[str, Dict[str, Component]] = {k: {} for k in KINDS}
        self._builtins_loaded = False

    def _ensure_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            from . import catalog

            for component in catalog.builtin_components():
                self.add(component)

    def add(self, component: Component, *, replace: bool = False) -> Component:
        if component.kind not in KINDS:
            raise ValueError(f"unknown component kind {component.kind!r}")
        table = self._entries[component.kind]
        if component.name in table and not replace and table[component.name] is not component:
            old = table[component.name]
            raise ValueError(f"a {component.kind} named {component.name!r} is already registered "
                             f"(by {old.origin}); pass replace=True to replace it")
        table[component.name] = component
        return component

    def get(self, kind: str, name: str) -> Optional[Component]:
        self._ensure_builtins()
        return self._entries[kind].get(name)

    def names(self, kind: str) -> List[str]:
        self._ensure_builtins()
        return sorted(self._entries[kind])

    def all(self, kind: Optional[str] = None) -> List[Component]:
        self._ensure_builtins()
        kinds = [kind] if kind else list(KINDS)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries[k])]

    def remove(self, kind: str, name: str) -> None:
        self._entries[kind].pop(name, None)


REGISTRY = Registry()


# --------------------------------------------------------------------------------------------
# Plugins: signatures read from the class
# --------------------------------------------------------------------------------------------
_ANNOTATION_TYPES = {float: FLOAT, int: INT, bool: BOOL, str: STR, list: list_of(ANY),
                     "float": FLOAT, "int": INT, "bool": BOOL, "str": STR}


def _type_from(annotation: Any, default: Any) -> ValueType:
    t = _ANNOTATION_TYPES.get(annotation)
    if t is None and isinstance(annotation, str):
        t = _ANNOTATION_TYPES.get(annotation.replace("typing.", "").strip())
    if t is None and default is not REQUIRED and default is not None:
        t = _ANNOTATION_TYPES.get(type(default))
    t = t or ANY
    if default is None and t.name != "any":
        t = optional(t)
    return t


def _params_of(func: Callable, *, skip_first: bool, runtime: bool) -> Tuple[Param, ...]:
    params = []
    for i, p in enumerate(inspect.signature(func).parameters.values()):
        if skip_first and i == 0:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        ann = None if p.annotation is p.empty else p.annotation
        ptype = (optional(TENSOR) if default is None else TENSOR) if runtime else _type_from(ann, default)
        params.append(Param(p.name, ptype, default))
    return tuple(params)


def _doc_of(cls: Any) -> Tuple[str, str]:
    doc = inspect.getdoc(cls) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else cls.__name__
    return summary, doc


def component_from_class(kind: str, name: str, cls: Any, *, rules: Sequence[ShapeRule] = (),
                         infer: Sequence[Infer] = (), paper: str = "") -> Component:
    """A :class:`Component` whose options come from ``cls.__init__`` and inputs from
    ``cls.forward`` (both without ``self``)."""
    summary, doc = _doc_of(cls)
    options = _params_of(cls.__init__, skip_first=True, runtime=False)
    inputs = _params_of(cls.forward, skip_first=True, runtime=True) if hasattr(cls, "forward") else ()
    module = getattr(cls, "__module__", "?")
    return Component(kind, name, cls, summary, doc, paper, inputs, options, tuple(rules),
                     tuple(infer), origin=module)


def _register(kind: str, name: str, replace: bool, rules, infer, paper):
    def decorate(cls):
        REGISTRY._ensure_builtins()
        REGISTRY.add(component_from_class(kind, name, cls, rules=rules, infer=infer, paper=paper),
                     replace=replace)
        return cls

    return decorate


def register_loss(name: str, *, rules: Sequence[ShapeRule] = (), paper: str = "",
                  replace: bool = False):
    """Class decorator: make an ``nn.Module`` loss available to specs as ``name``.

    Its options are read from ``__init__`` and its inputs, in order, from ``forward``::

        @kdsl.register_loss("my_l2")
        class MyL2(torch.nn.Module):
            def __init__(self, scale: float = 1.0): ...
            def forward(self, student, teacher): ...
    """
    return _register("loss", name, replace, rules, (), paper)


def register_connector(name: str, *, infer: Sequence[Infer] = (), rules: Sequence[ShapeRule] = (),
                       paper: str = "", replace: bool = False):
    """Class decorator: make an ``nn.Module`` connector available to specs as ``name``.

    ``infer`` names options the compiler may fill in from shapes, e.g.
    ``infer=[Infer("in_channels")]`` to take ``in_channels`` from the input's dimension 1.
    """
    return _register("connector", name, replace, rules, infer, paper)


def iter_params(component: Component) -> Iterable[Param]:
    yield from component.inputs
    yield from component.options
