"""The pass that builds the spec's training procedure (:class:`~kdsl.lang.procedure.Procedure`,
read by the language's one reading of the scoping rules) and adds what only the compiler knows:
which models each phase runs; and the pass that resolves the parameter scopes
(``student.layer1``, ``regressor``) that ``optimize`` and ``freeze`` name against the real models
and connectors (KD501 with a suggestion when a path is wrong).
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence

from kdsl.compiler.paths import find_module
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, make
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.procedure import Phase, read_procedure
from kdsl.lang.visit import find


def _models_of(spec: ir.Spec, losses: Sequence[ir.LossDecl]) -> List[str]:
    """The models whose records the losses read, with the teachers whose deliveries they feed,
    in spec order."""
    used = set()
    for loss in losses:
        for ref in find(loss.call, ir.RecordRef):
            rec = spec.record(ref.record)
            if rec is not None and rec.model:
                used.add(rec.model)
    for d in spec.deliveries:
        if d.dest in used:
            used.add(d.source)
    return [m.name for m in spec.models if m.name in used and m.role != "generator"]


def _run_order(spec: ir.Spec, models: Sequence[str]) -> List[str]:
    """Teachers in spec order, then the student (the order of a plain step)."""
    teachers = [m for m in models if spec.model(m).role == "teacher"]
    return teachers + [m for m in models if spec.model(m).role == "student"]


def _runs(plan: Plan, phase: Phase, declared: bool) -> Phase:
    """``phase`` with the models its step runs (in the order of a plain step, the input's
    generators first) and whether it trains the input."""
    spec = plan.spec
    generators = [a.model for a in find(spec.input.value, ir.ModelApply)] if spec.input else []
    if declared:
        models = _run_order(spec, _models_of(spec, phase.loss_decls))
    else:
        models = plan.used_teachers + [spec.student.name]
    needs_input = spec.input is not None and bool(models)
    trained = {t.name for t in phase.optimize_decl.targets} if phase.optimize_decl is not None else set()
    return dataclasses.replace(
        phase, models_run=(list(dict.fromkeys(generators)) if needs_input else []) + models,
        needs_input=needs_input, trains_input=needs_input and bool(trained & set(generators)))


def build_procedure(plan: Plan) -> Plan:
    """The procedure of the spec (before the dry run, which runs what its phases run)."""
    procedure = read_procedure(plan.spec.statements)
    for stage in procedure.stages:
        stage.phases = [_runs(plan, p, procedure.declared) for p in stage.phases]
    plan.procedure = procedure
    return plan


def resolve_scopes(plan: Plan) -> Plan:
    """Every scope ``optimize`` and ``freeze`` name, resolved to a module (once connectors are built)."""
    for scope in _scopes(plan.spec):
        try:
            plan.scopes.setdefault(str(scope), resolve_scope(plan, scope))
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
        except LookupError:
            pass  # a connector that failed to build: reported already
    for c in plan.spec.connectors:
        if c.frozen and c.name in plan.connector_modules:
            plan.scopes.setdefault(c.name, plan.connector_modules[c.name])
    return plan


def _scopes(spec: ir.Spec) -> List[ir.ParamScope]:
    found: List[ir.ParamScope] = []
    for s in spec.statements:
        found += list(find(s, ir.ParamScope)) if isinstance(s, (ir.OptimizeDecl, ir.FreezeDecl,
                                                                 ir.StageDecl, ir.PhaseDecl)) else []
    return found


def resolve_scope(plan: Plan, scope: ir.ParamScope):
    """The module whose parameters ``scope`` names: a model, a module of one, or a connector."""
    if scope.name in plan.models:
        return find_module(scope.name, plan.models[scope.name], scope.path, scope.span)
    if plan.spec.connector(scope.name) is not None:
        module = plan.connector_modules.get(scope.name)
        if module is None:
            raise LookupError(scope.name)
        return find_module(scope.name, module, scope.path, scope.span)
    names = [m.name for m in plan.spec.models] + [c.name for c in plan.spec.connectors]
    raise KdslError([make("KD501", f"'{scope}' names no model or connector", scope.span,
                          hint=did_you_mean(scope.name, names))])
