"""Passes that bind a spec to its models: import the spec's plugins, then take each model as
passed by keyword or build it from the spec's factory, load its checkpoint, move it to the device,
and freeze frozen teachers (eval mode, no gradients; undone when the distiller closes)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

from torch import nn

from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError
from kdsl.core.inspecting import inspection
from kdsl.core.resolve import import_module
from kdsl.core.suggest import did_you_mean
from kdsl.io.checkpoint_file import missing_weights, spec_relative
from kdsl.io.weights import load_into
from kdsl.lang import ir
from kdsl.lang.literal import literal_value
from kdsl.lang.refs import call_factory
from kdsl.runtime.freezing import batch_stats_cleanup, frozen_cleanup


def import_plugins(plan: Plan) -> Plan:
    """``import "pkg.module"``: register the components a plugin module declares."""
    for imp in plan.spec.imports:
        try:
            import_module(imp.module, span=imp.module_span)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
    return plan


def _model_for(plan: Plan, decl: ir.ModelDecl, load: bool = True) -> Optional[nn.Module]:
    """The model passed for ``decl``, or the one its factory builds (for inspection when not
    ``load``: a factory may then build on the meta device); None after a diagnostic."""
    model = plan.request.given.get(decl.name)
    if model is None and decl.factory is None:
        plan.diags.error(
            "KD507", f"model '{decl.name}' was not given and has no factory", decl.name_span,
            hint=f"pass {decl.name}=... to kdsl.compile (--{decl.role} on the command line), "
            f"or write {decl.name} = model(\"pkg.module:factory\")")
        return None
    if model is None:
        f = decl.factory
        try:
            with inspection() if not load else contextlib.nullcontext():
                model = call_factory(f.ref, [literal_value(a) for a in f.args],
                                     {k.name: literal_value(k.value) for k in f.kwargs},
                                     f"model '{decl.name}'", f.ref_span or f.span)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            return None
    if not isinstance(model, nn.Module):
        plan.diags.error("KD508", f"model '{decl.name}' is a {type(model).__name__}, not an nn.Module",
                         decl.name_span)
        return None
    return model


def _load_checkpoint(plan: Plan, decl: ir.ModelDecl, model: nn.Module) -> bool:
    """Load ``from "FILE"`` (relative to the spec's file); False after a diagnostic."""
    span, path = decl.checkpoint_span, checkpoint_path(decl)
    if decl.name in plan.request.given:
        # a passed-in model gets its own weights back if compiling fails
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        plan.undo.on_failure.append(lambda m=model, w=saved: m.load_state_dict(w))
    try:
        load_into(model, path, span, what=f"{decl.role} '{decl.name}'")
    except KdslError as exc:
        plan.diags.extend(exc.diagnostics)
        return False
    return True


def build_models(plan: Plan) -> Plan:
    """Every declared model, passed or built, checkpoint loaded; frozen teachers frozen."""
    return _bind(plan, load=True)


def build_models_unloaded(plan: Plan) -> Plan:
    """:func:`build_models` without reading any checkpoint, for ``kdsl check`` and ``kdsl explain``:
    shapes do not need weights. Each ``from "FILE"`` is still looked for: one that is missing (or
    not a regular file) is a KD530 warning at the path in the spec."""
    return _bind(plan, load=False)


def checkpoint_path(decl: ir.ModelDecl) -> str:
    """The file of ``from "FILE"``, relative to the spec file that wrote it."""
    span = decl.checkpoint_span
    base = os.path.dirname(span.file) if span and not span.file.startswith("<") else ""
    return decl.checkpoint if os.path.isabs(decl.checkpoint) else os.path.join(base, decl.checkpoint)


def _look_for_checkpoint(plan: Plan, decl: ir.ModelDecl) -> None:
    _look_for(plan, checkpoint_path(decl), decl.checkpoint_span)


def look_for_connector_weights(plan: Plan) -> Plan:
    """:func:`~kdsl.compiler.params.load_connector_weights` for inspection: each connector's
    ``from "FILE"`` looked for (KD530 when missing), nothing read."""
    for decl in plan.spec.connectors:
        if decl.checkpoint is not None:
            span = decl.checkpoint_span or decl.span
            _look_for(plan, spec_relative(decl.checkpoint, span), span)
    return plan


def _look_for(plan: Plan, path: str, span) -> None:
    for warning in missing_weights(path, span):
        plan.diags.add(warning)


def _bind(plan: Plan, load: bool) -> Plan:
    names = [m.name for m in plan.spec.models]
    for extra in sorted(set(plan.request.given) - set(names)):
        plan.diags.error("KD514", f"kdsl.compile got a model '{extra}' that the spec does not declare",
                         hint=did_you_mean(extra, names) or "the spec declares " +
                         ", ".join(f"'{n}'" for n in names))
    for decl in plan.spec.models:
        model = _model_for(plan, decl, load)
        # a model passed in keeps its own weights, unless the caller asks for the spec's
        weights = decl.checkpoint and (decl.name not in plan.request.given or decl.name in plan.request.load_given)
        if weights and not load:
            _look_for_checkpoint(plan, decl)
        if model is None or (weights and load and not _load_checkpoint(plan, decl, model)):
            continue
        if plan.request.device is not None:
            model.to(plan.request.device)
        for other, m in plan.models.items():
            if m is model:
                plan.diags.error("KD515", f"'{decl.name}' and '{other}' are the same model object",
                                 decl.name_span, hint="pass a separate model for each")
        plan.models[decl.name] = model
    if not load and not plan.diags.has_errors:
        to_meta_if_any(plan)
    if not plan.diags.has_errors:
        for decl in plan.spec.teachers:
            if decl.frozen:
                plan.undo.on_close.append(frozen_cleanup(plan.models[decl.name]))
            if decl.frozen and decl.train_mode:
                plan.undo.on_close.append(batch_stats_cleanup(plan.models[decl.name]))
    return plan


def to_meta_if_any(plan: Plan) -> None:
    """For inspection: when a factory built a model on the meta device (a pretrained model whose
    weights were not read), every model and the example go there too, so that the dry run
    computes shapes on meta tensors throughout (torch does not mix meta and real tensors; the
    dry run moves its example there)."""
    import torch

    if not any(p.is_meta for m in plan.models.values() for p in m.parameters()):
        return
    meta = torch.device("meta")
    for model in plan.models.values():
        model.to(meta)


def stop_if_errors(plan: Plan) -> Plan:
    """Raise the diagnostics found so far, if any is an error: later passes need what failed."""
    plan.diags.raise_if_errors()
    return plan
