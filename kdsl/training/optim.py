"""The learning-rate schedule of a phase, built from the run's ``lr_schedule`` setting: one of the
per-epoch schedules with warm-up (``cosine()``), one chainable piece (``poly(power=0.9)``) or a
``chain(...)`` of pieces (:mod:`kdsl.components.lr_schedules`)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Dict, List, Optional, Tuple

from kdsl.catalog.lr_schedules import CHAIN
from kdsl.catalog.registry import REGISTRY
from kdsl.components.lr_schedules import Chain, Piece
from kdsl.core.diagnostics import Diagnostic, KdslError, error, make
from kdsl.core.suggest import rank_candidates
from kdsl.lang import ir
from kdsl.lang.lr_schedule import OWN_SCHEDULE, is_chain, is_piece, schedule_value, split_own_schedule
from kdsl.lang.param_groups import GROUPS, group_calls
from kdsl.lang.visit import find


Setting = Tuple[str, Dict[str, Any]]
# the distiller's containers whose entries the spec names directly (student.fc.bias, regressor.weight)
_SPEC_SCOPES = ("models.", "connectors.", "loss_modules.")


def spec_named_parameters(distiller) -> List[Tuple[str, Any]]:
    """The distiller's parameters with the names the spec gives them: ``student.fc.bias``, a
    connector's ``regressor.weight``, a learning loss's ``crd.embed_s.weight``."""
    out = []
    for name, p in distiller.named_parameters():
        scope = next((s for s in _SPEC_SCOPES if name.startswith(s)), "")
        out.append((name[len(scope):], p))
    return out


def phase_schedule(own: Optional[Setting], default: Setting) -> Tuple[Optional[Setting], Setting]:
    """A phase's optimizer (``optimize ... with``, None: the train block's) without its own
    ``lr_schedule=``, and the schedule the phase runs: its own, else the train block's."""
    if own is None or OWN_SCHEDULE not in own[1]:
        return own, default
    options = dict(own[1])
    schedule = options.pop(OWN_SCHEDULE)
    return (own[0], options), schedule


def default_lr(name: str, options: Dict[str, Any]) -> float:
    """The learning rate of an optimizer that does not set it: its entry's default, or for one
    given by reference (torch_optimizer), its class's."""
    param = REGISTRY.get("optimizer", name).option("lr")
    if param is not None and not param.required:
        return param.default
    import inspect

    from kdsl.components.training import torch_class

    default = inspect.signature(torch_class("optimizer", options["type"])).parameters.get("lr")
    return float(default.default) if default is not None and isinstance(default.default, (int, float)) else float("nan")


def build_lr_schedule(optimizer, setting: Tuple[str, Dict[str, Any]], *, epochs: int, steps_per_epoch: int):
    """The scheduler of ``optimizer`` over a stage of ``epochs`` epochs of ``steps_per_epoch``
    optimizer steps; it is stepped after every optimizer step."""
    name, options = setting
    if name == CHAIN:
        pieces = [_piece(n, o) for n, o in options["schedules"]]
        return Chain(optimizer, pieces, epochs=epochs, steps_per_epoch=steps_per_epoch)
    impl = REGISTRY.get("lr_schedule", name).load()
    return impl(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)


def _piece(name: str, options: Dict[str, Any]) -> Piece:
    return REGISTRY.get("lr_schedule", name).load().piece(**options)


def pieces_of(setting: Tuple[str, Dict[str, Any]]) -> List[Tuple[str, Dict[str, Any]]]:
    """The chainable pieces of a schedule setting, in order ([] for a per-epoch schedule)."""
    name, options = setting
    if name == CHAIN:
        return list(options["schedules"])
    return [(name, options)] if is_piece(REGISTRY.get("lr_schedule", name)) else []


