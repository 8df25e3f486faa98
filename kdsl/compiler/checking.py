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


def parse_shape(text: str) -> Tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise error("KD701", f"--input-shape takes positive integers separated by commas, got '{text}'",
                    hint="e.g. --input-shape 2,3,32,32 (a batch of 2 or more: norm layers in training "
                    "mode need it)")
    return shape


def example_from(opts: ModelOptions) -> Tuple[Any, Dict[str, Any]]:
    """(example input, example batch fields) for the dry run, or (None, {})."""
    import torch

    if opts.data:
        from torch.utils.data import default_collate

        from kdsl.core.resolve import import_ref
        from kdsl.lang.refs import parse_call
        from kdsl.data import split_result

        ref, args, kwargs = parse_call(opts.data, "data")
        factory = import_ref(ref, "data")
        try:
            result = factory(*args, **kwargs)
        except FileNotFoundError as exc:
            raise error("KD702", f"data '{ref}': {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise error("KD702", f"data factory '{ref}' failed: {type(exc).__name__}: {exc}") from None
        _, val, _ = split_result(result, ref)
        items = [val[i] for i in range(min(2, len(val)))]
        x, y = default_collate([(it[0], it[1]) for it in items])
        return x, {"target": y, "index": torch.arange(len(items))}
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
