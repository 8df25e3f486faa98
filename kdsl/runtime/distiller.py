"""The runtime: a compiled spec as an ``nn.Module`` that runs inside anyone's training loop.

A step is: every used teacher's pass (frozen teachers under ``torch.no_grad()``), the student's
pass, then the loss graph: each loss term, in declaration order, reads its inputs (records,
connector outputs, batch fields), runs its loss module and multiplies by its weight; the total is
their sum. Recorded values live for one step only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from kdsl.lang import ir
from kdsl.core.diagnostics import KdslError, error
from kdsl.runtime.hooks import Delivery, PassState, Recorder, check_missing, freeze, unfreeze
from kdsl.components.schedules import Progress, Schedule
from kdsl.catalog.shapes import TensorInfo, check_rules
from kdsl.core.span import Span

Evaluator = Callable[["StepContext"], Any]


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


class StepContext:
    __slots__ = ("batch", "cache")

    def __init__(self, batch: Dict[str, Any]) -> None:
        self.batch = batch
        self.cache: Dict[int, Any] = {}


def _where(span: Optional[Span]) -> str:
    return f" at {span}" if span else ""


def info_of(value: Any) -> Optional[TensorInfo]:
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), str(value.dtype).replace("torch.", ""))
    return None


def describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape [{', '.join(map(str, value.shape))}]"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} element{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a dict with keys " + ", ".join(repr(k) for k in list(value)[:6])
    return f"a {type(value).__name__}"


# ------------------------------------------------------------------------------ expressions
class ExprCompiler:
    """Turns resolved IR expressions into closures over a step context (built once, at compile)."""

    def __init__(self, recorders: Dict[str, Recorder], connectors: Dict[str, nn.Module],
                 modules: Callable[[ir.ModuleRef], nn.Module]) -> None:
        self.recorders = recorders
        self.connectors = connectors
        self.modules = modules
        self._applications: Dict[str, Evaluator] = {}
        self.application_count = 0

    def __call__(self, expr) -> Evaluator:
        return getattr(self, "_" + expr.kind)(expr)

    def _const(self, expr: ir.Const) -> Evaluator:
        value = expr.value
        return lambda ctx: value

    def _list(self, expr: ir.ListExpr) -> Evaluator:
        fns = [self(i) for i in expr.items]
        return lambda ctx: [f(ctx) for f in fns]

    def _record_ref(self, expr: ir.RecordRef) -> Evaluator:
        rec = self.recorders[expr.record]
        if getattr(rec, "selector", None) is not None:
            return lambda ctx: check_missing(rec.read(), rec)
        return lambda ctx: rec.read()

    def _module_ref(self, expr: ir.ModuleRef) -> Evaluator:
        module = self.modules(expr)
        return lambda ctx: module

    def _batch_ref(self, expr: ir.BatchRef) -> Evaluator:
        name, span = expr.field, expr.span

        def ev(ctx: StepContext):
            try:
                return ctx.batch[name]
            except KeyError:
                given = ", ".join(sorted(ctx.batch)) or "nothing"
                how = "distiller.step(x, target=y)" if name == "target" else \
                    f"distiller.step(x, batch={{'{name}': ...}})"
                raise error("KD608", f"the loss reads batch.{name} but the step was given {given}",
                            span, hint=f"pass it: {how}") from None
        return ev

    def _select(self, expr: ir.Select) -> Evaluator:
        inner = self(expr.value)
        key, by, span = expr.key, expr.by, expr.span
        text = f".{key}" if by == "attr" else f"[{key!r}]"

        def ev(ctx: StepContext):
            value = inner(ctx)
            try:
                if by == "attr":
                    if isinstance(value, dict):  # x.logits also reads a dict's key
                        return value[key]
                    return getattr(value, key)
                return value[key]
            except (KeyError, IndexError, AttributeError, TypeError) as exc:
                raise error("KD610", f"cannot select {text} of {describe_value(value)}: "
                            f"{type(exc).__name__}: {exc}", span) from None
        return ev

    def _connector_apply(self, expr: ir.ConnectorApply) -> Evaluator:
        # the same application (connector and arguments, spans aside) runs once per step
        key = _strip_spans(expr)
        if key in self._applications:
            return self._applications[key]
        module = self.connectors[expr.connector]
        args = [self(a) for a in expr.args]
        kwargs = [(k.name, self(k.value)) for k in expr.kwargs]
        slot = self.application_count
        self.application_count += 1
        name, span = expr.connector, expr.span

        def ev(ctx: StepContext):
            cache = ctx.cache
            if slot in cache:
                return cache[slot]
            values = [f(ctx) for f in args]
            kw = {k: f(ctx) for k, f in kwargs}
            try:
                out = module(*values, **kw)
            except KdslError:
                raise
            except Exception as exc:
                raise error("KD602", f"while evaluating connector '{name}'{_where(span)}: "
                            f"{type(exc).__name__}: {exc}", span,
                            hint="inputs: " + "; ".join(describe_value(v) for v in values)) from exc
            cache[slot] = out
            return out

        self._applications[key] = ev
        return ev


def _strip_spans(node) -> str:
    import json

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "span" and not k.endswith("_span")}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return json.dumps(strip(node.model_dump(mode="json")), sort_keys=True)


# ------------------------------------------------------------------------------ loss terms
class LossTerm:
    """One ``loss NAME = component(inputs) * weight`` of the spec."""

    def __init__(self, decl: ir.LossDecl, module: nn.Module, inputs: Sequence[Optional[Evaluator]],
                 input_names: Sequence[str], rules, weight: Any) -> None:
        self.name = decl.name
        self.span = decl.span
        self.component = decl.component
        self.module = module
        self.inputs = list(inputs)
        self.input_names = list(input_names)
        self.rules = rules
        self.weight = weight  # float or Schedule
        self.checked = False

    def weight_at(self, progress: Progress) -> float:
        if isinstance(self.weight, Schedule):
            try:
                return float(self.weight(progress))
            except ValueError as exc:
                raise error("KD601", f"weight of loss '{self.name}': {exc}", self.span) from None
        return self.weight

    def input_values(self, ctx: StepContext) -> List[Any]:
        return [f(ctx) if f is not None else None for f in self.inputs]

    def check_shapes(self, values: Sequence[Any]) -> None:
        infos = {n: info_of(v) for n, v in zip(self.input_names, values)}
        problems = check_rules(self.rules, {k: v for k, v in infos.items() if v is not None})
        self.checked = True
        if problems:
            raise KdslError([_shape_diag(self, p) for p in problems])

    def evaluate(self, ctx: StepContext, progress: Progress):
        values = self.input_values(ctx)
        if not self.checked:
            self.check_shapes(values)
        try:
            value = self.module(*values)
        except KdslError:
            raise
        except Exception as exc:
            raise error("KD601", f"while evaluating loss '{self.name}'{_where(self.span)}: "
                        f"{type(exc).__name__}: {exc}", self.span,
                        hint="inputs: " + "; ".join(f"{n} = {describe_value(v)}"
                                                    for n, v in zip(self.input_names, values))) from exc
        w = self.weight_at(progress)
        return value, (value if w == 1.0 else value * w), w


def _shape_diag(term: LossTerm, problem: str):
    from kdsl.core.diagnostics import make

    return make("KD505", f"loss '{term.name}' ({term.component}): {problem}", term.span)


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
                 used_teachers: Sequence[str], cleanups: List[Callable[[], None]]) -> None:
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
        self.shapes: Dict[str, Any] = {}  # record name -> TensorInfo from the dry run
        self.value_descriptions: Dict[str, str] = {}
        self.built: Dict[str, Dict[str, Any]] = {}  # connector/loss -> options, inferred, shapes

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
            ctx = StepContext(batch)
            weighted: Dict[str, torch.Tensor] = {}
            raw: Dict[str, torch.Tensor] = {}
            weights: Dict[str, float] = {}
            total = None
            progress = self.progress
            for term in self.terms:
                value, w_value, w = term.evaluate(ctx, progress)
                raw[term.name], weighted[term.name], weights[term.name] = value, w_value, w
                total = w_value if total is None else total + w_value
            if total is None:
                total = torch.zeros((), device=self._device())
            return StepResult(loss=total, losses=weighted, unweighted=raw, weights=weights)
        finally:
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


def frozen_cleanup(model: nn.Module) -> Callable[[], None]:
    freeze(model)
    return lambda: unfreeze(model)
