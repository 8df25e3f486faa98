"""The dry run pass: every used model run once on the example input, without gradients, leaving no
trace (buffers and RNG states restored). It records every record's value and shape, calibrates
in-place detection (records that in-place operations overwrite are copied from then on), checks
deliveries, and reports records that never ran."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, make
from kdsl.runtime.recorders import check_missing
from kdsl.runtime.values import describe_value, info_of


class Snapshot:
    """Buffers of modules and the RNG states, restored after a dry run."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.cpu_rng = torch.random.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and \
            torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        torch.random.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def as_call(example: Any) -> Tuple[tuple, Dict[str, Any]]:
    """An example input as call arguments: a dict is keywords, a tuple or list positional."""
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}


def pass_order(plan: Plan) -> List[str]:
    """The models a step runs, in order: the used teachers, then the student."""
    return plan.used_teachers + [plan.spec.student.name]


def dry_run(plan: Plan) -> Plan:
    """Run the models on the example input (nothing without one) and keep what they recorded."""
    if not plan.request.dry:
        return plan
    snapshot = Snapshot(list(plan.models.values()))
    try:
        with torch.no_grad():
            if not _run_models(plan):
                plan.dry_failed = True
                return plan
        for p in plan.deliveries:
            try:
                p.delivery.finish_step()
            except KdslError as exc:
                plan.diags.extend(exc.diagnostics)
        for r in plan.records.values():
            r.recorder.check_overwrites()
        plan.state.calibrating = False
        _read_records(plan)
    finally:
        plan.state.active = None
        for r in plan.records.values():  # the values live on in plan.values, not in them
            r.recorder.clear()
        snapshot.restore()
    return plan


def _run_models(plan: Plan) -> bool:
    """Each model's pass on the example input; False after a diagnostic."""
    args, kwargs = as_call(plan.request.example_input)
    for name in pass_order(plan):
        decl = plan.spec.model(name)
        plan.state.active = name
        try:
            plan.models[name](*args, **kwargs)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            return False
        except Exception as exc:  # noqa: BLE001 - the user's model rejected the input
            shapes = "; ".join(describe_value(a) for a in args)
            plan.diags.error("KD516", f"the example input could not be run through {decl.role} "
                             f"'{name}': {type(exc).__name__}: {exc}", decl.name_span,
                             hint=f"example input: {shapes}")
            return False
        finally:
            plan.state.active = None
    return True


def _read_records(plan: Plan) -> None:
    """Every record's dry-run value; a record that never ran is KD506 (and broken)."""
    for name, r in plan.records.items():
        try:
            value = check_missing(r.recorder.read(), r.recorder)
        except KdslError as exc:
            plan.broken.add(name)
            for d in exc.diagnostics:
                if d.code == "KD607":
                    d = _never_ran(plan, name)
                plan.diags.add(d)
            continue
        plan.values[name] = value
        r.info = info_of(value)
        r.description = describe_value(value)


def _never_ran(plan: Plan, name: str):
    rec = plan.spec.record(name)
    model = plan.spec.model(rec.model)
    whose = f"the {model.role}'s" if model.name == model.role else f"{model.role} '{model.name}''s"
    return make("KD506", f"record '{name}': {rec.describe()} never ran in {whose} forward pass on "
                "the example input", rec.target.span, hint="is it used in forward()? (modules built "
                "but never called, or skipped in this mode, record nothing)")
