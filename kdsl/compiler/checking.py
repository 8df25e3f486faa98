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
    student: Optional[str] = None
    teacher: Optional[str] = None
    models: List[str] = field(default_factory=list)
    teacher_ckpt: Optional[str] = None
    input_shape: Optional[str] = None
    data: Optional[str] = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.student, self.teacher, self.input_shape, self.data,
                                           self.teacher_ckpt)) or bool(self.models)


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
    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
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


def example_from(opts: ModelOptions) -> Tuple[Any, Dict[str, Any]]:
    """(example input, example batch fields) for the dry run, or (None, {})."""
    import torch

    if opts.data:
        from kdsl.compiler.data_example import data_example

        return data_example(opts.data)
    if opts.input_shape is not None:
        return torch.zeros(parse_shape(opts.input_shape)), {}
    return None, {}


def compile_with(spec: Spec, opts: ModelOptions):
    """Compile against the models of ``opts``; (distiller, []) or (None, diagnostics)."""
    from kdsl.compiler.compiler import compile as compile_spec

    from kdsl.compiler.models import ModelChoice, apply_model_choice

    # problems with the command line's own references are usage errors: they raise
    choice = ModelChoice(opts.student, opts.teacher, list(opts.models), opts.teacher_ckpt)
    spec2, given = apply_model_choice(spec, choice)
    x, batch = example_from(opts)
    try:
        distiller = compile_spec(spec2, example_input=x, example_batch=batch, **given)
        return distiller, []
    except KdslError as exc:
        return None, list(exc.diagnostics)


@dataclass
class ModelCheck:
    """What ``kdsl check`` with models found: diagnostics, and (when compiling worked) the tables
    of records and connectors for the CLI to show."""

    diagnostics: List[Diagnostic] = field(default_factory=list)
    tables: List[Any] = field(default_factory=list)


def check_with_models(spec: Spec, *, student=None, teacher=None, models=(), input_shape=None,
                      data=None, teacher_ckpt=None) -> ModelCheck:
    """Compile ``spec`` against the models named (as on the command line) and dry-run it."""
    from kdsl.compiler.explain import connectors_table, records_table

    opts = ModelOptions(student, teacher, list(models), teacher_ckpt, input_shape, data)
    distiller, diags = compile_with(spec, opts)
    if distiller is None:
        return ModelCheck(diags)
    with distiller:
        plan = distiller.plan
        tables = [records_table(plan)] + ([connectors_table(plan)] if plan.connectors else [])
        if input_shape is None and data is None and spec.input is None:
            return ModelCheck([make("KD517", "paths resolved; no dry run, so shapes were not checked",
                                    severity="warning", hint="give --input-shape 2,3,32,32 or --data REF")],
                              tables)
    return ModelCheck([], tables)
