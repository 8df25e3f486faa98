"""The runtime: a compiled spec as an ``nn.Module`` that runs inside anyone's training loop.

A step is: every used teacher's pass (frozen teachers under ``torch.no_grad()``), the student's
pass, then the loss graph: each loss term, in declaration order, reads its inputs (records,
connector outputs, batch fields) through the one expression interpreter, runs its loss module
and multiplies by its weight; the total is their sum. Recorded values live for one step only.

With stages and phases (:mod:`kdsl.lang.procedure`), ``step(stage=..., phase=...)`` runs one
phase: the spec's ``input`` first when it has one (a generator's output), then only the models
whose records the phase's losses read, then only its losses (:mod:`kdsl.runtime.staging` says
what it trains).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdsl.components.functions import FunctionContext
from kdsl.components.schedules import Progress
from kdsl.core.diagnostics import error
from kdsl.lang.procedure import IMPLICIT_PHASE, IMPLICIT_STAGE, Phase, Stage
from kdsl.runtime.compiled import Compiled
from kdsl.runtime.interpret import Interpreter, StepEnv
from kdsl.runtime.recorders import PassComplete
from kdsl.runtime.staging import Staging
from kdsl.runtime.terms import LossTerm
from kdsl.runtime.values import as_call


@dataclass
class StepResult:
    """What :meth:`Distiller.step` returns."""

    loss: torch.Tensor
    losses: Dict[str, torch.Tensor]  # weighted terms, in declaration order
    unweighted: Dict[str, torch.Tensor] = field(default_factory=dict)
    weights: Dict[str, float] = field(default_factory=dict)
    # ``None`` for a model whose pass was truncated (it stopped once its records were taken)
    student_output: Any = None
    teacher_outputs: Dict[str, Any] = field(default_factory=dict)


class _RunState:
    __slots__ = ("phase", "closed")

    def __init__(self) -> None:
        self.phase = "idle"  # idle -> teachers -> student -> (losses) idle
        self.closed = False


# ------------------------------------------------------------------------------ the distiller
class Distiller(Staging, nn.Module):
    """A compiled spec bound to models. Build it with :func:`kdsl.compile`.

    ``parameters()`` are the student's, the generators', the connectors'
    (``distiller.connectors[name]``), the trainable teachers' and those of losses that learn
    (VID's variances, CRD's embeddings). Frozen teachers are held outside the module tree: not in
    ``parameters()`` or ``state_dict()``, kept in eval mode, but moved by ``.to()``. What one
    phase trains is :meth:`trainable_parameters`.
    """

    def __init__(self, compiled: Compiled, plan: object = None) -> None:
        """``compiled``: what the compiler built (:class:`~kdsl.runtime.compiled.Compiled`).
        ``plan``: the compiler's record of how (:class:`kdsl.compiler.plan.Plan`), kept for
        ``kdsl explain``, ``kdsl graph`` and ``kdsl check``; the runtime never reads it."""
        super().__init__()
        spec = compiled.spec
        self.spec = spec
        self.student_name = spec.student.name
        self.teacher_names = [t.name for t in spec.teachers]
        self._used_teachers = [t for t in self.teacher_names if t in compiled.used_teachers]
        frozen = {m.name for m in spec.teachers if m.frozen}
        self.models = nn.ModuleDict({n: m for n, m in compiled.models.items() if n not in frozen})
        self._frozen: Dict[str, nn.Module] = {n: compiled.models[n] for n in frozen}
        # frozen teachers run in the distiller's mode (train: batch statistics), never trained
        self._train_mode = {m.name for m in spec.teachers if m.frozen and m.train_mode}
        self.connectors = nn.ModuleDict(compiled.connectors)
        self.loss_modules = nn.ModuleDict({t.name: t.module for t in compiled.terms})
        self.recorders = compiled.recorders
        self.deliveries = compiled.deliveries
        self.terms = compiled.terms
        self._state = compiled.state
        self._cleanups = list(compiled.cleanups)
        # mutated every step: kept off nn.Module.__setattr__, which is slow
        self._run = _RunState()
        # (name, model, frozen) of the teachers step() runs, in spec order
        self._teacher_runs = [(n, self.model(n), n in self._frozen) for n in self._used_teachers]
        self.progress = Progress()
        # the loss graph's expressions, evaluated by the same interpreter as the dry run's
        self._env = StepEnv(compiled.recorders, self.connectors, dict(compiled.modules), compiled.functions,
                            models=self.model, state=compiled.state, context=self._function_context)
        self._interpreter = Interpreter(self._env)
        self._plan = plan
        self.procedure = compiled.procedure
        self._scopes = dict(compiled.scopes)
        self._inits = list(compiled.inits)
        self._input = spec.input.value if spec.input is not None else None
        self._generators = [m.name for m in spec.models if m.role == "generator"]
        self._frozen_connectors = [c.name for c in spec.connectors if c.frozen and c.name in self.connectors]
        self.batch_size = compiled.batch_size  # rows of noise(...) in a step without data
        # share_input (DAFL): phases that do not train the generator reuse the batch it made this
        # step (progress.step), detached; (step, args, kwargs) of that batch
        self.share_input = False
        self._shared_input: Optional[Tuple[int, tuple, Dict[str, Any]]] = None
        self._cuts = compiled.cuts  # truncated passes (kdsl.compiler.truncate)
        self.rollout = compiled.rollout  # the generate statement (kdsl.runtime.generation), or None
        self._plain_cuts = {} if self.procedure.declared else \
            self._cuts.get((IMPLICIT_STAGE, IMPLICIT_PHASE), {})
        self._setup_staging()
        for name in self._frozen_connectors:
            self.connectors[name].eval()

    def generated_batch(self, batch: Optional[Dict[str, Any]], step: int) -> Optional[Dict[str, Any]]:
        """The batch a step trains on: with the ``generate`` statement, at a step that generates,
        the batch's prompts with the model's completions (a new dict); otherwise ``batch``."""
        return batch if self.rollout is None else self.rollout.batch(batch, step)

    @property
    def plan(self) -> object:
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

    def train(self, mode: bool = True) -> "Distiller":
        """As ``nn.Module.train``; frozen connectors and frozen scopes stay in eval mode."""
        super().train(mode)
        for name in getattr(self, "_frozen_connectors", ()):
            self.connectors[name].eval()
        self._hold_frozen_in_eval()
        return self

    def _step_input(self, ph: Phase) -> Tuple[tuple, Dict[str, Any]]:
        """The models' input of a phase: ``input = ...`` drawn afresh (gradients reach it only
        where its generator trains), or, with ``share_input``, in a phase that does not train the
        generator, the batch the generator's phase made this step, detached."""
        shared, step = self._shared_input, self.progress.step
        if self.share_input and not ph.trains_input and shared is not None and shared[0] == step:
            return shared[1], shared[2]
        with contextlib.nullcontext() if ph.trains_input else torch.no_grad():
            args, kwargs = as_call(self._interpreter.visit(self._input))
        if self.share_input and ph.trains_input:
            detach = (lambda v: v.detach() if isinstance(v, torch.Tensor) else v)
            self._shared_input = (step, tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()})
        return args, kwargs

    def _hold_teacher_mode(self, name: str, model: nn.Module) -> None:
        """A frozen teacher runs in eval mode, or, declared ``train_mode``, in the distiller's mode
        (its norm layers then use batch statistics without updating their running ones)."""
        mode = self.training and name in self._train_mode
        if model.training != mode:
            model.train(mode)

    def _function_context(self) -> FunctionContext:
        p = next(self.student.parameters(), None)
        if p is None:
            return FunctionContext(self.batch_size, torch.device("cpu"), torch.get_default_dtype())
        return FunctionContext(self.batch_size, p.device, p.dtype)

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
    def _truncated(self, cut: Optional[frozenset]) -> Iterator[None]:
        """Arm a truncated pass: the recorder completing ``cut`` raises :class:`PassComplete`,
        caught here (only this distiller's), so the ``with`` body ends there without error. The
        calibrating step (the first, without a dry run) runs in full: it finds the records that
        in-place operations overwrite later in the forward."""
        if cut is None or self._state.calibrating:
            yield
            return
        state = self._state
        state.needed, state.remaining = cut, len(cut)
        try:
            yield
        except PassComplete as exc:
            if exc.state is not state:
                raise
        finally:
            state.needed = None

    def _run_model(self, name: str, model: nn.Module, no_grad: bool, cut: Optional[frozenset],
                   args: tuple, kwargs: Dict[str, Any]) -> Any:
        """``model(*args, **kwargs)`` as ``name``'s pass; ``None`` when ``cut`` stopped it early."""
        self._state.active = name
        if cut is None or self._state.calibrating:
            if no_grad:
                with torch.no_grad():
                    return model(*args, **kwargs)
            return model(*args, **kwargs)
        with self._truncated(cut), (torch.no_grad() if no_grad else contextlib.nullcontext()):
            return model(*args, **kwargs)  # the set was never completed: a full pass
        return None

    @contextlib.contextmanager
    def teacher_pass(self, name: Optional[str] = None) -> Iterator[nn.Module]:
        """Run a teacher's forward inside: ``with distiller.teacher_pass(): teacher(x)``.

        When the step needs only intermediate records of the teacher (``kdsl explain`` says), the
        forward stops once they are taken and the ``with`` body ends at that call: the teacher's
        output is then not computed. Compile with ``truncate=False`` to use it in your own code."""
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
        if frozen:
            self._hold_teacher_mode(name, model)
        with self._pass(name, frozen), self._truncated(self._plain_cuts.get(name)):
            yield model

    @contextlib.contextmanager
    def student_pass(self) -> Iterator[nn.Module]:
        """Run the student's forward inside: ``with distiller.student_pass(): out = student(x)``."""
        if self._run.phase != "teachers":
            self._begin_step()
        self._run.phase = "student"
        with self._pass(self.student_name, False):
            yield self.student

    def compute_losses(self, batch: Optional[Dict[str, Any]] = None, target: Any = None,
                       terms: Optional[Sequence[LossTerm]] = None) -> StepResult:
        """Evaluate the loss graph (``terms``: those of one phase; all by default) on what the
        passes recorded, and end the step."""
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
            for term in (self.terms if terms is None else terms):
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
             stage: Optional[str] = None, phase: Optional[str] = None, **kwargs: Any) -> StepResult:
        """Teacher passes, student pass, loss graph. Every model is called as ``model(*args, **kwargs)``;
        ``batch.target`` is ``target`` and ``batch.NAME`` is ``batch["NAME"]``.

        With stages or phases: one repeat of ``phase`` of ``stage`` (``None``: the stage running,
        its only phase). Its models' input is the spec's ``input`` when it declares one and no
        ``args`` are given; only the models whose records the phase's losses read run; the result
        holds the phase's losses. Entering another stage applies its freezes (:meth:`begin_stage`).
        """
        if stage is not None or phase is not None or self.procedure.declared:
            st, ph = self._resolve(stage, phase)
            if self.procedure.declared:
                return self._phase_step(st, ph, args, kwargs, target, batch)
        # the passes of teacher_pass()/student_pass(), inlined: this is the hot path
        self._check_open()
        state = self._state
        if state.active is not None:
            raise error("KD515", f"a pass of '{state.active}' is already running; passes do not nest")
        self._begin_step()
        teacher_outputs: Dict[str, Any] = {}
        cuts = self._plain_cuts
        try:
            for name, teacher, frozen in self._teacher_runs:
                if frozen:
                    self._hold_teacher_mode(name, teacher)
                teacher_outputs[name] = self._run_model(name, teacher, frozen, cuts.get(name), args, kwargs)
            out = self._run_model(self.student_name, self.models[self.student_name], False,
                                  cuts.get(self.student_name), args, kwargs)
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

    def _phase_step(self, st: Stage, ph: Phase, args: tuple, kwargs: Dict[str, Any],
                    target: Any, batch: Optional[Dict[str, Any]]) -> StepResult:
        """One repeat of a phase: the input, the phase's models, the phase's losses."""
        self._check_open()
        if st.name != self._stage:
            self.begin_stage(st.name)
        state = self._state
        if state.active is not None:
            raise error("KD515", f"a pass of '{state.active}' is already running; passes do not nest")
        self._begin_step()
        teacher_outputs: Dict[str, Any] = {}
        out = None
        cuts = self._cuts.get((st.name, ph.name), {})
        try:
            if ph.needs_input and not args and not kwargs:
                args, kwargs = self._step_input(ph)
            for name in ph.models_run:
                if name in self._generators:
                    continue  # ran as part of the input
                model = self.model(name)
                frozen = name in self._frozen
                if frozen:
                    self._hold_teacher_mode(name, model)
                # a frozen teacher between a trained generator and the losses keeps the graph
                value = self._run_model(name, model, frozen and not ph.trains_input, cuts.get(name),
                                        args, kwargs)
                if name == self.student_name:
                    out = value
                else:
                    teacher_outputs[name] = value
        except BaseException:
            self._interpreter.clear()
            self._end_step()
            raise
        finally:
            state.active = None
        self._run.phase = "student"
        result = self.compute_losses(batch=batch, target=target,
                                     terms=self._phase_terms[(st.name, ph.name)])
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
        self._lift_freezes()  # the models' own requires_grad back
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

    def provide_records(self, teacher: str, values: Dict[str, Any]) -> None:
        """Fill ``teacher``'s records with ``values`` (record name -> value) as if its pass had run
        (a teacher-output store, :mod:`kdsl.training.teacher_store`, serves a step this way)."""
        self._check_open()
        if self._run.phase != "teachers":
            self._begin_step()
            self._run.phase = "teachers"
        for name, value in values.items():
            recorder = self.recorders.get(name)
            if recorder is None or recorder.model != teacher:
                raise error("KD514", f"'{name}' is not a record of teacher '{teacher}'")
            recorder.provide(value)

