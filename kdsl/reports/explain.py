"""``kdsl explain``: the compiled plan in words and tables (hooks, patches, connectors, losses,
order of evaluation, parameters added). Everything shown is read from ``distiller.plan``; the
functions return rich renderables, and the CLI prints them."""

from __future__ import annotations

from typing import Any, List, Optional

from rich.table import Table

from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.shapes import Broadcastable, TensorInfo, broadcast_shape
from kdsl.compiler.install import place_text
from kdsl.compiler.plan import Plan
from kdsl.compiler.truncate import truncation_lines
from kdsl.core.literals import literal_text
from kdsl.lang import ir
from kdsl.lang.printer import expr_text, weight_text


def shape_text(info: Optional[TensorInfo]) -> str:
    return f"{info.describe()} {info.dtype}" if info is not None else "-"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    return table


def records_table(plan: Plan) -> Table:
    """Each record: what it takes, how it is installed, its shape, whether it is copied."""
    table = _table("records", "record", "model", "what", "installed as", "shape", "dtype", "in-place")
    for decl in plan.spec.records:
        rec = plan.records.get(decl.name)
        how = rec.installed_as if rec is not None else "-"
        shape = rec.shape_text if rec is not None else "-"
        dtype = rec.info.dtype if rec is not None and rec.info is not None else "-"
        copied = "copied" if rec is not None and rec.recorder.copy else ""
        table.add_row(decl.name, decl.model, decl.describe(), how, shape, dtype, copied)
    return table


def _options_text(options: dict, inferred: List[str]) -> str:
    parts = []
    for k, v in options.items():
        parts.append(f"{k}={literal_text(v) if not hasattr(v, 'forward') else type(v).__name__}"
                     + (" (inferred)" if k in inferred else ""))
    return ", ".join(parts)


def connectors_table(plan: Plan) -> Table:
    """Each connector: its options (inferred ones marked), parameters, input and output shapes."""
    table = _table("connectors", "connector", "type", "options", "params", "input", "output")
    for decl in plan.spec.connectors:
        built = plan.connectors[decl.name]
        table.add_row(decl.name, decl.component, _options_text(built.options, built.inferred),
                      f"{sum(p.numel() for p in built.module.parameters()):,}",
                      shape_text(built.input), shape_text(built.output))
    return table


def _rule_text(rule, lp) -> str:
    """A loss's shape rule; a broadcast's with the shape its inputs broadcast to."""
    text = rule.describe()
    if isinstance(rule, Broadcastable) and lp.inputs.get(rule.a) and lp.inputs.get(rule.b):
        shape = broadcast_shape(lp.inputs[rule.a].shape, lp.inputs[rule.b].shape)
        text += f": {lp.inputs[rule.a].describe()} with {lp.inputs[rule.b].describe()} -> " + \
            (TensorInfo(shape).describe() if shape is not None else "no shape")
    return text


def losses_table(plan: Plan) -> Table:
    """The losses in evaluation order: inputs with their shapes, weights, shape rules."""
    table = _table("losses, in evaluation order (total = sum of the weighted terms)",
                   "#", "loss", "component", "inputs", "weight", "shape rules")
    for i, decl in enumerate(plan.spec.all_losses, 1):
        component = REGISTRY.get("loss", decl.component)
        lp = plan.losses[decl.name]
        inputs = "\n".join(f"{name} = {expr_text(e)}" +
                           (f"  {shape_text(lp.inputs[name])}" if lp.inputs.get(name) else "")
                           for name, e in lp.bound.items())
        options = [f"{k.name}={expr_text(k.value)}" for k in ir.bound(decl.call).options]
        opts = _options_text(lp.options, lp.inferred) if lp.inferred else ""
        table.add_row(str(i), decl.name, decl.component + (f"({', '.join(options)})" if options else "")
                      + (f"\ninferred: {opts}" if opts else ""), inputs, weight_text(decl.weight),
                      "\n".join(_rule_text(r, lp) for r in (lp.term.rules if lp.term else component.rules)) or "-")
    return table


def models_table(plan: Plan) -> Table:
    """Each model: role, class, parameters, what it does during a step, its checkpoint."""
    table = _table("models", "model", "role", "class", "params", "during the step", "checkpoint")
    for decl in plan.spec.models:
        m = plan.models[decl.name]
        if decl.role == "student":
            mode = "trains"
        elif decl.role == "generator":
            mode = "makes the input; trains where optimized"
        elif decl.frozen:
            mode = ("frozen: train mode (batch statistics, running ones kept), no grad" if decl.train_mode
                    else "frozen: eval mode, no grad") if decl.name in plan.used_teachers else "frozen, never run"
        else:
            mode = "trains (trainable teacher)"
        table.add_row(decl.name, decl.role, type(m).__name__, _param_counts(m, decl.role == "student"),
                      mode, decl.checkpoint or "-")
    return table


def _param_counts(model, student: bool) -> str:
    """Parameters; for a student with frozen ones (LoRA adapters on a frozen base, ``freeze``),
    how many train and how many are frozen."""
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if student and frozen:
        return f"{total:,} ({total - frozen:,} trainable, {frozen:,} frozen)"
    return f"{total:,}"


def deliveries_table(plan: Plan) -> Table:
    table = _table("deliveries", "callable", "from", "to", "keep", "patched")
    for d in plan.deliveries:
        table.add_row(str(d.decl.target), d.decl.source, d.decl.dest, str(d.decl.keep or "unbounded"),
                      ", ".join(place_text(o, n) for o, n in d.places))
    return table


