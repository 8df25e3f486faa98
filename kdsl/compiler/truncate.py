"""The pass that decides which passes stop early (teacher truncation), and how ``kdsl explain``
says where they stop.

A spec says exactly which tensors a step takes from each model. When a phase's losses read only
intermediate records of a frozen teacher (FitNets' ``output of teacher.layer2``), the rest of the
teacher's forward is wasted work: the distiller arms the pass with the recorders the phase needs,
and the one that completes the set raises :class:`~kdsl.runtime.recorders.PassComplete`, which
the distiller catches. The values recorded are those of the full pass (the forward up to that
point is the same code on the same input); only what comes after is not computed.

A pass runs in full, and :func:`plan_truncation` says why, when stopping early is impossible or
not clearly safe: a record of the model's output, or of ``all calls`` (the last call is known only
at the end), a delivery from or to the model, a trainable teacher (its output may be trained),
a student with buffers (a full pass would update its BatchNorm statistics) or that runs under
DDP, models compiled with torch.compile (an exception out of a compiled forward breaks its graph),
or ``kdsl.compile(..., truncate=False)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import torch

from kdsl.compiler.plan import PassCut, Plan
from kdsl.lang import ir
from kdsl.lang.visit import find
from kdsl.runtime.recorders import PassComplete


def plan_truncation(plan: Plan) -> Plan:
    """A :class:`PassCut` for every model every phase runs (generators aside)."""
    spec = plan.spec
    losses = {loss.name: loss for loss in spec.all_losses}
    read_anywhere: Set[str] = {ref.record for loss in losses.values() for ref in find(loss.call, ir.RecordRef)}
    for stage in plan.procedure.stages:
        for phase in stage.phases:
            read = {ref.record for name in phase.losses if name in losses
                    for ref in find(losses[name].call, ir.RecordRef)}
            for model in phase.models_run:
                decl = spec.model(model)
                if decl is None or decl.role == "generator":
                    continue
                # a record no loss reads is kept too: someone may read it from distiller.recorders
                needed = [r for r in spec.records if r.model == model
                          and (r.name in read or r.name not in read_anywhere)]
                cut = PassCut(stage.name, phase.name, model)
                cut.reason = _full_pass_reason(plan, decl, needed)
                cut.needed = [r.name for r in needed if r.what != "param"] if cut.reason is None else []
                plan.cuts[(stage.name, phase.name, model)] = cut
    return plan


def _full_pass_reason(plan: Plan, decl: ir.ModelDecl, needed: List[ir.RecordDecl]) -> Optional[str]:
    """Why the pass of ``decl`` must run to the end (``None``: it may stop early)."""
    request = plan.request
    if not request.truncate:
        return "truncation is off (truncate=False)"
    if decl.name in plan.compiled:
        return "compiled with torch.compile: stopping would break the compiled graph"
    if any(decl.name in (d.source, d.dest) for d in plan.spec.deliveries):
        return "deliveries answer calls made in this pass"
    hooked = [r for r in needed if r.what != "param"]
    if not hooked:
        return "no record of it is read here (parameters only)" if needed else "no record of it is read here"
    for r in hooked:
        if r.name not in plan.records:
            return f"record {r.name} was not installed"
        if r.invocation == "all":
            return f"record {r.name} takes all calls: the last one is known only at the end"
        if isinstance(r.target, ir.ModulePath) and not r.target.path:
            return f"record {r.name} is the {decl.role}'s output"
    if decl.role == "student":
        if any(True for _ in plan.models[decl.name].buffers()):
            return "the student has buffers (BatchNorm statistics) that a full pass updates"
    elif not decl.frozen:
        return "a trainable teacher: its whole forward may be trained"
    return None


# ------------------------------------------------------------------------------ explain
def truncation_lines(distiller: Any) -> List[str]:
    """For each pass of each phase: where it stops, or why it runs in full. With an example
    input, where it stops is observed (:func:`observe`): which record completes the pass and how
    many of the model's top-level modules are skipped."""
    plan: Plan = distiller.plan
    lines: List[str] = []
    phased = distiller.procedure.declared
    for (stage, phase, model), cut in plan.cuts.items():
        where = f"{stage}/{phase}: " if phased else ""
        role = plan.spec.model(model).role
        who = model if model == role else f"{role} {model}"
        if not cut.stops:
            lines.append(f"  {where}{who} runs in full: {cut.reason}")
            continue
        seen = observe(distiller, stage, phase, model)
        if seen is None:
            names = ", ".join(cut.needed)
            lines.append(f"  {where}{who} stops once {names} "
                         f"{'is' if len(cut.needed) == 1 else 'are'} recorded")
            continue
        record, skipped, total = seen
        if record is None:
            lines.append(f"  {where}{who} runs in full on the example input: "
                         f"{', '.join(cut.needed)} did not complete before its end")
            continue
        target = plan.spec.record(record).target
        lines.append(f"  {where}{who} stops after {target} (record {record}); "
                     f"{skipped} of {total} top-level modules skipped")
    return lines


def observe(distiller: Any, stage: str, phase: str, model: str) -> Optional[Tuple[Optional[str], int, int]]:
    """Run ``model``'s truncated pass once on the compile's example input (no grad, eval mode,
    records discarded): (the record that completed it, or ``None`` if none did; top-level modules
    never entered; top-level modules). ``None`` without an example input."""
    plan: Plan = distiller.plan
    example = plan.request.example_input
    cut = distiller._cuts.get((stage, phase), {}).get(model)
    if example is None or cut is None:
        return None
    from kdsl.runtime.values import as_call

    args, kwargs = as_call(example)
    net = distiller.model(model)
    children = list(net.children())
    entered: Set[int] = set()
    handles = [c.register_forward_pre_hook(lambda m, a, i=i: entered.add(i)) for i, c in enumerate(children)]
    was_training = net.training
    state = distiller._state
    completed: Dict[str, Optional[str]] = {"record": None}
    try:
        net.eval()
        distiller._begin_step()
        state.active, state.needed, state.remaining = model, cut, len(cut)
        with torch.no_grad():
            net(*args, **kwargs)
    except PassComplete as exc:
        if exc.state is not state:
            raise
        completed["record"] = exc.record
    finally:
        state.active, state.needed = None, None
        distiller._end_step()
        net.train(was_training)
        for h in handles:
            h.remove()
    return completed["record"], len(children) - len(entered), len(children)
