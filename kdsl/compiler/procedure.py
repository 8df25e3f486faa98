"""The pass that builds the spec's training procedure (:class:`~kdsl.runtime.procedure.Procedure`):
its stages, the phases of each, what each phase computes, runs and trains, and the parameter
scopes (``student.layer1``, ``regressor``) that ``optimize`` and ``freeze`` name, resolved against
the real models and connectors (KD501 with a suggestion when a path is wrong).

Statements outside any stage hold in every stage; a spec without stages has one, ``main``. The
losses and ``optimize`` of a stage outside any phase form the phase ``step``, after the declared
phases (top-level phases first). A phase trains its ``optimize`` targets, else its stage's, else
the top level's, else the default (:meth:`kdsl.runtime.distiller.Distiller.trainable_parameters`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.catalog.registry import REGISTRY
from kdsl.compiler.paths import find_module
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, make
from kdsl.core.suggest import did_you_mean
from kdsl.lang.lr_schedule import OWN_SCHEDULE, schedule_value, split_own_schedule
from kdsl.lang.param_groups import GROUPS, groups_value, split_groups
from kdsl.lang import ir
from kdsl.lang import procedure as scoping
from kdsl.lang.literal import try_literal
from kdsl.lang.visit import find
from kdsl.runtime.procedure import IMPLICIT_PHASE, IMPLICIT_STAGE, PhasePlan, Procedure, StagePlan


def optimizer_of(call: ir.Call) -> Tuple[str, Dict[str, Any]]:
    """``adam(lr=0.1)`` as ``("adam", {"lr": 0.1})`` (positional options named by the catalog)."""
    component = REGISTRY.get("optimizer", call.func)
    names = [p.name for p in component.options] if component is not None else []
    options: Dict[str, Any] = {}
    for name, arg in zip(names, call.args):
        options[name] = try_literal(arg)[1]
    call, own_schedule = split_own_schedule(call)
    call, groups = split_groups(call)
    if groups is not None:
        options[GROUPS] = groups_value(groups)
    for k in call.kwargs:
        options[k.name] = try_literal(k.value)[1]
    if own_schedule is not None:  # the phase's own lr schedule, which build_stage takes out
        options[OWN_SCHEDULE] = schedule_value(own_schedule.value)
    return call.func, options


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


def _optimizer(*scopes: Sequence[Any]) -> Optional[Tuple[str, Dict[str, Any]]]:
    """The optimizer of a phase: the first ``optimize ... with`` of the phase, its stage, the top
    level (None: the train block's)."""
    for statements in scopes:
        for s in statements:
            if isinstance(s, ir.OptimizeDecl) and s.optimizer is not None:
                return optimizer_of(s.optimizer)
    return None


def _phase(plan: Plan, stage_freezes: List[str], read: scoping.PhasePlan,
           outer: Sequence[Sequence[Any]]) -> PhasePlan:
    """The runtime's view of one phase of :func:`kdsl.lang.procedure.plan`: what it computes, which
    models it runs (in the order of a plain step), what it trains and with which optimizer."""
    spec = plan.spec
    targets = list(read.optimize.targets) if read.optimize is not None else []
    generators = [a.model for a in find(spec.input.value, ir.ModelApply)] if spec.input else []
    if plan.procedure.declared:
        models = _run_order(spec, _models_of(spec, read.losses))
    else:
        models = plan.used_teachers + [spec.student.name]
    needs_input = spec.input is not None and bool(models)
    trained = {t.name for t in targets}
    optimizer = _optimizer(read.decl.statements if read.decl else (), *outer)
    return PhasePlan(
        name=read.name or IMPLICIT_PHASE, repeat=read.repeat, losses=[loss.name for loss in read.losses],
        optimize=[str(t) for t in targets], optimizer=optimizer,
        models_run=(list(dict.fromkeys(generators)) if needs_input else []) + models,
        needs_input=needs_input, trains_input=needs_input and bool(trained & set(generators)),
        freeze=[str(f.target) for f in read.freezes if str(f.target) not in stage_freezes])


def build_procedure(plan: Plan) -> Plan:
    """The procedure of the spec (before the dry run, which runs what its phases run), read with
    the language's one reading of the scoping rules (:func:`kdsl.lang.procedure.plan`)."""
    spec = plan.spec
    plan.procedure = Procedure(declared=bool(spec.stages or spec.phases or spec.input is not None))
    top_freezes = [str(s.target) for s in spec.statements if isinstance(s, ir.FreezeDecl)]
    stages = []
    for read in scoping.plan(spec.statements):
        stage_statements = read.decl.statements if read.decl else ()
        outer = (stage_statements, spec.statements) if read.decl else (spec.statements,)
        own = [str(s.target) for s in stage_statements if isinstance(s, ir.FreezeDecl)]
        freeze = top_freezes + [f for f in own if f not in top_freezes]
        freeze += [c.name for c in spec.connectors if c.frozen and c.name not in freeze]
        stages.append(StagePlan(name=read.name or IMPLICIT_STAGE, epochs=read.epochs,
                                phases=[_phase(plan, freeze, p, outer) for p in read.phases], freeze=freeze))
    plan.procedure.stages = stages
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
