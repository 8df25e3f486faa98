"""Patching methods and functions, each listener behind a handle that removes it.

Methods and functions are patched through one process-wide :class:`PatchTable`: the first
listener on ``Class.method`` installs a dispatcher, the last one to leave puts the original
object back (``is`` the same object), so two distillers on the same classes work independently
and can close in any order. Also here: resolving the callable a spec names
(:func:`resolve_callable`) and finding the other names a function is bound to
(:func:`function_aliases`).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from kdsl.core.diagnostics import error
from kdsl.core.resolve import resolve
from kdsl.core.span import Span

_MISSING = object()


class _Patch:
    def __init__(self, owner: Any, name: str) -> None:
        self.owner = owner
        self.name = name
        self.had_own = name in vars(owner)
        if self.had_own:
            self.original = vars(owner)[name]
        elif inspect.isclass(owner):
            # inherited: the raw attribute from the MRO (getattr would unwrap a staticmethod or
            # bind a classmethod, and the dispatcher would then be installed as a plain method)
            self.original = next((vars(k)[name] for k in inspect.getmro(owner) if name in vars(k)),
                                 getattr(owner, name))
        else:
            self.original = getattr(owner, name)
        self.listeners: List["CallListener"] = []
        self.installed = self._make_installed()
        setattr(owner, name, self.installed)

    def _make_installed(self):
        raw = self.original
        kind = "plain"
        func = raw
        if isinstance(raw, staticmethod):
            kind, func = "static", raw.__func__
        elif isinstance(raw, classmethod):
            kind, func = "class", raw.__func__
        listeners = self.listeners
        owner, name = self.owner, self.name
        inherited = not self.had_own and inspect.isclass(owner)

        def current():
            # an inherited method is looked up in the bases at call time, so that a patch of the
            # base class's attribute (installed after this one) still sees calls through here
            for klass in owner.__mro__[1:]:
                if name in vars(klass):
                    attr = vars(klass)[name]
                    return attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            return func

        def dispatch(*args, **kwargs):
            for listener in listeners:
                listener.before(args, kwargs)
            # a delivery answers the call in its destination's pass; records still see the answer
            answer = next((x for x in listeners if x.intercepts()), None)
            if answer is not None:
                out = answer.respond(args, kwargs)
            else:
                out = (current() if inherited else func)(*args, **kwargs)
            for listener in listeners:
                listener.after(args, kwargs, out)
            return out

        try:
            dispatch.__wrapped__ = func  # type: ignore[attr-defined]
            dispatch.__name__ = getattr(func, "__name__", self.name)
            dispatch.__qualname__ = getattr(func, "__qualname__", self.name)
            # pickle finds a function by module and name: this one is found where it is installed
            dispatch.__module__ = getattr(func, "__module__", None) or dispatch.__module__
            dispatch.__doc__ = getattr(func, "__doc__", None)
        except (AttributeError, TypeError):
            pass
        if kind == "static":
            return staticmethod(dispatch)
        if kind == "class":
            return classmethod(dispatch)
        return dispatch

    def restore(self) -> None:
        if vars(self.owner).get(self.name, _MISSING) is not self.installed:
            # someone patched over us; removing would clobber their patch
            raise RuntimeError(f"{self.owner!r}.{self.name} was replaced while kdsl had it patched")
        if self.had_own:
            setattr(self.owner, self.name, self.original)
        else:
            delattr(self.owner, self.name)


class PatchTable:
    def __init__(self) -> None:
        self._patches: Dict[Tuple[int, str], _Patch] = {}

    def add(self, owner: Any, name: str, listener: "CallListener") -> "PatchHandle":
        key = (id(owner), name)
        patch = self._patches.get(key)
        if patch is None:
            patch = self._patches[key] = _Patch(owner, name)
        patch.listeners.append(listener)
        return PatchHandle(self, key, listener)

    def remove(self, key, listener) -> None:
        patch = self._patches.get(key)
        if patch is None:
            return
        if listener in patch.listeners:
            patch.listeners.remove(listener)
        if not patch.listeners:
            del self._patches[key]
            patch.restore()

    def original(self, owner: Any, name: str):
        patch = self._patches.get((id(owner), name))
        return patch.original if patch else vars(owner).get(name, getattr(owner, name, None))


PATCHES = PatchTable()


class PatchHandle:
    """Removes one listener; the original attribute returns when the last listener leaves."""

    def __init__(self, table: PatchTable, key, listener) -> None:
        self._table, self._key, self._listener = table, key, listener

    def remove(self) -> None:
        if self._listener is not None:
            self._table.remove(self._key, self._listener)
            self._listener = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class CallListener:
    """Sees calls of a patched method or function."""

    def intercepts(self) -> bool:
        return False

    def respond(self, args, kwargs):  # pragma: no cover - only interceptors
        raise NotImplementedError

    def before(self, args, kwargs) -> None:
        pass

    def after(self, args, kwargs, out) -> None:
        pass


def resolve_callable(ref: str, kind: str, span: Optional[Span]) -> Tuple[Any, str, Any]:
    """``"pkg.mod:Class.method"`` -> (owner, attribute name, raw attribute); errors are located."""
    def no_method_on(where: str, obj: Any, part: str) -> None:
        if not inspect.isclass(obj) and not inspect.ismodule(obj) and callable(obj):
            what = "function" if inspect.isfunction(obj) else type(obj).__name__
            raise error("KD504", f"\"{where}\" is a {what}, not a class, so \"{ref}\" names no method", span,
                        hint=f"use `function \"{where}\"`, or name the class: \"pkg.module:Class.method\"")

    found = resolve(ref, kind, span, check=no_method_on)
    owner, obj, name = found.owner, found.obj, found.name
    raw = None
    if inspect.isclass(owner):
        for klass in inspect.getmro(owner):
            if name in vars(klass):
                raw = vars(klass)[name]
                break
    else:
        raw = getattr(owner, name)
    if kind == "method":
        if not inspect.isclass(owner) or not (inspect.isfunction(raw) or isinstance(raw, (staticmethod, classmethod))):
            what = "a class" if inspect.isclass(obj) else type(obj).__name__
            raise error("KD504", f"\"{ref}\" is not a method of a class (it is {what})", span,
                        hint="use `function \"pkg.module:name\"` for module-level functions"
                        if callable(obj) and not inspect.isclass(owner) else None)
    else:
        if inspect.isclass(owner) or not callable(obj):
            raise error("KD504", f"\"{ref}\" is not a module-level function", span,
                        hint="use `method \"pkg.module:Class.name\"` for methods"
                        if inspect.isclass(owner) else None)
    return owner, name, raw


def function_aliases(func: Any, models: List[nn.Module]) -> List[Tuple[Any, str]]:
    """Other places a function is looked up from: globals of the modules that define the models'
    classes (``from pkg.ops import resize`` binds a second name that patching ``pkg.ops`` misses)."""
    seen = set()
    out = []
    for model in models:
        for m in model.modules():
            mod_name = type(m).__module__
            if mod_name in seen:
                continue
            seen.add(mod_name)
            mod = sys.modules.get(mod_name)
            if mod is None:
                continue
            for attr, value in list(vars(mod).items()):
                # a binding kdsl already patched (another record, another distiller) counts too
                if value is func or (callable(value) and PATCHES.original(mod, attr) is func):
                    out.append((mod, attr))
    return out


def signature_of(raw: Any) -> Optional[inspect.Signature]:
    func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None
