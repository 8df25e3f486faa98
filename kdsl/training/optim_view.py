"""What ``kdsl explain`` shows of a run's optimization: per stage and phase, the optimizer, its
parameter groups (with their lr and weight decay) and the lr schedule, with the lr at the first
iteration, at the end of the warm-up and at the last iteration.

The values are those of the train block (flags are not applied) and are computed by building the
phase's optimizer and schedule as the trainer does, on the distiller's parameters, and stepping
the schedule through the stage (the parameters are never updated).
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional, Tuple

from rich.markup import escape
from rich.table import Table

from kdsl.core.literals import literal_text
from kdsl.training.accumulate import optimizer_steps
from kdsl.training.config import resolve_config
from kdsl.training.optim import (Setting, build_lr_schedule, phase_schedule, pieces_of, spec_named_parameters)
from kdsl.training.stages import _optimizer

ASSUMED_STEPS = 100  # optimizer steps per epoch shown when the spec does not set steps_per_epoch
# the pieces that warm up, and the iteration (in their unit, from begin) their warm-up ends at
_WARMUPS = {"linear_factor": lambda o, span: (o.get("end") or span) - 1, "constant_factor": lambda o, span: o.get("end") or span,
            "warmup_linear": lambda o, span: o.get("warmup", 0), "warmup_cosine": lambda o, span: o.get("warmup", 0),
            "warmup_poly": lambda o, span: o.get("warmup", 0),
            "one_cycle": lambda o, span: int(o.get("pct_start", 0.3) * span) - 1}


def call_text(setting: Setting) -> str:
    name, options = setting
    if name == "chain":
        return "chain(" + ", ".join(call_text(p) for p in options["schedules"]) + ")"
    args = ", ".join(f"{k}={call_text(v) if k == 'lr_schedule' else _value_text(v)}" for k, v in options.items())
    return f"{name}({args})"


def _value_text(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):  # groups
        return "[" + ", ".join(f'group("{g["pattern"]}", lr_mult={g["lr_mult"]:g}, decay_mult={g["decay_mult"]:g})'
                               for g in value) + "]"
    return literal_text(value)


def warmup_end(setting: Setting, epochs: int, steps_per_epoch: int) -> Optional[int]:
    """The iteration (0-based, in optimizer steps) at which the schedule's warm-up ends, if it has one."""
    from kdsl.catalog.registry import REGISTRY

    for name, options in pieces_of(setting):
        if name in _WARMUPS:
            values = {p.name: p.default for p in REGISTRY.get("lr_schedule", name).options}
            values.update(options)
            per = steps_per_epoch if values["unit"] == "epoch" else 1
            span = (epochs * steps_per_epoch) // per - values["begin"]
            return (values["begin"] + _WARMUPS[name](values, span)) * per
    name, options = setting
    if options.get("warmup_epochs"):  # the per-epoch schedules' warm-up
        return int(options["warmup_epochs"] * steps_per_epoch) - 1
    return None


def lr_trace(optimizer, setting: Setting, epochs: int, steps_per_epoch: int) -> List[List[float]]:
    """lr[i][g]: each group's lr at the optimizer step of every iteration of the stage."""
    scheduler = build_lr_schedule(optimizer, setting, epochs=epochs, steps_per_epoch=steps_per_epoch)
    trace = []
    with warnings.catch_warnings():  # stepped without optimizer steps: nothing is trained here
        warnings.simplefilter("ignore")
        for _ in range(epochs * steps_per_epoch):
            trace.append([g["lr"] for g in optimizer.param_groups])
            scheduler.step()
    return trace


def optimization_table(spec, distiller) -> Tuple[Table, List[str]]:
    """The table, and notes on what it assumes."""
    cfg = resolve_config(spec, {})
    steps = cfg.steps_per_epoch or ASSUMED_STEPS
    per_epoch = optimizer_steps(steps, cfg.accumulate)
    notes = [] if cfg.steps_per_epoch else [
        f"lrs assume {ASSUMED_STEPS} steps per epoch (the data decides; set steps_per_epoch to fix it)"]
    table = Table(title=f"optimization ({cfg.epochs} epochs, {per_epoch} optimizer steps an epoch"
                  + (f", accumulate = {cfg.accumulate}" if cfg.accumulate > 1 else "") + ")", title_justify="left")
    for col in ("stage", "phase", "optimizer", "parameter groups", "lr schedule", "lr: first / warm-up end / last"):
        table.add_column(col)
    names = {id(p): n for n, p in spec_named_parameters(distiller)}
    for plan, first, end in distiller.stage_ranges(cfg.epochs):
        for phase in plan.phases:
            own, setting = phase_schedule(phase.optimizer, cfg.lr_schedule)
            params = [(names.get(id(p), ""), p) for p in distiller.trainable_parameters(plan.name, phase.name)]
            optimizer = _optimizer(cfg, own, params)
            steps_here = _stage_steps(cfg, plan, per_epoch) * phase.repeat
            trace = lr_trace(optimizer, setting, end - first, steps_here)
            stage = plan.name + ("" if plan.batch_size is None else f" (batch_size {plan.batch_size})")
            cells = (stage, phase.name, call_text(own or cfg.optimizer), _groups_text(optimizer),
                     call_text(setting), _lr_text(trace, warmup_end(setting, end - first, steps_here)))
            table.add_row(*(escape(c) for c in cells))  # [..] in a call is text, not rich markup
    return table, notes


def _stage_steps(cfg, plan, per_epoch: int) -> int:
    """Optimizer steps of an epoch of ``plan``: a stage with its own batch size and no
    steps_per_epoch has its epoch's batches scaled by the run's batch size over its own."""
    if plan.batch_size is None or cfg.steps_per_epoch:
        return per_epoch
    return optimizer_steps(-(-ASSUMED_STEPS * cfg.batch_size // plan.batch_size), cfg.accumulate)


def _groups_text(optimizer) -> str:
    lines = []
    for g in optimizer.param_groups:
        n = sum(p.numel() for p in g["params"])
        lines.append(f"{g.get('name', 'all')}: {n:,} params, lr {g.get('initial_lr', g['lr']):g}, "
                     f"decay {g.get('weight_decay', 0):g}")
    return "\n".join(lines)


def _lr_text(trace: List[List[float]], warm: Optional[int]) -> str:
    if not trace:
        return "-"
    picks = [("first", 0)] + ([("warm-up end", warm)] if warm is not None and 0 <= warm < len(trace) else []) \
        + [("last", len(trace) - 1)]
    return "\n".join(f"{label} (iteration {i}): " + ", ".join(f"{lr:.6g}" for lr in trace[i]) for label, i in picks)
