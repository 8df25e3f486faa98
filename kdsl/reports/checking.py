"""Model-aware inspection shared by ``kdsl check``, ``kdsl explain`` and ``kdsl graph``: the spec is
compiled against real models named on the command line (with a dry run on zeros of
``--input-shape`` or on one batch of ``--data``), every problem is collected as a diagnostic, and
what was found (shapes, hooks, connectors) is returned as tables for the CLI to show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from kdsl.core.diagnostics import Diagnostic, KdslError, error, make
from kdsl.lang.ir import Spec


@dataclass
class ModelOptions:
    """The model options of ``kdsl check``, ``explain`` and ``graph``. ``load_weights``: read the
    checkpoints (``--load-weights``; by default they are only looked for: shapes do not need
    them). ``dry_run``: compile against the spec's own models even when no other option is given
    (``kdsl check --dry-run``)."""

    student: Optional[str] = None
    teacher: Optional[str] = None
    models: List[str] = field(default_factory=list)
    teacher_ckpt: Optional[str] = None
    input_shape: Optional[str] = None
    data: Optional[str] = None
    load_weights: bool = False
    dry_run: bool = False

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.student, self.teacher, self.input_shape, self.data,
                                           self.teacher_ckpt)) or bool(self.models) or self.dry_run \
            or self.load_weights


# The dry run needs one small batch: two rows are enough for norm layers in training mode. These
# bounds keep an absurd shape a usage error instead of an allocation failure.
MAX_DRY_ELEMENTS = 1 << 26  # 64 Mi elements: 256 MiB of float32, e.g. 2 x 3 x 2048 x 2048
MAX_DRY_DIMS = 16
_SHAPE_HINT = ("e.g. --input-shape 2,3,32,32: positive sizes separated by commas, at most "
               f"{MAX_DRY_DIMS} of them and {MAX_DRY_ELEMENTS:,} elements in all; the dry run only "
               "needs a small batch (2 rows: norm layers in training mode need two)")


def parse_shape(text: str) -> Tuple[int, ...]:
    """The dry run's input shape from ``--input-shape`` text; KD701 when it is not a shape of
    positive sizes small enough for a dry run."""
    # every part a number ("2,3,32,32", "2x3x32x32", a trailing comma as in a Python tuple): "1,x"
    # or "2,,3" is a typo, not a shape of [1] or [2, 3]
    joined = text.strip().replace("x", ",")
    parts = [p.strip() for p in (joined[:-1] if joined.endswith(",") else joined).split(",")]
    shape: Tuple[int, ...] = ()
    if all(p.isascii() and p.isdigit() and len(p) <= 12 for p in parts):  # no int() of a 10**6-digit number
        shape = tuple(int(p) for p in parts)
    if not shape or any(d < 1 for d in shape):
        raise error("KD701", f"--input-shape takes positive integers separated by commas, got "
                    f"'{_clip(text)}'", hint=_SHAPE_HINT)
    elements = 1
    for d in shape:
        elements *= d
    if len(shape) > MAX_DRY_DIMS or elements > MAX_DRY_ELEMENTS:
        raise error("KD701", f"--input-shape {_clip(text)} is too large for a dry run "
                    f"({len(shape)} dimensions, {elements:,} elements)", hint=_SHAPE_HINT)
    return shape


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def example_from(opts: ModelOptions, inputs=None) -> Tuple[Any, Dict[str, Any]]:
    """(example input, example batch fields) for the dry run, or (None, {}); ``inputs``: the
    batch fields models are called with (the train block's setting), for data of named fields."""
    import torch

    if opts.data:
        from kdsl.reports.data_example import data_example

        return data_example(opts.data, inputs)
    if opts.input_shape is not None:
        return torch.zeros(parse_shape(opts.input_shape)), {}
    return None, {}


@dataclass
class Inspection:
    """What compiling against models for inspection gave: the distiller (None when compiling
    failed), every diagnostic (warnings too), and notes for the output (weights not loaded, where
    the dry run's example came from)."""

    distiller: Any
    diagnostics: List[Diagnostic] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _passes(opts: ModelOptions, derived: List[Any]):
    """The compiler's passes, for inspection: without reading weights (unless asked), and with
    the example derived once the models are built (when the command line gave none)."""
    from kdsl.compiler.bind_models import build_models, build_models_unloaded, look_for_connector_weights
    from kdsl.compiler.compiler import PASSES
    from kdsl.reports.derive_example import derive
    from kdsl.components.batch_transforms import transform_example
    from kdsl.compiler.dry_run import dry_run
    from kdsl.compiler.params import load_connector_weights

    def derive_example(plan):
        """The dry run's example from the data reader or the student's first layer."""
        if plan.request.example_input is None and plan.spec.input is None:
            example = derive(plan)
            if example is not None:
                plan.request.example_input, plan.request.example_batch = \
                    transform_example(plan.spec, example.input, example.batch)
                derived.append(example)
        return plan

    swap = {} if opts.load_weights else {build_models: build_models_unloaded,
                                         load_connector_weights: look_for_connector_weights}
    out = []
    for p in PASSES:
        if p is dry_run:
            out.append(derive_example)
        out.append(swap.get(p, p))
    return out


def _weights_note(spec: Spec, opts: ModelOptions) -> Optional[str]:
    files = [f"{m.name} from {m.checkpoint}" for m in spec.models if m.checkpoint] + \
        [f"connector {c.name} from {c.checkpoint}" for c in spec.connectors if c.checkpoint]
    if not files:
        return None
    if opts.load_weights:
        return "weights loaded: " + ", ".join(files)
    return ("weights not loaded (shapes do not need them; --load-weights reads them): "
            + ", ".join(files))


_NO_SHAPE = ("kdsl found no input shape to dry-run on (the data reader declares none, and the "
             "student's first layer does not tell one): pass --input-shape, e.g. 2,3,32,32 "
             "(N,C,H,W) or 2,16 (token ids), or --data REF")


def inspect(spec: Spec, opts: ModelOptions) -> Inspection:
    """Compile ``spec`` against the models of ``opts`` for ``kdsl check``/``explain``/``graph``.
    Problems with the command line's own references are usage errors: they raise."""
    from kdsl.compiler.compiler import finish, run_passes, start
    from kdsl.io.models import ModelChoice, apply_model_choice
    from kdsl.compiler.plan import Request

    choice = ModelChoice(opts.student, opts.teacher, list(opts.models), opts.teacher_ckpt)
    spec2, given = apply_model_choice(spec, choice)
    from kdsl.components.batch_transforms import transform_example
    from kdsl.reports.data_example import spec_inputs

    x, batch = example_from(opts, spec_inputs(spec2))  # data of named fields: the train block's inputs
    x, batch = transform_example(spec2, x, batch)  # the batches training gives (batch_transform)
    derived: List[Any] = []
    notes = [n for n in [_weights_note(spec2, opts)] if n]
    # models built from the command line's references get the spec's weights, as the spec's own do
    plan = start(Request(spec2, given, example_input=x, example_batch=batch, load_given=frozenset(given)))
    try:
        plan = run_passes(plan, _passes(opts, derived))
        warnings = [d for d in plan.diags.items if not d.is_error]
        distiller = finish(plan)
    except KdslError as exc:
        diags = list(exc.diagnostics)
        if x is None and spec2.input is None and not derived:
            diags = [d.model_copy(update={"hints": d.hints + (_NO_SHAPE,)}) if d.code == "KD510" else d
                     for d in diags]
        return Inspection(None, diags, notes + _example_notes(derived))
    return Inspection(distiller, warnings, notes + _example_notes(derived))


def _example_notes(derived: List[Any]) -> List[str]:
    from kdsl.reports.derive_example import describe

    return [describe(e) for e in derived]


def compile_with(spec: Spec, opts: ModelOptions):
    """Compile against the models of ``opts``; (distiller, warnings) or (None, diagnostics)."""
    found = inspect(spec, opts)
    return found.distiller, found.diagnostics


def _fsdp_problems(plan) -> List[Diagnostic]:
    """Under the spec's ``strategy = "fsdp"``: what the dry run found that sharding would break
    (KD541), with the spec's placements and units."""
    from kdsl.lang.literal import try_literal

    train = plan.spec.train
    literal = lambda key: try_literal(train.get(key).value)[1] if train is not None and train.get(key) else None  # noqa: E731
    if literal("strategy") != "fsdp":
        return []
    from kdsl.reports.memory_plan import spec_placements
    from kdsl.training.sharding import param_view_errors

    units = literal("shard_units")
    return param_view_errors(plan, spec_placements(plan.spec), units if isinstance(units, list) else None)


@dataclass
class ModelCheck:
    """What ``kdsl check`` with models found: diagnostics, notes (weights not loaded, the dry
    run's example), and (when compiling worked) the tables of records and connectors."""

    diagnostics: List[Diagnostic] = field(default_factory=list)
    tables: List[Any] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def check_with_models(spec: Spec, *, student=None, teacher=None, models=(), input_shape=None,
                      data=None, teacher_ckpt=None, load_weights=False, dry_run=False) -> ModelCheck:
    """Compile ``spec`` against the models named (as on the command line) and dry-run it."""
    from kdsl.reports.explain import connectors_table, records_table

    opts = ModelOptions(student, teacher, list(models), teacher_ckpt, input_shape, data,
                        load_weights, dry_run)
    found = inspect(spec, opts)
    if found.distiller is None:
        return ModelCheck(found.diagnostics, notes=found.notes)
    diags = list(found.diagnostics)
    with found.distiller as distiller:
        plan = distiller.plan
        tables = [records_table(plan)] + ([connectors_table(plan)] if plan.connectors else [])
        diags += _fsdp_problems(plan)
        if not plan.request.dry:
            diags.append(make("KD517", "paths resolved; no dry run, so shapes were not checked",
                              severity="warning", hint=_NO_SHAPE))
    return ModelCheck(diags, tables, found.notes)
