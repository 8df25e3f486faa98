"""The component registry: built-in entries (declared in the ``kdsl.catalog`` modules) and plugins.

Users add entries with :func:`register_loss` / :func:`register_connector`, activated by
``import "pkg.module"`` in a spec; the signature is read from the class.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from kdsl.catalog.shapes import ShapeRule
from kdsl.catalog.types import (ANY, BOOL, FLOAT, INT, KINDS, REQUIRED, STR, TENSOR, Component, Infer,
                                Param, ValueType, list_of, optional)

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
