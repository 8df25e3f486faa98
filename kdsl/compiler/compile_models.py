"""The pass that compiles the student and the frozen teachers with ``torch.compile``, kdsl's hooks
in place (``kdsl.compile(..., compile_models=True)``, ``kdsl train --compile``).

It does what ``nn.Module.compile()`` does: the module's ``_compiled_call_impl`` becomes
``torch.compile(module._call_impl)``. The module object stays the same, so the recorders' hooks
and patches, registered on it and its submodules, are traced into the compiled graph (the hooks
are written so that dynamo traces them without a graph break: ``bench/compile.py`` counts). Runs
after the dry run, which stays eager. Closing the distiller puts the module's own
``_compiled_call_impl`` back.

torch.compile works lazily: dynamo and inductor fail, if they do, at the first call (no C++
compiler, an unsupported platform, an operator inductor cannot lower). Each compiled call is
guarded: such a failure warns once (KD708) and the model runs eagerly from then on. A model's own
errors are not compile errors and propagate as they would eagerly.
"""

from __future__ import annotations

import shutil
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError
from kdsl.runtime.recorders import PassComplete


def compile_models(plan: Plan) -> Plan:
    """Compile the student and every frozen teacher a step runs (trainable teachers and generators
    stay eager); nothing when the request does not ask for it."""
    option = plan.request.compile_models
    if not option:
        return plan
    options: Dict[str, Any] = dict(option) if isinstance(option, dict) else {}
    missing = _missing_compiler(plan, options)
    if missing is not None:
        warn_unavailable(plan, missing)
        return plan
    spec = plan.spec
    names = [t for t in plan.used_teachers if spec.model(t).frozen] + [spec.student.name]
    for name in names:
        model = plan.models[name]
        try:
            compiled = torch.compile(model._call_impl, **options)
        except Exception as exc:  # noqa: BLE001 - any failure to compile means: run eagerly
            warn_unavailable(plan, f"torch.compile failed: {type(exc).__name__}: {exc}")
            return plan
        guard = CompiledCall(model, compiled, plan, name)
        before = model.__dict__.get("_compiled_call_impl")
        model._compiled_call_impl = guard
        plan.undo.on_close.append(lambda m=model, b=before: setattr(m, "_compiled_call_impl", b))
        plan.compiled.append(name)
        for rec in guard.recorders():
            rec.versioned = False
    return plan


def _missing_compiler(plan: Plan, options: Dict[str, Any]) -> Optional[str]:
    """Why inductor cannot run here (``None``: it can): on CPU it builds C++ and needs a compiler."""
    backend = options.get("backend", "inductor")
    if backend != "inductor":
        return None
    devices = {p.device.type for m in plan.models.values() for p in m.parameters()}
    if "cpu" in devices or not devices:
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++", "cl")):
            return "inductor needs a C++ compiler on CPU and none was found (g++, c++, clang++)"
    return None


def warn_unavailable(plan: Plan, why: str) -> None:
    """KD708, once per distiller: the models run eagerly."""
    if plan.compile_note is None:
        plan.compile_note = f"unavailable, running eagerly: {why}"
        warnings.warn(f"KD708: torch.compile is unavailable, the models run eagerly: {why}",
                      RuntimeWarning, stacklevel=3)


def _eager_copy() -> None:
    """What a copy of a compiled model's call becomes: eager (``_compiled_call_impl`` unset)."""
    return None


class CompiledCall:
    """A model's compiled ``__call__``, falling back to the eager one (KD708) when dynamo or
    inductor fail. Copies and pickles of the model run eagerly (as copies of kdsl's hooks are
    inert)."""

    def __init__(self, model: nn.Module, compiled: Callable[..., Any], plan: Plan, name: str) -> None:
        self.model = model
        self.compiled: Optional[Callable[..., Any]] = compiled
        self.plan = plan
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the calibrating step runs eagerly: version counters, which find records that in-place
        # operations overwrite, are not kept inside a compiled graph
        if self.compiled is None or self.plan.state.calibrating:
            return self.model._call_impl(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except (PassComplete, KdslError):
            raise
        except Exception as exc:
            if not _compile_error(exc):
                raise
            self.compiled = None
            for rec in self.recorders():
                rec.versioned = True  # eager from now on: version counters are kept again
            warn_unavailable(self.plan, f"{self.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            for rec in self.recorders():
                rec.clear()  # what a partly run compiled call recorded is recorded again
            return self.model._call_impl(*args, **kwargs)

    def recorders(self) -> List[Any]:
        return [r.recorder for r in self.plan.records.values() if r.decl.model == self.name]

    def __deepcopy__(self, memo) -> None:
        return None

    def __reduce__(self):
        return (_eager_copy, ())


def _compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` is dynamo's or inductor's (every such error derives from
    ``TorchDynamoException``), not the model's own."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - a torch without dynamo never compiled
        return False
    return isinstance(exc, TorchDynamoException)
