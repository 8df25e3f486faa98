"""The runtime: a compiled spec as an ``nn.Module`` that runs inside anyone's training loop.

A step is: every used teacher's pass (frozen teachers under ``torch.no_grad()``), the student's
pass, then the loss graph: each loss term, in declaration order, reads its inputs (records,
connector outputs, batch fields) through the one expression interpreter, runs its loss module
and multiplies by its weight; the total is their sum. Recorded values live for one step only.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from kdsl.components.schedules import Progress
from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.runtime.deliveries import Delivery
from kdsl.runtime.interpret import Interpreter, StepEnv
from kdsl.runtime.recorders import PassState, Recorder
from kdsl.runtime.terms import LossTerm


@dataclass
class StepResult:
    """What :meth:`Distiller.step` returns."""

    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]  # weighted terms, in declaration order
    unweighted: Dict[str, torch.Tensor] = field(default_factory=dict)
    weights: Dict[str, float] = field(default_factory=dict)
    student_output: Any = None
    teacher_outputs: Dict[str, Any] = field(default_factory=dict)


class _RunState:
    __slots__ = ("phase", "closed")

    def __init__(self) -> None:
        self.phase = "idle"  # idle -> teachers -> student -> (losses) idle
        self.closed = False


def _strip_spans(node: ir.Node) -> str:
    """A node as canonical JSON without its spans (the trainer fingerprints specs with it)."""

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "span" and not k.endswith("_span")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(node.model_dump(mode="json")), sort_keys=True)


# ------------------------------------------------------------------------------ the distiller
class Distiller(nn.Module):
    """A compiled spec bound to models. Build it with :func:`kdsl.compile`.

    ``parameters()`` are the student's, the connectors' (``distiller.connectors[name]``), the
    trainable teachers' and those of losses that learn (VID's variances, CRD's embeddings).
    Frozen teachers are held outside the module tree: not in ``parameters()`` or
    ``state_dict()``, kept in eval mode, but moved by ``.to()``.
    """

    def __init__(self, *, spec: ir.Spec, models: Dict[str, nn.Module], frozen: Sequence[str],
                 recorders: Dict[str, Recorder], deliveries: List[Delivery],
                 connectors: Dict[str, nn.Module], terms: List[LossTerm], state: PassState,
                 used_teachers: Sequence[str], cleanups: List[Callable[[], None]],
                 modules: Optional[Dict[ir.ModuleRef, nn.Module]] = None, plan: Any = None) -> None:
        super().__init__()
        self.spec = spec
        student = spec.student
        self.student_name = student.name
        self.teacher_names = [t.name for t in spec.teachers]
        self._used_teachers = [t for t in self.teacher_names if t in used_teachers]
        self.models = nn.ModuleDict({n: m for n, m in models.items() if n not in frozen})
        self._frozen: Dict[str, nn.Module] = {n: models[n] for n in frozen}
        self.connectors = nn.ModuleDict(connectors)
        self.loss_modules = nn.ModuleDict({t.name: t.module for t in terms})
        self.recorders = recorders
        self.deliveries = deliveries
        self.terms = terms
        self._state = state
        self._cleanups = cleanups
        # mutated every step: kept off nn.Module.__setattr__, which is slow
        self._run = _RunState()
        # (name, model, frozen) of the teachers step() runs, in spec order
        self._teacher_runs = [(n, self.model(n), n in self._frozen) for n in self._used_teachers]
        self.progress = Progress()
        # the loss graph's expressions, evaluated by the same interpreter as the dry run's
        self._env = StepEnv(recorders, self.connectors, dict(modules or {}))
        self._interpreter = Interpreter(self._env)
        self._plan = plan

    @property
    def plan(self) -> Any:
        """What the compiler found and built (:class:`kdsl.compiler.plan.Plan`): record shapes,
        connector and loss options (inferred ones marked), where hooks and patches went."""
        return self._plan

    # -- models ------------------------------------------------------------------------------
    def model(self, name: str) -> nn.Module:
        return self._frozen[name] if name in self._frozen else self.models[name]

    @property
    def student(self) -> nn.Module:
        return self.models[self.student_name]

    @property
    def teachers(self) -> Dict[str, nn.Module]:
        return {n: self.model(n) for n in self.teacher_names}

    @property
    def used_teachers(self) -> List[str]:
        """Teachers whose pass matters (a record or a delivery reads them), in spec order;
        :meth:`step` runs only these."""
        return list(self._used_teachers)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn)
        for m in self._frozen.values():
            m._apply(fn)
        return self

    # -- progress ----------------------------------------------------------------------------
    def set_progress(self, epoch: Optional[float] = None, step: Optional[int] = None,
                     total_epochs: Optional[int] = None) -> None:
        """Tell weight schedules where training is: ``epoch`` may be fractional."""
        p = self.progress
        self.progress = Progress(epoch=p.epoch if epoch is None else float(epoch),
                                 total_epochs=p.total_epochs if total_epochs is None else int(total_epochs),
                                 step=p.step if step is None else int(step))

    # -- steps -------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._run.closed:
            raise error("KD609", "this distiller is closed", hint="compile a new one with kdsl.compile")

    def _begin_step(self) -> None:
        for r in self.recorders.values():
            r.clear()
        for d in self.deliveries:
            d.clear()
        self._run.phase = "idle"

    def _end_step(self) -> None:
        self._begin_step()

    @contextlib.contextmanager
    def _pass(self, name: str, frozen: bool) -> Iterator[None]:
        self._check_open()
        if self._state.active is not None:
            raise error("KD515", f"a pass of '{self._state.active}' is already running; passes do not nest")
        self._state.active = name
        try:
            if frozen:
                with torch.no_grad():
                    yield
            else:
                yield
        except BaseException:
            self._state.active = None
            self._end_step()
            raise
        finally:
            self._state.active = None

    @contextlib.contextmanager
    def teacher_pass(self, name: Optional[str] = None) -> Iterator[nn.Module]:
        """Run a teacher's forward inside: ``with distiller.teacher_pass(): teacher(x)``."""
        if name is None:
            if len(self.teacher_names) != 1:
                raise error("KD514", "teacher_pass() needs a name when the spec has "
                            f"{len(self.teacher_names)} teachers: " + ", ".join(self.teacher_names))
            name = self.teacher_names[0]
        if name not in self.teacher_names:
            from kdsl.core.suggest import did_you_mean

            raise error("KD514", f"the spec has no teacher '{name}'",
                        hint=did_you_mean(name, self.teacher_names))
        if self._run.phase != "teachers":
            self._begin_step()
            self._run.phase = "teachers"
        model = self.model(name)
        frozen = name in self._frozen
        if frozen and model.training:
            model.eval()
        with self._pass(name, frozen):
            yield model

    @contextlib.contextmanager
    def student_pass(self) -> Iterator[nn.Module]:
        """Run the student's forward inside: ``with distiller.student_pass(): out = student(x)``."""
        if self._run.phase != "teachers":
            self._begin_step()
        self._run.phase = "student"
        with self._pass(self.student_name, False):
            yield self.student

    def compute_losses(self, batch: Optional[Dict[str, Any]] = None, target: Any = None) -> StepResult:
        """Evaluate the loss graph on what the passes recorded, and end the step."""
        self._check_open()
        batch = dict(batch or {})
        if target is not None:
            batch["target"] = target
        try:
            if self._state.calibrating:
                self.calibrate()
            for d in self.deliveries:
                d.finish_step()
            self._env.fields = batch
            weighted: Dict[str, torch.Tensor] = {}
            raw: Dict[str, torch.Tensor] = {}
            weights: Dict[str, float] = {}
            total = None
            progress = self.progress
            for term in self.terms:
                value, w_value, w = term.evaluate(self._interpreter, progress)
                raw[term.name], weighted[term.name], weights[term.name] = value, w_value, w
                total = w_value if total is None else total + w_value
            if total is None:
                total = torch.zeros((), device=self._device())
            return StepResult(loss=total, losses=weighted, unweighted=raw, weights=weights)
        finally:
            self._interpreter.clear()  # connector outputs live for one step, like records
            self._env.fields = {}
            self._end_step()

    def calibrate(self) -> None:
        """Find records that in-place operations overwrote in this (first) step; copy them from
        now on and use the copy taken in this step."""
        for r in self.recorders.values():
            r.check_overwrites()
        self._state.calibrating = False

    def step(self, *args: Any, target: Any = None, batch: Optional[Dict[str, Any]] = None,
             **kwargs: Any) -> StepResult:
        """Teacher passes, student pass, loss graph. Every model is called as ``model(*args, **kwargs)``;
        ``batch.target`` is ``target`` and ``batch.NAME`` is ``batch["NAME"]``."""
        # the passes of teacher_pass()/student_pass(), inlined: this is the hot path
        self._check_open()
        state = self._state
        if state.active is not None:
            raise error("KD515", f"a pass of '{state.active}' is already running; passes do not nest")
        self._begin_step()
        teacher_outputs: Dict[str, Any] = {}
        try:
            for name, teacher, frozen in self._teacher_runs:
                state.active = name
                if frozen:
                    if teacher.training:
                        teacher.eval()
                    with torch.no_grad():
                        teacher_outputs[name] = teacher(*args, **kwargs)
                else:
                    teacher_outputs[name] = teacher(*args, **kwargs)
            state.active = self.student_name
            out = self.models[self.student_name](*args, **kwargs)
        except BaseException:
            self._end_step()
            raise
        finally:
            state.active = None
        self._run.phase = "student"
        result = self.compute_losses(batch=batch, target=target)
        result.student_output = out
        result.teacher_outputs = teacher_outputs
        return result

    def forward(self, *args: Any, **kwargs: Any) -> StepResult:
        return self.step(*args, **kwargs)

    def _device(self) -> torch.device:
        for p in self.student.parameters():
            return p.device
        return torch.device("cpu")

    # -- closing -----------------------------------------------------------------------------
    def close(self) -> None:
        """Remove every hook and patch kdsl installed and restore frozen teachers. Idempotent."""
        if self._run.closed:
            return
        self._run.closed = True
        errors = []
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep restoring the rest
                errors.append(exc)
        self._cleanups = []
        if errors:
            raise errors[0]

    @property
    def closed(self) -> bool:
        return self._run.closed

    def __enter__(self) -> "Distiller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extra_repr(self) -> str:
        return (f"student={self.student_name!r}, teachers={self.teacher_names!r}, "
                f"records={len(self.recorders)}, losses={[t.name for t in self.terms]!r}")