def step_lines(plan: Plan) -> List[str]:
    """What each step does, in order."""
    lines = [] if plan.rollout is None else [plan.rollout.describe()]
    for name in plan.used_teachers:
        frozen = plan.spec.model(name).frozen
        lines.append(f"teacher pass: {name}(*inputs)" + (" under torch.no_grad()" if frozen else " with grad"))
    lines.append(f"student pass: {plan.spec.student.name}(*inputs)")
    if plan.deliveries:
        lines.append("deliveries checked: each teacher result consumed exactly once")
    lines.append("losses in order: " + ", ".join(t.name for t in plan.terms) +
                 "; total = their weighted sum; records cleared")
    return [f"  {n}. {line}" for n, line in enumerate(lines, 1)]


def _runs_text(plan: Plan, phase) -> str:
    """The models a phase runs, in order, and how."""
    parts = []
    for name in phase.models_run:
        decl = plan.spec.model(name)
        if decl.role == "generator":
            how = "input" + ("" if phase.trains_input else ", no grad")
        elif decl.frozen:
            how = "frozen, grad to the input" if phase.trains_input else "frozen, no grad"
        else:
            how = "with grad"
        parts.append(f"{name} ({how})")
    return "\n".join(parts) or "-"


def _trains_text(distiller, stage, phase) -> str:
    """What a phase's optimizer updates: its scopes (or the default), and how many parameters."""
    params = distiller.trainable_parameters(stage.name, phase.name)
    what = ", ".join(phase.optimize) if phase.optimize else "default: student, trainable teachers, its connectors"
    frozen = stage.freeze + phase.freeze
    return (f"{what}\n{sum(p.numel() for p in params):,} parameters"
            + (f"\nfrozen: {', '.join(frozen)}" if frozen else ""))


def control_lines(distiller) -> List[str]:
    """``freeze`` and ``init`` in words: what is never trained, what is copied at the start."""
    plan: Plan = distiller.plan
    lines = []
    if not distiller.procedure.declared and distiller.procedure.stages[0].freeze:
        lines.append("frozen (requires_grad off, not optimized): "
                     + ", ".join(distiller.procedure.stages[0].freeze))
    for decl, _, _ in plan.inits:
        lines.append(f"init {decl.target} from {decl.source}: parameters and buffers copied once "
                     "when a run starts")
    return lines + ([""] if lines else [])


def _stage_epochs_text(stage) -> str:
    epochs = "rest of the run" if stage.epochs is None else str(stage.epochs)
    return epochs + ("" if stage.batch_size is None else f"\nbatch_size {stage.batch_size}")


def procedure_table(distiller) -> Table:
    """The stages in order and, in each, the phases of a training step: repeats, what runs,
    which losses, what trains and with which optimizer."""
    plan: Plan = distiller.plan
    table = _table("stages and phases (each step runs the phases of its stage in order)",
                   "stage", "epochs", "phase", "repeat", "runs", "losses", "trains", "optimizer")
    for stage in distiller.procedure.stages:
        for i, phase in enumerate(stage.phases):
            opt = "train block's"
            if phase.optimizer is not None:
                name, options = phase.optimizer
                opt = f"{name}({', '.join(f'{k}={literal_text(v)}' for k, v in options.items())})"
            table.add_row(stage.name if i == 0 else "",
                          _stage_epochs_text(stage) if i == 0 else "",
                          phase.name, str(phase.repeat), _runs_text(plan, phase),
                          ", ".join(phase.losses) or "-", _trains_text(distiller, stage, phase), opt)
    return table


def explain(distiller) -> List[Any]:
    """The plan of a compiled distiller as renderables (rich markup strings and tables)."""
    plan: Plan = distiller.plan
    parts: List[Any] = [f"[bold]{plan.spec.file}[/bold]: what kdsl does with these models\n",
                        models_table(plan)]
    if plan.spec.params:  # their values stand in the tables below where the spec names them
        from kdsl.lang.search_spaces import params_text  # with where a value came from, and its search space

        parts.append("params: " + ", ".join(params_text(plan.spec)))
    if distiller.procedure.declared:
        parts.append(procedure_table(distiller))
    else:
        parts += ["[bold]each step[/bold]", *step_lines(plan), ""]
    if plan.cuts:
        parts += ["[bold]where each pass stops[/bold] (teacher truncation; off with truncate=False)",
                  *truncation_lines(distiller), ""]
    if plan.compiled or plan.compile_note:
        parts += [f"torch.compile: {', '.join(plan.compiled) or 'none'}"
                  + (f" ({plan.compile_note})" if plan.compile_note else ""), ""]
    parts += control_lines(distiller)
    parts.append(records_table(plan))
    if plan.deliveries:
        parts.append(deliveries_table(plan))
    if plan.connectors:
        parts.append(connectors_table(plan))
    parts.append(losses_table(plan))
    added = sum(p.numel() for name, p in distiller.named_parameters()
                if not name.startswith(f"models.{distiller.student_name}.") and p.requires_grad)
    student = sum(p.numel() for p in distiller.student.parameters())
    parts.append(f"trainable parameters added to the student's {student:,}: {added:,} "
                 "(connectors, learning losses, trainable teachers"
                 + (", generators)" if plan.spec.generators else ")"))
    return parts
