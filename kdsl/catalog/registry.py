"""The component registry: built-in entries (declared in the ``kdsl.catalog`` modules) and plugins.

Users add entries with :func:`register_loss`, :func:`register_connector` and
:func:`register_function`, activated by ``import "pkg.module"`` in a spec; the signature is read
from the class, and value constraints come from ``typing.Annotated`` options or the decorator's
``constraints``.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from kdsl.catalog.shapes import ShapeRule
from kdsl.catalog.types import (ANY, BOOL, FLOAT, INT, KINDS, REQUIRED, STR, TENSOR, Component, Constraint,
                                Infer, Param, ValueType, list_of, optional)

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
            from kdsl.catalog import builtin

            for component in builtin.builtin_components():
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


def _annotated(annotation: Any) -> Tuple[Any, Optional[Constraint]]:
    """``Annotated[float, POSITIVE]`` -> ``(float, POSITIVE)``; other annotations unchanged."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return annotation, None
    base, *extras = typing.get_args(annotation)
    return base, next((e for e in extras if isinstance(e, Constraint)), None)


def _signature(func: Callable) -> inspect.Signature:
    try:  # string annotations (``from __future__ import annotations``) evaluated, for Annotated
        return inspect.signature(func, eval_str=True)
    except Exception:  # noqa: BLE001 - a name the plugin imports only for type checkers
        return inspect.signature(func)


def _params_of(func: Callable, *, skip_first: bool, runtime: bool) -> Tuple[Param, ...]:
    params = []
    for i, p in enumerate(_signature(func).parameters.values()):
        if skip_first and i == 0:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = REQUIRED if p.default is p.empty else p.default
        ann, constraint = _annotated(None if p.annotation is p.empty else p.annotation)
        if runtime:
            params.append(Param(p.name, optional(TENSOR) if default is None else TENSOR, default))
        else:
            params.append(Param(p.name, _type_from(ann, default), default, constraint=constraint))
    return tuple(params)


def _declared_options(cls: Any) -> Tuple[Param, ...]:
    """The options of ``cls``: read from ``__init__``, or those of the built-in entry it extends
    (a subclass of a loss that takes its options from its entry, with their types and ranges)."""
    inherited = getattr(cls, "declaration", None)
    if isinstance(inherited, Component) and getattr(cls, "__signature__", None) is not None:
        return inherited.options
    return _params_of(cls.__init__, skip_first=True, runtime=False)


def _constrained(kind: str, name: str, options: Tuple[Param, ...],
                 constraints: Mapping[str, Constraint]) -> Tuple[Param, ...]:
    unknown = sorted(set(constraints) - {p.name for p in options})
    if unknown:
        raise ValueError(f"{kind} {name!r}: constraints name options it does not take: "
                         f"{', '.join(unknown)}")
    return tuple(dataclasses.replace(p, constraint=constraints[p.name]) if p.name in constraints
                 else p for p in options)


def _doc_of(cls: Any) -> Tuple[str, str]:
    doc = inspect.getdoc(cls) or ""
    summary = doc.strip().splitlines()[0] if doc.strip() else cls.__name__
    return summary, doc


def component_from_class(kind: str, name: str, cls: Any, *, rules: Sequence[ShapeRule] = (),
                         infer: Sequence[Infer] = (), paper: str = "",
                         constraints: Optional[Mapping[str, Constraint]] = None) -> Component:
    """A :class:`Component` whose options come from ``cls.__init__`` and inputs from
    ``cls.forward`` (both without ``self``); ``constraints`` maps option names to their
    :class:`~kdsl.catalog.types.Constraint` (besides ``Annotated[float, POSITIVE]`` options)."""
    summary, doc = _doc_of(cls)
    options = _constrained(kind, name, _declared_options(cls), constraints or {})
    inputs = _params_of(cls.forward, skip_first=True, runtime=True) if hasattr(cls, "forward") else ()
    if getattr(cls, "needs_context", False):
        # a context-needing function receives the step's context first; it is not a spec input
        inputs = inputs[1:]
    module = getattr(cls, "__module__", "?")
    return Component(kind, name, cls, summary, doc, paper, inputs, options, tuple(rules),
                     tuple(infer), origin=module)


def _register(kind: str, name: str, replace: bool, rules, infer, paper, constraints):
    def decorate(cls):
        REGISTRY._ensure_builtins()
        REGISTRY.add(component_from_class(kind, name, cls, rules=rules, infer=infer, paper=paper,
                                          constraints=constraints), replace=replace)
        return cls

    return decorate


def register_loss(name: str, *, rules: Sequence[ShapeRule] = (), paper: str = "",
                  constraints: Optional[Mapping[str, Constraint]] = None, replace: bool = False):
    """Class decorator: make an ``nn.Module`` loss available to specs as ``name``.

    Its options are read from ``__init__`` and its inputs, in order, from ``forward``. An
    option's allowed values are declared with ``typing.Annotated`` or ``constraints``, and
    `kdsl check` reports a value outside them (KD312)::

        @kdsl.register_loss("my_l2", constraints={"scale": POSITIVE})
        class MyL2(torch.nn.Module):
            def __init__(self, scale: float = 1.0, p: Annotated[float, at_least(1)] = 2.0): ...
            def forward(self, student, teacher): ...
    """
    return _register("loss", name, replace, rules, (), paper, constraints)


def register_connector(name: str, *, infer: Sequence[Infer] = (), rules: Sequence[ShapeRule] = (),
                       paper: str = "", constraints: Optional[Mapping[str, Constraint]] = None,
                       replace: bool = False):
    """Class decorator: make an ``nn.Module`` connector available to specs as ``name``.

    ``infer`` names options the compiler may fill in from shapes, e.g.
    ``infer=[Infer("in_channels")]`` to take ``in_channels`` from the input's dimension 1;
    ``constraints`` (or ``Annotated`` options) as for :func:`register_loss`.
    """
    return _register("connector", name, replace, rules, infer, paper, constraints)


def register_function(name: str, *, rules: Sequence[ShapeRule] = (), paper: str = "",
                      constraints: Optional[Mapping[str, Constraint]] = None, replace: bool = False):
    """Class decorator: make an ``nn.Module`` tensor function available to specs as ``name``,
    usable in any expression like the built-in ``detach``, ``argmax`` or ``softmax``.

    Its options (literals in the spec) are read from ``__init__`` and its inputs (values computed
    at run time), in order, from ``forward``; constraints as for :func:`register_loss`. A class
    that sets ``needs_context = True`` receives the step's
    :class:`~kdsl.components.functions.FunctionContext` (batch size, device, dtype) as the first
    argument of ``forward``, before its inputs::

        @kdsl.register_function("clamp_to", constraints={"bound": POSITIVE})
        class ClampTo(torch.nn.Module):
            def __init__(self, bound: float = 1.0): ...
            def forward(self, x): return x.clamp(-self.bound, self.bound)
    """
    return _register("function", name, replace, rules, (), paper, constraints)


