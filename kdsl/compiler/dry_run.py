"""The dry run pass: every used model run once on the example input, without gradients, leaving no
trace (buffers and RNG states restored). It records every record's value and shape, calibrates
in-place detection (records that in-place operations overwrite are copied from then on), checks
deliveries, and reports records that never ran."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from kdsl.compiler.dry_env import DryRunEnv
from kdsl.compiler.plan import ParamView, Plan, Skip
from kdsl.compiler.snapshot import Snapshot
from kdsl.core.diagnostics import KdslError, make
from kdsl.lang import ir
from kdsl.runtime.interpret import Interpreter, Unavailable
from kdsl.runtime.recorders import check_missing, tensors_in
from kdsl.runtime.values import as_call, describe_value, info_of


def pass_order(plan: Plan) -> List[str]:
    """The models a step runs, in order: the used teachers, then the student; with stages or
    phases, every model some phase runs (teachers first), generators aside (the input runs them)."""
    if not plan.procedure.declared:
        return plan.used_teachers + [plan.spec.student.name]
    run = {m for s in plan.procedure.stages for p in s.phases for m in p.models_run}
    return [m.name for m in plan.spec.teachers if m.name in run] + \
        [m.name for m in plan.spec.models if m.role == "student" and m.name in run]


def dry_run(plan: Plan) -> Plan:
    """Run the models on the example input, or on the spec's ``input`` (a generator's output),
    and keep what they recorded; nothing without either."""
    if not plan.request.dry:
        return plan
    _example_to_meta(plan)
    snapshot = Snapshot(list(plan.models.values()))
    try:
        with torch.no_grad():
            example = _example(plan)
            if example is _FAILED:
                plan.dry_failed = True
                return plan
            if example is None:
                return plan  # the input needs what the dry run does not have (a batch field)
            if not _run_models(plan, example):
                plan.dry_failed = True
                return plan
        _param_views(plan, [(f"the delivery of {p.decl.target}", p.decl.span, p.decl.source, p.delivery.seen)
                            for p in plan.deliveries])
        for p in plan.deliveries:
            try:
                p.delivery.finish_step()
            except KdslError as exc:
                plan.diags.extend(exc.diagnostics)
        for r in plan.records.values():
            r.recorder.check_overwrites()
        plan.state.calibrating = False
        _read_records(plan)
        _param_views(plan, [(f"record '{n}'", r.decl.span, r.decl.model, plan.values[n])
                            for n, r in plan.records.items() if n in plan.values and r.decl.what != "param"])
    finally:
        plan.state.active = None
        for r in plan.records.values():  # the values live on in plan.values, not in them
            r.recorder.clear()
        snapshot.restore()
    return plan


_FAILED = object()


def _example_to_meta(plan: Plan) -> None:
    """Models built on the meta device for inspection (a pretrained model's weights unread:
    :func:`kdsl.compiler.bind_models.to_meta_if_any`) run on a meta example: the same shapes."""
    if not any(p.is_meta for p in plan.models[plan.spec.student.name].parameters()):
        return
    meta = torch.device("meta")
    on_meta = lambda v: v.to(meta) if isinstance(v, torch.Tensor) else v  # noqa: E731
    request = plan.request
    request.example_input = torch.utils._pytree.tree_map(on_meta, request.example_input)
    request.example_batch = {k: on_meta(v) for k, v in (request.example_batch or {}).items()}


def _example(plan: Plan) -> Any:
    """The example input, or the value of the spec's ``input`` expression (the same interpreter
    as a step's, its models run as their own passes); ``None`` when that needs what the dry run
    lacks, ``_FAILED`` after a diagnostic."""
    if plan.spec.input is None:
        return plan.request.example_input
    try:
        return Interpreter(DryRunEnv(plan)).visit(plan.spec.input.value)
    except KdslError as exc:
        plan.diags.extend(exc.diagnostics)
        return _FAILED
    except Skip:
        return _FAILED
    except Unavailable:
        return None


def _run_models(plan: Plan, example: Any) -> bool:
    """Each model's pass on the example input; False after a diagnostic."""
    args, kwargs = as_call(example)
    for name in pass_order(plan):
        decl = plan.spec.model(name)
        plan.state.active = name
        try:
            plan.models[name](*args, **kwargs)
            plan.ran.append(name)
        except KdslError as exc:
            plan.diags.extend(exc.diagnostics)
            return False
        except Exception as exc:  # noqa: BLE001 - the user's model rejected the input
            _rejected(plan, decl, exc, args)
            return False
        finally:
            plan.state.active = None
    return True


def _rejected(plan: Plan, decl: ir.ModelDecl, exc: Exception, args: Sequence[Any]) -> None:
    """KD516 for a model that failed on the example input: the first line of its error (torch's
    can run to pages of C++ frames), and for an allocation failure, the way out."""
    shapes = "; ".join(describe_value(a) for a in args)
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:300] + "..."
    hints = [f"example input: {shapes if len(shapes) <= 300 else shapes[:300] + '...'}"]
    if isinstance(exc, MemoryError) or "allocate" in text or "out of memory" in text:
        hints.append("the model ran out of memory on the example: the dry run only needs a small "
                     "batch, e.g. --input-shape 2,3,32,32")
    plan.diags.error("KD516", f"the example input could not be run through {decl.role} "
                     f"'{decl.name}': {type(exc).__name__}" + (f": {text}" if text else ""),
                     decl.name_span, hints=hints)


def _read_records(plan: Plan) -> None:
    """Every record's dry-run value; a record that never ran is KD506 (and broken)."""
    for name, r in plan.records.items():
        if r.decl.model not in plan.ran:
            continue  # a model no phase runs (or only the input's generator): nothing to see
        try:
            value = check_missing(r.recorder.read(), r.recorder)
        except KdslError as exc:
            plan.broken.add(name)
            for d in exc.diagnostics:
                if d.code == "KD607":
                    d = _never_ran(plan, name)
                plan.diags.add(d)
            continue
        plan.values[name] = value
        r.info = info_of(value)
        r.description = describe_value(value)


def _param_views(plan: Plan, seen: List[Tuple[str, Any, str, Any]]) -> None:
    """Note each (what, span, model, value) whose value shares its storage with a parameter of the
    model that produced it: harmless on whole models, freed memory once FSDP2 reshards the unit."""
    storages: dict = {}  # model -> {storage: parameter name}, once per model
    for what, span, model_name, value in seen:
        if model_name not in plan.models:
            continue
        if model_name not in storages:
            storages[model_name] = {_storage(p): n for n, p in plan.models[model_name].named_parameters() if p.numel()}
            storages[model_name].pop(None, None)
        for t in tensors_in(value, levels=None):
            param = storages[model_name].get(_storage(t))
            if param is not None:
                plan.param_views.append(ParamView(what, span, model_name, param))
                break


def _storage(t: torch.Tensor) -> Optional[int]:
    """Where ``t``'s storage is; None for a tensor without one of its own (meta, a DTensor: a
    model the caller sharded already)."""
    if t.device.type == "meta":
        return None
    try:
        return t.untyped_storage().data_ptr() or None
    except (RuntimeError, NotImplementedError):
        return None


def _never_ran(plan: Plan, name: str):
    rec = plan.spec.record(name)
    model = plan.spec.model(rec.model)
    whose = f"the {model.role}'s" if model.name == model.role else f"{model.role} '{model.name}''s"
    return make("KD506", f"record '{name}': {rec.describe()} never ran in {whose} forward pass on "
                "the example input", rec.target.span, hint="is it used in forward()? (modules built "
                "but never called, or skipped in this mode, record nothing)")
