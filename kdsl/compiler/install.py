"""Passes that install what the spec's ``record`` and ``deliver`` statements ask for.

Every path is resolved against ``named_modules()`` / ``named_parameters()`` or by import before
anything runs, and every problem is collected (a bad path does not hide the next one). Each hook
and patch is registered in the plan's undo list as it is installed.
"""

from __future__ import annotations

import inspect
from typing import Any, List, Optional, Tuple

from kdsl.compiler.paths import find_module, suggest_path
from kdsl.compiler.plan import DeliveryPlan, Plan, RecordPlan
from kdsl.compiler.reach import outside_reach
from kdsl.core.diagnostics import KdslError
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.statements import recorder_kind
from kdsl.runtime.deliveries import Delivery
from kdsl.runtime.patches import PATCHES, CallListener, function_aliases, resolve_callable, signature_of
from kdsl.runtime.recorders import (CallRecorder, ModuleInputRecorder, ModuleOutputRecorder,
                                    ParamRecorder)


def install_recorders(plan: Plan) -> Plan:
    """A recorder for every ``record``: module hooks, method/function patches, parameters."""
    for rec in plan.spec.records:
        try:
            found = _recorder(plan, rec)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            continue
        if found is not None:
            plan.records[rec.name] = found
            plan.undo.on_close.append(found.recorder.remove)
    return plan


def place_text(owner: Any, name: str) -> str:
    """`pkg.module.Class.method` or `pkg.module.function`: a patched place, as explain shows it."""
    if inspect.isclass(owner):
        return f"{owner.__module__}.{owner.__qualname__}.{name}"
    return f"{getattr(owner, '__name__', owner)}.{name}"


def _recorder(plan: Plan, rec: ir.RecordDecl) -> Optional[RecordPlan]:
    common = dict(name=rec.name, model=rec.model, span=rec.span, state=plan.state,
                  invocation=rec.invocation, description=rec.describe())
    return INSTALLERS[recorder_kind(rec).name](plan, rec, common)


def _param_recorder(plan: Plan, rec: ir.RecordDecl, common: dict) -> Optional[RecordPlan]:
    target = rec.target
    model = plan.models[rec.model]
    # every name of a tied weight (an LM head tied to the embedding: `head.weight` is `embed.tok.weight`)
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(dict(model.named_buffers(remove_duplicate=False)))
    # a LoRA layer (peft) wraps the module it adapts, whose weight moves to .base_layer.weight:
    # the spec names it where the user's model had it
    tensors.update({k.replace(".base_layer.", "."): v for k, v in list(tensors.items()) if ".base_layer." in k})
    if target.dotted not in tensors:
        best, _ = suggest_path(target.dotted, list(tensors))
        plan.diags.error("KD502", f"{rec.model} ({type(model).__name__}) has no parameter "
                         f"'{target.dotted}'", target.span,
                         hints=[f"did you mean '{best}'?"] if best else [])
        return None
    return RecordPlan(rec, ParamRecorder(tensor=tensors[target.dotted], **common), "by reference")


def _module_output_recorder(plan: Plan, rec: ir.RecordDecl, common: dict) -> Optional[RecordPlan]:
    return _hook_module(plan, rec, ModuleOutputRecorder(**common), "forward hook")


def _module_input_recorder(plan: Plan, rec: ir.RecordDecl, common: dict) -> Optional[RecordPlan]:
    return _hook_module(plan, rec, ModuleInputRecorder(selector=rec.input, **common), "forward pre-hook")


def _hook_module(plan: Plan, rec: ir.RecordDecl, recorder, hook: str) -> Optional[RecordPlan]:
    target = rec.target
    try:
        module = find_module(rec.model, plan.models[rec.model], target.path, target.span)
    except KdslError as exc:
        plan.diags.extend(exc.diagnostics)
        return None
    recorder.install(module)
    return RecordPlan(rec, recorder, f"{hook} on {target}")


def _call_recorder(plan: Plan, rec: ir.RecordDecl, common: dict) -> Optional[RecordPlan]:
    target = rec.target
    kind = "method" if isinstance(target, ir.MethodRef) else "function"
    refused = outside_reach(plan, target.ref, kind, target.ref_span or target.span)
    if refused is not None:
        plan.diags.add(refused)
        return None
    owner, name, raw = resolve_callable(target.ref, kind, target.ref_span or target.span)
    sig = signature_of(raw)
    skip_self = kind == "method" and not isinstance(raw, staticmethod)
    if rec.what == "input" and isinstance(rec.input, str) and sig is not None and \
            rec.input not in sig.parameters and \
            not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        plan.diags.error("KD512", f"{target} has no parameter '{rec.input}'", rec.span,
                         hint=did_you_mean(rec.input, list(sig.parameters)))
        return None
    recorder = CallRecorder(what=rec.what, selector=rec.input if rec.what == "input" else None,
                            signature=sig, skip_self=skip_self, **common)
    places = _patch(plan, owner, name, kind, recorder)
    return RecordPlan(rec, recorder, "patched " + ", ".join(place_text(o, n) for o, n in places))


# How each recorder kind of the language (RECORDER_KINDS in kdsl/lang/statements.py) is installed.
INSTALLERS = {"param": _param_recorder, "module output": _module_output_recorder,
              "module input": _module_input_recorder, "method output": _call_recorder,
              "method input": _call_recorder, "function output": _call_recorder,
              "function input": _call_recorder}


def _patch(plan: Plan, owner: Any, name: str, kind: str, listener: CallListener) -> List[Tuple[Any, str]]:
    """Listen to ``owner.name``, and for a function to every other name the models' modules bind
    it to (``from pkg.ops import resize``); the places patched."""
    listener.handles.append(PATCHES.add(owner, name, listener))
    places = [(owner, name)]
    if kind == "function":
        func = PATCHES.original(owner, name)  # not an installed dispatcher (already patched)
        for alias_owner, alias in function_aliases(func, list(plan.models.values())):
            if alias_owner is owner and alias == name:
                continue
            listener.handles.append(PATCHES.add(alias_owner, alias, listener))
            places.append((alias_owner, alias))
    return places


def install_deliveries(plan: Plan) -> Plan:
    """A delivery for every ``deliver``: the callable patched, answered from the source's pass."""
    for d in plan.spec.deliveries:
        kind = "method" if isinstance(d.target, ir.MethodRef) else "function"
        refused = outside_reach(plan, d.target.ref, kind, d.target.ref_span or d.target.span)
        if refused is not None:
            plan.diags.add(refused)
            continue
        try:
            owner, name, _ = resolve_callable(d.target.ref, kind, d.target.ref_span or d.target.span)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            continue
        delivery = Delivery(f"{d.target}", d.source, d.dest, d.keep, d.span, plan.state)
        places = _patch(plan, owner, name, kind, delivery)
        plan.deliveries.append(DeliveryPlan(d, delivery, places))
        plan.undo.on_close.append(delivery.remove)
    return plan
