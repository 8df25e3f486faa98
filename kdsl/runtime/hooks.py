"""What kdsl installs on models, each behind a handle that removes it.

* Module hooks are torch's own forward (pre-)hooks; their ``RemovableHandle`` is kept.
* Methods and functions are patched through one process-wide :class:`PatchTable`: the first
  listener on ``Class.method`` installs a dispatcher, the last one to leave puts the original
  object back (``is`` the same object), so two distillers on the same classes work independently
  and can close in any order.
* Recorders keep what they saw during their own model's pass only, so a teacher and a student of
  the same class never mix. A recorded tensor that an in-place operation later changes (the
  version counter tells) is detected; such records are copied when recorded from then on.
"""

from __future__ import annotations

import inspect
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.core.span import Span

_MISSING = object()


class PassState:
    """Which model's forward pass is running (``active``), shared by a distiller's recorders."""

    __slots__ = ("active", "calibrating")

    def __init__(self) -> None:
        self.active: Optional[str] = None
        self.calibrating = True  # until the first complete pass of every model


# ------------------------------------------------------------------------------ patch table
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


# ------------------------------------------------------------------------------ recorded values
def _tensors(value: Any, depth: int = 0):
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 3 and isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v, depth + 1)


def _copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copy(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _copy(v)) for k, v in value.items())
    return value


class Entry:
    """One recorded value, with the version counters of its tensors at the time it was recorded."""

    __slots__ = ("value", "versions", "backup")

    def __init__(self, value: Any, copy: bool, calibrating: bool) -> None:
        if copy:
            self.value, self.versions, self.backup = _copy(value), None, None
        else:
            self.value = value
            # the common case, one tensor, without the generator
            self.versions = [(value, value._version)] if type(value) is torch.Tensor else \
                [(t, t._version) for t in _tensors(value)]
            # the first pass keeps a copy so that a value found overwritten can still be used
            self.backup = _copy(value) if calibrating and self.versions else None

    def overwritten(self) -> bool:
        return bool(self.versions) and any(t._version != v for t, v in self.versions)


class Recorder:
    """Base of every record kind. ``read()`` gives the value a loss sees."""

    def __init__(self, name: str, model: str, span: Optional[Span], state: PassState,
                 invocation: Any = 0, description: str = "") -> None:
        self.name = name
        self.model = model
        self.span = span
        self.state = state
        self.invocation = invocation  # int or "all"
        self.description = description
        self.calls = 0
        self.entries: List[Entry] = []
        self.copy = False  # set once an in-place overwrite was seen
        self.handles: List[Any] = []

    # -- recording ---------------------------------------------------------------------------
    def _active(self) -> bool:
        return self.state.active == self.model

    def _store(self, value: Any) -> None:
        index = self.calls
        self.calls += 1
        if self.invocation == "all" or index == self.invocation:
            self.entries.append(Entry(value, self.copy, self.state.calibrating))

    def clear(self) -> None:
        self.calls = 0
        self.entries = []

    # -- reading -----------------------------------------------------------------------------
    def check_overwrites(self) -> None:
        """After a calibration pass: switch to copying if an entry was overwritten in place."""
        for e in self.entries:
            if e.backup is not None and e.overwritten():
                self.copy = True
                e.value, e.versions, e.backup = e.backup, None, None
            else:
                e.backup = None

    def read(self) -> Any:
        if not self.entries:
            raise self._empty()
        for e in self.entries:
            if e.versions is not None and e.overwritten():
                raise error(
                    "KD606", f"record '{self.name}' ({self.description}) was overwritten by an "
                    "in-place operation after it was recorded", self.span,
                    hint="kdsl copies the records it sees overwritten in the first step; this one "
                    "changed later (a data-dependent in-place op?). Make that op out-of-place.")
        if self.invocation == "all":
            return [e.value for e in self.entries]
        return self.entries[0].value

    def _empty(self):
        if self.calls and self.invocation != "all":
            return error("KD511", f"record '{self.name}' asks for call {self.invocation} of "
                         f"{self.description.split(' of ', 1)[-1]}, which ran {self.calls} "
                         f"time{'s' if self.calls != 1 else ''} in this pass", self.span,
                         hint="invocations count from 0")
        return error("KD607", f"record '{self.name}' is empty: {self.description} did not run in "
                     f"the {self.model}'s pass", self.span,
                     hint="is that part of the model used in forward()? are the passes run "
                     "inside distiller.teacher_pass()/student_pass()?")

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()


class ModuleOutputRecorder(Recorder):
    def install(self, module: nn.Module) -> None:
        state_ref = self

        def hook(mod, args, output):
            if state_ref.state.active == state_ref.model:
                state_ref._store(output)

        self.handles.append(module.register_forward_hook(hook))


