"""Passes that build the loss graph: every loss's inputs evaluated on the dry run's values by the
one expression interpreter (building connectors on the way), its options inferred, its module
and weight built; then the shape rules checked, and connectors that no loss applies built too
(they still train)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.shapes import TensorInfo, check_rules
from kdsl.catalog.types import Component
from kdsl.compiler.components import (NotInferred, Target, build_component, infer_options, no_target,
                                      options_of)
from kdsl.compiler.dry_env import DryRunEnv, build_connector
from kdsl.compiler.snapshot import Snapshot
from kdsl.compiler.paths import resolve_module_ref
from kdsl.compiler.plan import LossPlan, Plan, Skip
from kdsl.core.diagnostics import KdslError, Note
from kdsl.lang import ir
from kdsl.lang.visit import find
from kdsl.runtime.interpret import Interpreter, Unavailable
from kdsl.runtime.terms import LossTerm
from kdsl.runtime.values import describe_value, info_of


def build_loss_graph(plan: Plan) -> Plan:
    """A :class:`~kdsl.runtime.terms.LossTerm` for every loss, those of stages and phases
    included (none if the dry run failed).

    A loss whose connector cannot infer a size yet (its output is compared with a batch field in
    this loss, and with a tensor of known shape only in a later one) is retried after the others,
    until a round builds nothing new: the result does not depend on the order of the losses.
    Diagnostics and terms keep the order of the declarations.
    """
    if plan.dry_failed:
        return plan
    env = DryRunEnv(plan)
    interpreter = Interpreter(env)  # one for all losses: an application shared by two runs once
    losses = plan.spec.all_losses
    found: Dict[str, List[Any]] = {}
    pending = list(losses)
    while pending:
        waiting = []
        for loss in pending:
            found.pop(loss.name, None)
            try:
                _build_loss(plan, loss, env, interpreter)
            except NotInferred as exc:
                plan.losses.pop(loss.name, None)
                waiting.append(loss)
                found[loss.name] = list(exc.diagnostics)
            except KdslError as exc:
                found[loss.name] = list(exc.diagnostics)
            except Skip:
                pass
        if len(waiting) == len(pending) or not plan.request.dry:
            break  # nothing new was built: what still fails, fails
        pending = waiting
    for loss in losses:
        plan.diags.extend(found.get(loss.name, []))
    order = {loss.name: i for i, loss in enumerate(losses)}
    plan.losses = dict(sorted(plan.losses.items(), key=lambda kv: order[kv[0]]))
    return plan


def evaluation_order(plan: Plan, bound: Dict[str, Any]) -> List[str]:
    """Plain inputs first, then connector applications, those whose output size is inferred
    from another input last (the partner's shape must be known by then)."""
    def rank(name: str) -> int:
        expr = bound[name]
        if not isinstance(expr, ir.ConnectorApply):
            return 0
        if expr.connector in plan.connectors:
            return 1
        decl = plan.spec.connector(expr.connector)
        component = REGISTRY.get("connector", decl.component)
        given = set(ir.bound(decl.call).option_values)
        needs_target = any(i.source == "target" and i.option not in given for i in component.infer)
        return 2 if needs_target else 1
    return sorted(bound, key=rank)


def _partner_size(component: Component, name: str, infos: Dict[str, Optional[TensorInfo]]) -> Target:
    """Sizes of the tensor that input ``name`` is compared with, by the loss's shape rules."""
    def dim_of(dim: int) -> Optional[int]:
        for rule in component.rules:
            partner = rule.partner_dim(name, dim)
            if partner and infos.get(partner[0]) is not None:
                shape = infos[partner[0]].shape
                if -len(shape) <= partner[1] < len(shape):
                    return shape[partner[1]]
        return None
    return dim_of


def _build_loss(plan: Plan, loss: ir.LossDecl, env: DryRunEnv, interpreter: Interpreter) -> None:
    component = REGISTRY.get("loss", loss.component)
    if any(r.record not in plan.records or r.record in plan.broken for r in find(loss.call, ir.RecordRef)):
        raise Skip()  # a record it reads failed to resolve or to run: reported already
    bound = ir.bound(loss.call).input_values  # input name -> expression, positional ones first
    lp = plan.losses[loss.name] = LossPlan(loss, bound, evaluation_order(plan, bound))
    lp.complete = True
    for name in lp.order:
        env.top = (bound[name], _partner_size(component, name, lp.inputs))
        try:
            lp.values[name] = interpreter.visit(bound[name])
            lp.inputs[name] = info_of(lp.values[name])
        except Unavailable:
            lp.complete = False
        finally:
            env.top = (None, no_target)
    options = options_of(plan, loss.call)
    given = set(options)
    infer_options(plan, component, options, lp.inputs, no_target, loss.span, f"loss '{loss.name}'")
    lp.options = {k: v for k, v in options.items() if not hasattr(v, "forward")}
    lp.inferred = sorted(set(options) - given)
    module = build_component(plan, component, options, loss.span, f"loss '{loss.name}'", "KD513")
    weight = _weight(plan, loss)
    inputs = [bound.get(p.name) for p in component.inputs]
    for expr in inputs:  # module references are resolved once, here, not every step
        for ref in (find(expr, ir.ModuleRef) if expr is not None else ()):
            plan.modules[ref] = resolve_module_ref(plan.models, ref)
    rules = [rule.under(options) for rule in component.rules]  # mse(broadcast=true): shapes that broadcast
    lp.term = LossTerm(loss, module, inputs, [p.name for p in component.inputs], rules, weight)


def _weight(plan: Plan, loss: ir.LossDecl) -> Any:
    w = loss.weight
    if w is None:
        return 1.0
    if isinstance(w, ir.Const):
        return float(w.value)
    component = REGISTRY.get("schedule", w.func)
    return component.load()(**options_of(plan, w))


def check_shapes(plan: Plan) -> Plan:
    """Every loss's shape rules on its inputs' dry-run shapes (KD505), and the loss run once on
    the dry-run values when all were there (KD601); unchecked terms check at the first step."""
    for lp in plan.losses.values():
        term = lp.term
        known = {k: v for k, v in lp.inputs.items() if v is not None}
        if term is None or not known:
            continue
        problems = check_rules(term.rules, known)
        for p in problems:
            plan.diags.error(p.code, f"loss '{term.name}' ({term.component}): {p.message}", term.span,
                             notes=_shape_notes(lp) + _model_notes(plan, p.code))
        if not problems and lp.complete:
            term.checked = True
            _try_loss(plan, term, [lp.values.get(n) for n in term.input_names])
    return plan


def _shape_notes(lp: LossPlan) -> List[Note]:
    return [Note(message=f"'{name}' has shape {info.describe()} ({info.dtype})", span=expr.span)
            for name, expr in lp.bound.items() if (info := lp.inputs.get(name)) is not None]


def _model_notes(plan: Plan, code: str) -> List[Note]:
    """For vocabularies that differ (KD545): where the spec declares the models."""
    if code != "KD545":
        return []
    return [Note(message=f"{m.role} '{m.name}' declared here", span=m.name_span)
            for m in plan.spec.models if m.name_span is not None]


def _try_loss(plan: Plan, term: LossTerm, values: List[Any]) -> None:
    """Run the loss once on the dry-run values to catch errors before training."""
    snapshot = Snapshot([term.module])
    try:
        with torch.no_grad():
            term.module(*values)
    except Exception as exc:  # noqa: BLE001
        plan.diags.error("KD601", f"loss '{term.name}' ({term.component}) fails on the dry-run "
                         f"values: {type(exc).__name__}: {exc}", term.span,
                         hint="inputs: " + "; ".join(f"{n} = {describe_value(v)}"
                                                     for n, v in zip(term.input_names, values)))
    finally:
        snapshot.restore()


def build_unused_connectors(plan: Plan) -> Plan:
    """Connectors declared but applied by no loss: still built (and trained), if all is well."""
    if plan.dry_failed:
        return plan
    for con in plan.spec.connectors:
        if con.name not in plan.connectors and con.name not in plan.broken and not plan.diags.has_errors:
            try:
                build_connector(plan, con, no_target)
            except KdslError as exc:
                plan.diags.extend(exc.diagnostics)
    return plan