def span_problem(name: str, options: Dict[str, Any], epochs: int, steps_per_epoch: int) -> Optional[Tuple[str, str]]:
    """(message, option) when the piece does not fit a stage of ``epochs`` epochs of
    ``steps_per_epoch`` optimizer steps; None when it fits."""
    component = REGISTRY.get("lr_schedule", name)
    values = {p.name: p.default for p in component.options}
    values.update(options)
    unit = values["unit"]
    length = epochs if unit == "epoch" else epochs * steps_per_epoch
    what = f"{length} {'epoch' if unit == 'epoch' else 'optimizer step'}{'s' if length != 1 else ''}"
    begin, end = values["begin"], values["end"]
    if end is not None and end > length:
        return f"{name}(...) ends at {unit} {end}, past the end of its stage ({what})", "end"
    stop = end if end is not None else length
    if begin >= stop:
        return f"{name}(...) begins at {unit} {begin} but its stage ends at {unit} {stop}", "begin"
    span = stop - begin
    warmup = values.get("warmup")
    if warmup is not None and warmup >= (values.get("total") or span):
        return f"{name}(...) warms up over {warmup} {unit}s, past its whole span ({values.get('total') or span})", "warmup"
    if values.get("total") is not None and values["total"] > span:
        return f"{name}(...) spans total={values['total']} {unit}s, more than its stage gives it ({span})", "total"
    return None


def check_phase_setups(spec, cfg, distiller, ranges, steps_per_epoch: Dict[str, int]) -> List[Diagnostic]:
    """Before the run trains: each phase's schedule fits its stage (KD770, at the piece), and an
    optimizer or scheduler given by reference names a class that takes its options (KD772).
    ``steps_per_epoch``: optimizer steps of an epoch of each stage (by name), before a phase's
    ``repeat``. Returns the warnings: parameter groups whose pattern matches none of the phase's
    parameters (KD771)."""
    warnings: List[Diagnostic] = []
    for plan, first, end in ranges:
        for phase in plan.phases if end > first else ():
            own, setting = phase_schedule(phase.optimizer, cfg.lr_schedule)
            _check_reference(spec, "optimizer", own or cfg.optimizer)
            _check_reference(spec, "lr_schedule", setting)
            trained = {id(p) for p in distiller.trainable_parameters(plan.name, phase.name)}
            names = [n for n, p in spec_named_parameters(distiller) if id(p) in trained]
            warnings += _unmatched_groups(spec, (own or cfg.optimizer)[1].get(GROUPS, ()), names,
                                          f"phase '{phase.name}' of stage '{plan.name}'" if spec.stages
                                          else "the run")
            steps = steps_per_epoch[plan.name] * phase.repeat
            for k, (name, options) in enumerate(pieces_of(setting)):
                problem = span_problem(name, options, end - first, steps)
                if problem is None:
                    continue
                message, option = problem
                where = f"stage '{plan.name}'" if spec.stages else "the run"
                raise error("KD770", f"{message}: {where} has {end - first} epochs of {steps} "
                            "optimizer steps", _piece_span(spec, setting, k, option),
                            hint="shorten the schedule's span or give the stage more epochs")
    return warnings


def _unmatched_groups(spec, groups, names: List[str], where: str) -> List[Diagnostic]:
    out = []
    calls = group_calls(spec)
    for g in groups:
        if any(fnmatchcase(n, g["pattern"]) for n in names):
            continue
        call = next((c for c in calls if c.args[0].value == g["pattern"]), None)
        close = rank_candidates(g["pattern"].replace("*", ""), names)[:3] or names[:3]
        out.append(make("KD771", f"parameter group \"{g['pattern']}\" matches none of the {len(names)} "
                        f"parameters {where} trains", call.span if call is not None else None,
                        hint="closest names: " + ", ".join(close), severity="warning"))
    return out


_BY_REFERENCE = {"optimizer": "torch_optimizer", "lr_schedule": "torch_scheduler"}


def _check_reference(spec, kind: str, setting: Setting) -> None:
    name, options = setting
    if name != _BY_REFERENCE[kind]:
        return
    from kdsl.components.training import check_torch_options, torch_class

    passed = {k: v for k, v in options.items() if k not in ("type", "unit")}
    try:
        check_torch_options(kind, torch_class(kind, options["type"]), passed)
    except KdslError as exc:
        d = exc.diagnostics[0]
        call = _written_call(spec, kind, setting)
        raise error(d.code, d.message, call.span if call is not None else None,
                    hint=d.hints[0] if d.hints else None) from None