class ModuleInputRecorder(Recorder):
    def __init__(self, *args, selector: Any = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.selector = selector
        self.signature: Optional[inspect.Signature] = None

    def install(self, module: nn.Module) -> None:
        # also for an index: `input 1 of m` finds the second parameter when it came by keyword
        try:
            self.signature = inspect.signature(module.forward)
        except (TypeError, ValueError):
            self.signature = None
        rec = self

        def hook(mod, args, kwargs):
            if rec.state.active == rec.model:
                rec._store(rec.select(args, kwargs))
            return None

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def select(self, args, kwargs):
        sel = self.selector
        if isinstance(sel, int):
            if sel < len(args):
                return args[sel]
            if self.signature is None:
                return _Missing(f"positional input {sel}")
            params = [p for p in self.signature.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if sel < len(params) and params[sel].name in kwargs:
                return kwargs[params[sel].name]
            return _Missing(f"positional input {sel}")
        if sel in kwargs:
            return kwargs[sel]
        if self.signature is not None:
            try:
                bound = self.signature.bind_partial(*args, **kwargs)
                bound.apply_defaults()
                if sel in bound.arguments:
                    return bound.arguments[sel]
            except TypeError:
                pass
        return _Missing(f'input "{sel}"')


class _Missing:
    """Stands for an input the call did not receive; reading it is an error."""

    def __init__(self, what: str) -> None:
        self.what = what


class CallRecorder(Recorder, CallListener):
    """Records the output, or an input, of a patched method or function."""

    def __init__(self, *args, what: str = "output", selector: Any = None,
                 signature: Optional[inspect.Signature] = None, skip_self: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.what = what
        self.selector = selector
        self.signature = signature
        self.skip_self = skip_self

    def before(self, args, kwargs) -> None:
        if self.what == "input" and self.state.active == self.model:
            self._store(self.select(args, kwargs))

    def after(self, args, kwargs, out) -> None:
        if self.what == "output" and self.state.active == self.model:
            self._store(out)

    def select(self, args, kwargs):
        sel = self.selector
        offset = 1 if self.skip_self else 0
        if isinstance(sel, int) and sel + offset < len(args):
            return args[sel + offset]
        if self.signature is not None:
            try:
                bound = self.signature.bind(*args, **kwargs)
                bound.apply_defaults()
                names = list(self.signature.parameters)[offset:]
                key = names[sel] if isinstance(sel, int) and sel < len(names) else sel
                if key in bound.arguments:
                    return bound.arguments[key]
            except TypeError:
                pass
        return _Missing(f"input {sel!r}")


class ParamRecorder(Recorder):
    """A parameter (or buffer), read by reference: always present, never hooked."""

    def __init__(self, *args, tensor: torch.Tensor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tensor = tensor

    def clear(self) -> None:
        pass

    def read(self) -> Any:
        return self.tensor

    def check_overwrites(self) -> None:
        pass


def check_missing(value: Any, recorder: Recorder):
    if isinstance(value, _Missing):
        raise error("KD512", f"record '{recorder.name}': the call did not receive {value.what}",
                    recorder.span, hint="check the input selector against the callee's signature")
    return value


# ------------------------------------------------------------------------------ deliveries
class Delivery(CallListener):
    """During the source model's pass, queue what the callable returned; during the destination's
    pass, answer each call from the queue, in order, without running the original."""

    def __init__(self, description: str, source: str, dest: str, keep: Optional[int],
                 span: Optional[Span], state: PassState) -> None:
        self.description = description
        self.source, self.dest = source, dest
        self.keep = keep
        self.span = span
        self.state = state
        self.queue: Deque[Any] = deque()
        self.produced = 0
        self.handles: List[Any] = []

    def intercepts(self) -> bool:
        return self.state.active == self.dest

    def respond(self, args, kwargs):
        if not self.queue:
            raise error("KD603", f"delivery of {self.description}: the {self.dest}'s pass called it "
                        f"more often than the {self.source}'s pass did ({self.produced} "
                        f"result{'s' if self.produced != 1 else ''} delivered)", self.span,
                        hint=f"the {self.source} and the {self.dest} must make the same calls in a step")
        return self.queue.popleft()

    def after(self, args, kwargs, out) -> None:
        if self.state.active == self.source:
            if self.keep is not None and len(self.queue) >= self.keep:
                raise error("KD605", f"delivery of {self.description} holds at most {self.keep} "
                            f"result{'s' if self.keep != 1 else ''} (keep {self.keep}), and the "
                            f"{self.source}'s pass produced more", self.span,
                            hint="raise 'keep', or leave it out for no bound")
            self.queue.append(out)
            self.produced += 1

    def finish_step(self) -> None:
        left = len(self.queue)
        produced = self.produced
        self.clear()
        if left:
            raise error("KD604", f"delivery of {self.description}: the {self.source}'s pass produced "
                        f"{produced} result{'s' if produced != 1 else ''} but the {self.dest}'s pass "
                        f"used {produced - left}", self.span,
                        hint="nothing carries over to the next step; the two passes must match")

    def clear(self) -> None:
        self.queue.clear()
        self.produced = 0

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.clear()


# ------------------------------------------------------------------------------ frozen models
class _FrozenState:
    def __init__(self, model: nn.Module) -> None:
        self.training = {name: m.training for name, m in model.named_modules()}
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.count = 0


_FROZEN: "weakref.WeakKeyDictionary[nn.Module, _FrozenState]" = weakref.WeakKeyDictionary()


def freeze(model: nn.Module) -> None:
    """Eval mode (norm layers included) and no gradients; undone by the last :func:`unfreeze`."""
    state = _FROZEN.get(model)
    if state is None:
        state = _FROZEN[model] = _FrozenState(model)
    state.count += 1
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(model: nn.Module) -> None:
    state = _FROZEN.get(model)
    if state is None:
        return
    state.count -= 1
    if state.count > 0:
        return
    del _FROZEN[model]
    for name, m in model.named_modules():
        if name in state.training:
            m.training = state.training[name]
    for name, p in model.named_parameters():
        if name in state.requires_grad:
            p.requires_grad_(state.requires_grad[name])


def resolve_callable(ref: str, kind: str, span: Optional[Span]) -> Tuple[Any, str, Any]:
    """``"pkg.mod:Class.method"`` -> (owner, attribute name, raw attribute); errors are located."""
    from kdsl.core.resolve import resolve

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
    import sys

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


def hook_counts(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """Number of forward hooks and pre-hooks per submodule (for hygiene checks)."""
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}

