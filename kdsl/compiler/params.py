"""Passes over parameters the spec moves between modules: connector weights loaded ``from`` a file
(KD509 located at the path when it does not fit), and ``init A from B`` resolved and checked
(KD501 for a wrong path, KD518 when the two modules' parameters and buffers differ). The copy
itself is :meth:`kdsl.runtime.distiller.Distiller.apply_inits`, once when a run starts."""

from __future__ import annotations

from typing import List

from torch import nn

from kdsl.compiler.paths import find_module
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, Note
from kdsl.io.checkpoint_file import spec_relative
from kdsl.io.weights import load_into, mismatch_hints
from kdsl.lang import ir


def load_connector_weights(plan: Plan) -> Plan:
    """``connector NAME = ... from "FILE"``: the built connector's weights from the file."""
    for decl in plan.spec.connectors:
        module = plan.connector_modules.get(decl.name)
        if decl.checkpoint is None or module is None:
            continue
        span = decl.checkpoint_span or decl.span
        try:
            load_into(module, spec_relative(decl.checkpoint, span), span,
                      what=f"connector '{decl.name}' ({decl.component})", key=decl.name)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
    return plan


def resolve_inits(plan: Plan) -> Plan:
    """Every ``init``'s two modules found, their parameters and buffers matched by name and shape."""
    for decl in [s for s in plan.spec.statements if isinstance(s, ir.InitDecl)]:
        try:
            target = _module(plan, decl.target)
            source = _module(plan, decl.source)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            continue
        problems = init_problems(target, source)
        if problems:
            plan.diags.error("KD518", f"init {decl.target} from {decl.source}: the modules do not "
                             "have the same parameters and buffers", decl.span, hints=problems,
                             notes=[Note(message=f"{decl.target} is a {type(target).__name__}, "
                                         f"{decl.source} a {type(source).__name__}",
                                         span=decl.source.span)])
            continue
        plan.inits.append((decl, target, source))
    return plan


def _module(plan: Plan, path: ir.ModulePath) -> nn.Module:
    return find_module(path.model, plan.models[path.model], path.path, path.span)


def init_problems(target: nn.Module, source: nn.Module) -> List[str]:
    """What keeps ``source``'s state from being copied into ``target`` (empty: nothing)."""
    return mismatch_hints(target.state_dict(), source.state_dict(),
                          ("the source lacks ", "the target lacks ", "shapes differ: "), "{key}: {have} into {want}")