def _piece_span(spec, setting: Setting, index: int, option: str):
    """Where the spec writes the ``index``-th piece's ``option`` of the schedule ``setting`` (the
    train block's, or an ``optimize ... with`` optimizer's own); else the piece; else nothing."""
    call = _schedule_call(spec, setting)
    if call is None:
        return None
    piece = call.args[index] if is_chain(call) else call
    if not isinstance(piece, ir.Call):
        return piece.span
    keyword = next((k for k in piece.kwargs if k.name == option), None)
    return keyword.span if keyword is not None else piece.span


def _schedule_call(spec, setting: Setting) -> Optional[ir.Call]:
    return _written_call(spec, "lr_schedule", setting)


def _written_call(spec, kind: str, setting: Setting) -> Optional[ir.Call]:
    """The call of the spec whose value is ``setting``: the train block's ``optimizer`` or
    ``lr_schedule``, or one given with an ``optimize ... with`` optimizer."""
    from kdsl.lang.procedure import optimizer_setting

    optimizers = [o.optimizer for o in find(spec, ir.OptimizeDecl) if o.optimizer is not None]
    if kind == "optimizer":
        written = [(c, optimizer_setting(split_own_schedule(c)[0])) for c in optimizers]
    else:
        written = [(k.value, schedule_value(k.value)) for c in optimizers for k in c.kwargs
                   if k.name == OWN_SCHEDULE and isinstance(k.value, ir.Call)]
    train = spec.train.get(kind) if spec.train is not None else None
    if train is not None and isinstance(train.value, ir.Call):
        value = schedule_value(train.value) if kind == "lr_schedule" else optimizer_setting(train.value)
        written.append((train.value, value))
    return next((c for c, value in written if _same(value, setting)), None)


def _same(a: Setting, b: Setting) -> bool:
    return repr(a) == repr(b)


def setup_warnings(spec, cfg, distiller, ranges, steps_per_epoch: Dict[str, int]) -> List[str]:
    """What the run's first lines warn of, rendered: parameter groups that match nothing
    (:func:`check_phase_setups`, which also refuses a schedule that does not fit), and the steps
    an accumulation leaves over at each epoch's end. ``steps_per_epoch``: each stage's (by name)."""
    from kdsl.core.diagnostics import render
    from kdsl.training.accumulate import optimizer_steps, remainder_note

    if cfg.zero_grad == "after_step" and cfg.checkpoint_every:
        written = spec.train.get("zero_grad") if spec.train is not None else None
        raise error("KD773", "zero_grad = \"after_step\" carries gradients from one step to the next, which a "
                    "checkpoint within an epoch does not hold: --checkpoint-every could not resume it exactly",
                    written.span if written is not None else None,
                    hint="checkpoint at the epochs' ends only (carried gradients are cleared when an epoch starts)")
    if cfg.batch_sampler and cfg.checkpoint_every:
        written = spec.train.get("batch_sampler") if spec.train is not None else None
        raise error("KD778", "a batch sampler orders an epoch's batches itself, so a checkpoint within an "
                    "epoch (--checkpoint-every) could not tell where to resume", written.value.span if written else None,
                    hint="checkpoint at the epochs' ends only")
    per_epoch = {name: optimizer_steps(steps, cfg.accumulate) for name, steps in steps_per_epoch.items()}
    found = check_phase_setups(spec, cfg, distiller, ranges, per_epoch)
    notes = []
    for plan, first, end in ranges:
        note = remainder_note(steps_per_epoch[plan.name], cfg.accumulate) if end > first else None
        if note and note not in notes:
            notes.append(note if len(ranges) == 1 else f"stage '{plan.name}': {note}")
    return [render([w], spec.sources) for w in found] + notes
