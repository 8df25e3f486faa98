"""Recorders: what a spec's ``record`` statements install on models.

A module's output or input is recorded by torch's own forward (pre-)hooks, whose
``RemovableHandle`` the recorder keeps; a method's or function's by a listener on the patch table
(:mod:`kdsl.runtime.patches`); a parameter by reference. A recorder keeps what it saw during its
own model's pass only (:class:`PassState` says whose pass runs), so a teacher and a student of
the same class never mix. A recorded tensor that an in-place operation later changes (the version
counter tells) is detected; such records are copied when recorded from then on.

A pass the distiller *truncates* (:mod:`kdsl.compiler.truncate` decides which) is armed with the
set of recorders the step needs from it: the store that completes the set raises
:class:`PassComplete`, which unwinds the rest of the model's forward, and the distiller's pass
catches exactly that exception.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.core.span import Span
from kdsl.runtime.patches import CallListener


class PassState:
    """Which model's forward pass is running (``active``), shared by a distiller's recorders.
    ``needed``: during a truncated pass, the recorders whose entries complete it (``remaining``
    of them still to come); ``None`` during a full pass."""

    __slots__ = ("active", "calibrating", "needed", "remaining")

    def __init__(self) -> None:
        self.active: Optional[str] = None
        self.calibrating = True  # until the first complete pass of every model
        self.needed: Optional[frozenset] = None
        self.remaining = 0


class PassComplete(BaseException):
    """Raised by the recorder that completes a truncated pass: everything the step needs from the
    model is recorded, so the rest of its forward is skipped. A ``BaseException`` so that model
    code catching ``Exception`` does not swallow it (as ``KeyboardInterrupt`` passes through);
    ``state`` tells the distiller that armed the pass that the exception is its own."""

    def __init__(self, state: PassState, record: str) -> None:
        super().__init__(record)
        self.state = state
        self.record = record


def tensors_in(value: Any, levels: Optional[int] = 3) -> Iterator[torch.Tensor]:
    """The tensors in a value: itself, or inside its lists, tuples and dicts (model outputs), down
    to ``levels`` levels of nesting (None: all)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif levels != 0 and isinstance(value, (list, tuple, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            yield from tensors_in(v, None if levels is None else levels - 1)


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

    def __init__(self, value: Any, copy: bool, calibrating: bool, versioned: bool = True) -> None:
        if copy:
            self.value, self.versions, self.backup = _copy(value), None, None
        elif not versioned:
            self.value, self.versions, self.backup = value, None, None
        else:
            self.value = value
            # the common case, one tensor, without the generator
            self.versions = [(value, value._version)] if type(value) is torch.Tensor else \
                [(t, t._version) for t in tensors_in(value)]
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
        # version counters are checked (off for a torch.compile'd model: a compiled graph does not
        # keep them; its calibrating step runs eagerly, and found overwrites are copied)
        self.versioned = True
        self.handles: List[Any] = []

    # -- recording ---------------------------------------------------------------------------
    def _store(self, value: Any) -> None:
        index = self.calls
        self.calls += 1
        if self.invocation == "all" or index == self.invocation:
            state = self.state
            # (a compiled model's calibrating step runs eagerly, with version counters)
            self.entries.append(Entry(value, self.copy, state.calibrating,
                                      self.versioned or state.calibrating))
            needed = state.needed
            if needed is not None and self in needed:
                # fixed call indices only (the compiler's rule): each needed recorder counts once
                state.remaining -= 1
                if state.remaining <= 0:
                    state.needed = None
                    raise PassComplete(state, self.name)

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

    def provide(self, value: Any) -> None:
        """Take ``value`` as what this pass recorded (a stored teacher output): one entry, or for
        an ``all`` record one per element of the list ``value``."""
        values = list(value) if self.invocation == "all" else [value]
        self.entries = [Entry(v, copy=False, calibrating=False) for v in values]
        self.calls = len(values) if self.invocation == "all" else self.invocation + 1


class InertHook:
    """What a kdsl hook becomes in a copy of its model (``copy.deepcopy``, a pickle round trip,
    ``torch.save(model)``): it records nothing and leaves the call as it is, so a copy never feeds
    the distiller of the original. (Loading such a pickle needs kdsl, as it needs the model's own
    classes.)"""

    __slots__ = ()

    def __call__(self, *args):
        return None

    def __repr__(self) -> str:
        return "<inert kdsl hook>"


class _RecorderHook:
    """A module hook that records into its recorder. Not a closure, so that a model holding it
    can be copied and pickled: every copy of the hook is an :class:`InertHook`."""

    __slots__ = ("recorder",)

    def __init__(self, recorder: "Recorder") -> None:
        self.recorder = recorder

    def __deepcopy__(self, memo) -> InertHook:
        return InertHook()

    def __copy__(self) -> InertHook:
        return InertHook()

    def __reduce__(self):
        return (InertHook, ())


class _OutputHook(_RecorderHook):
    __slots__ = ()

    def __call__(self, module, args, output):
        rec = self.recorder
        if rec.state.active == rec.model:
            rec._store(output)


class _InputHook(_RecorderHook):
    __slots__ = ()

    def __call__(self, module, args, kwargs):
        rec = self.recorder
        if rec.state.active == rec.model:
            rec._store(rec.select(args, kwargs))
        return None


class ModuleOutputRecorder(Recorder):
    def install(self, module: nn.Module) -> None:
        self.handles.append(module.register_forward_hook(_OutputHook(self)))


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
        self.handles.append(module.register_forward_pre_hook(_InputHook(self), with_kwargs=True))

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


def hook_counts(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """Number of forward hooks and pre-hooks per submodule (for hygiene checks)."""
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()}
