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

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.catalog.registry import REGISTRY
from kdsl.compiler.paths import find_module
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, make
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.visit import find
from kdsl.runtime.procedure import IMPLICIT_PHASE, IMPLICIT_STAGE, PhasePlan, Procedure, StagePlan


@dataclass
class _Block:
    """The statements of one scope (top level, a stage or a phase), sorted by kind."""

    losses: List[ir.LossDecl] = field(default_factory=list)
    optimizes: List[ir.OptimizeDecl] = field(default_factory=list)
    freezes: List[ir.FreezeDecl] = field(default_factory=list)
    phases: List[ir.PhaseDecl] = field(default_factory=list)


def _block(statements: Sequence[Any]) -> _Block:
    b = _Block()
    for s in statements:
        if isinstance(s, ir.LossDecl):
            b.losses.append(s)
        elif isinstance(s, ir.OptimizeDecl):
            b.optimizes.append(s)
        elif isinstance(s, ir.FreezeDecl):
            b.freezes.append(s)
        elif isinstance(s, ir.PhaseDecl):
            b.phases.append(s)
    return b


def optimizer_of(call: ir.Call) -> Tuple[str, Dict[str, Any]]:
    """``adam(lr=0.1)`` as ``("adam", {"lr": 0.1})`` (positional options named by the catalog)."""
    component = REGISTRY.get("optimizer", call.func)
    names = [p.name for p in component.options] if component is not None else []
    options: Dict[str, Any] = {}
    for name, arg in zip(names, call.args):
        options[name] = try_literal(arg)[1]
    for k in call.kwargs:
        options[k.name] = try_literal(k.value)[1]
    return call.func, options


def _first_optimizer(*blocks: _Block) -> Optional[Tuple[str, Dict[str, Any]]]:
    for b in blocks:
        for o in b.optimizes:
            if o.optimizer is not None:
                return optimizer_of(o.optimizer)
    return None


def _targets(*blocks: _Block) -> List[ir.ParamScope]:
    """The ``optimize`` targets of the first block that has any."""
    for b in blocks:
        if b.optimizes:
            return [t for o in b.optimizes for t in o.targets]
    return []


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


def _phase(plan: Plan, name: str, repeat: int, losses: List[ir.LossDecl], own: _Block,
           outer: Sequence[_Block], freezes: Sequence[ir.FreezeDecl] = ()) -> PhasePlan:
    """A phase computing ``losses``; what it trains and its optimizer come from ``own`` first,
    then the ``outer`` blocks (its stage, the top level)."""
    spec = plan.spec
    targets = _targets(own, *outer)
    generators = [a.model for a in find(spec.input.value, ir.ModelApply)] if spec.input else []
    if plan.procedure.declared:
        models = _run_order(spec, _models_of(spec, losses))
    else:
        models = plan.used_teachers + [spec.student.name]
    needs_input = spec.input is not None and bool(models)
    trained = {t.name for t in targets}
    return PhasePlan(
        name=name, repeat=repeat, losses=[loss.name for loss in losses],
        optimize=[str(t) for t in targets], optimizer=_first_optimizer(own, *outer),
        models_run=(list(dict.fromkeys(generators)) if needs_input else []) + models,
        needs_input=needs_input, trains_input=needs_input and bool(trained & set(generators)),
        freeze=[str(f.target) for f in freezes])


def _stage(plan: Plan, name: str, epochs: Optional[int], top: _Block, own: Optional[_Block]) -> StagePlan:
    phases: List[PhasePlan] = []
    outer = [own, top] if own is not None else [top]
    for decl in top.phases + (own.phases if own is not None else []):
        block = _block(decl.statements)
        phases.append(_phase(plan, decl.name, decl.repeat, block.losses, block, outer, block.freezes))
    loose = top.losses + (own.losses if own is not None else [])
    if loose or not phases:
        phases.append(_phase(plan, IMPLICIT_PHASE, 1, loose, own if own is not None else top,
                             [top] if own is not None else []))
    freeze = [str(f.target) for f in top.freezes + (own.freezes if own is not None else [])]
    freeze += [c.name for c in plan.spec.connectors if c.frozen and c.name not in freeze]
    return StagePlan(name=name, epochs=epochs, phases=phases, freeze=freeze)


def build_procedure(plan: Plan) -> Plan:
    """The procedure of the spec (before the dry run, which runs what its phases run)."""
    spec = plan.spec
    plan.procedure = Procedure(declared=bool(spec.stages or spec.phases or spec.input is not None))
    top = _block(spec.statements)
    if spec.stages:
        stages = [_stage(plan, s.name, s.epochs, top, _block(s.statements)) for s in spec.stages]
    else:
        stages = [_stage(plan, IMPLICIT_STAGE, None, top, None)]
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
