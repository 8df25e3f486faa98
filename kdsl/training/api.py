"""``kdsl.train``: a distillation run from Python, the same function ``kdsl train`` calls."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.io.models import ModelChoice, apply_model_choice, refuse_random_teachers
from kdsl.lang import ir
from kdsl.training.config import resolve_config
from kdsl.training.data import load_data
from kdsl.training.distributed import check_amp, end_distributed, init_distributed, pick_device
from kdsl.training.eval_only import evaluate_run
from kdsl.training.loop import Trainer
from kdsl.training.report import Reporter, RunInterrupted, RunResult
from kdsl.training.batch_transform import DRY_RUN_STEP, run_transform
from kdsl.training.rng import seed_everything
from kdsl.training.visualize import visualizer_for
from kdsl.training.rundir import RunDir
from kdsl.training.threads import apply_threads

ModelArg = Union[str, nn.Module, None]


def train(spec: Union[str, "os.PathLike[str]", ir.Spec], *, out: Optional[str] = None, student: ModelArg = None,
          teacher: ModelArg = None, models: Union[Mapping[str, Union[str, nn.Module]], Sequence[str], None] = None,
          teacher_ckpt: Optional[str] = None, resume: bool = False, eval_only: bool = False,
          overwrite: bool = False, reporter: Optional[Reporter] = None, **settings: Any) -> RunResult:
    """Train the student of ``spec`` (a path or a loaded :class:`kdsl.Spec`) and return the result.

    ``student``, ``teacher`` (a spec with one teacher) and ``models`` (by spec name, or
    ``"NAME=REF"`` texts as ``--model`` takes them) replace the spec's models: a reference
    ``"pkg.module:factory(k=v)"`` or a built ``nn.Module``, which keeps its own weights (the
    spec's ``from "FILE"`` is not loaded into it); ``teacher_ckpt`` replaces the teacher's
    checkpoint, and is loaded into a passed teacher too. ``settings`` are the training settings of
    :data:`kdsl.catalog.settings.SETTINGS` (``epochs=1``, ``threads=1``,
    ``optimizer="adam(lr=1e-3)"``, ``data="kdsl.data:digits(batch_size=32)"``, ...): they
    override the spec's train block, as command-line flags do. ``out`` is the run directory
    (default ``runs/SPEC_NAME``); ``params={"tau": 2}`` (the ``params`` setting, ``--set tau=2``)
    gives the spec's params these values, checked as the spec's own (summary.json records each
    param's source); ``resume`` continues the run there, ``eval_only`` evaluates its
    student, ``overwrite`` replaces it. Progress goes to ``reporter`` (none: silent).

    Raises :class:`kdsl.KdslError` for every problem, before any file is written where it can.
    """
    from kdsl.lang.loader import load, with_params

    if resume and overwrite:
        raise error("KD701", "--resume and --overwrite contradict each other")
    params = settings.pop("params", None)  # values for the spec's params: checked as the spec's
    loaded = with_params(spec, params) if isinstance(spec, ir.Spec) else load(os.fspath(spec), params)
    cfg = resolve_config(loaded, dict(settings, out=out))
    if not cfg.allow_random_teacher:  # KD730 before anything is built or written
        refuse_random_teachers(loaded, student, teacher, models, teacher_ckpt)
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    check_amp(cfg.amp, device)
    if cfg.threads:  # given: in effect for the data loading and the dry run too
        torch.set_num_threads(cfg.threads)
    dist = init_distributed(device, cfg.collective_timeout)
    run_dir = RunDir(cfg.out, writer=dist.main)
    run_dir.prepare(resume=resume, eval_only=eval_only, overwrite=overwrite)
    if resume and not run_dir.has_checkpoint():  # killed before its first checkpoint: one rule
        if reporter is not None and dist.main:
            reporter.warning(f"nothing to resume in {run_dir.path}: no epoch was saved; starting the run "
                             "from its first epoch")
        resume = False
    try:
        result = _run(loaded, cfg, run_dir, device, dist, reporter, student, teacher, models, teacher_ckpt,
                      resume, eval_only)
    except BaseException:  # a run that failed before saving an epoch leaves nothing behind
        run_dir.abandon()
        raise
    end_distributed(dist)  # here, where the run's models (which refer to the group) are garbage
    return result


def _run(loaded: ir.Spec, cfg, run_dir: RunDir, device, dist, reporter, student, teacher, models,
         teacher_ckpt, resume: bool, eval_only: bool) -> RunResult:
    """The run in a prepared run directory: data, models, the distiller, then training (or
    evaluation)."""
    seed_everything(cfg.seed)
    # a generator's run may have no data at all (it then evaluates nothing)
    data = None if cfg.data is None and loaded.input is not None else \
        load_data(cfg, dist.rank, dist.world, _data_span(loaded, cfg), _setting_spans(loaded, cfg))
    chosen, given = _models(loaded, student, teacher, models or {}, teacher_ckpt)
    load = _weights_to_load(chosen, given, student, teacher, models or {}, teacher_ckpt)
    transform = run_transform(loaded, cfg, data)
    distiller = _compile(chosen, given, data, device, cfg.inputs, compile_models=bool(cfg.compile),
                          truncate=cfg.truncate, load_weights=load, batch_size=cfg.batch_size, transform=transform)
    apply_threads(cfg, [distiller.student, *distiller.teachers.values()])
    with distiller:
        distiller.to(device)
        trainer = Trainer(chosen, cfg, distiller, data, run_dir, device, dist,
                          reporter if reporter is not None and dist.main else Reporter())
        trainer.transform = transform
        trainer.visualizer = visualizer_for(chosen, cfg, data, run_dir, device, distiller) if dist.main and not eval_only else None
        if cfg.teacher_cache and not eval_only:  # checked against this run before any step
            from kdsl.training.teacher_store import open_for_run

            trainer.teacher_store = open_for_run(chosen, cfg, distiller, data)
        if eval_only:
            result = evaluate_run(trainer)
        else:
            result = _fit(trainer, resume)
    return result


def _setting_spans(spec: ir.Spec, cfg) -> Dict[str, Any]:
    """Where the train block writes the batching references the run uses (collate, batch_sampler)."""
    found = {k: spec.train.get(k) for k in ("collate", "batch_sampler")
             if spec.train is not None and cfg.sources.get(k) == "spec"}
    return {k: s.value.span for k, s in found.items() if s is not None}


def _data_span(spec: ir.Spec, cfg):
    """Where the spec names the run's data (its reference), when the data is the spec's."""
    setting = spec.train.get("data") if cfg.sources.get("data") == "spec" else None
    if setting is None:
        return None
    value = setting.value
    return (value.args[0].span if isinstance(value, ir.Call) and value.args else value.span) or setting.span


def _fit(trainer: Trainer, resume: bool) -> RunResult:
    """``trainer.fit``; Ctrl-C becomes :class:`RunInterrupted`, which says what the checkpoint
    holds; the loggers are closed on every path."""
    try:
        return trainer.fit(resume=resume)
    except KeyboardInterrupt:
        raise RunInterrupted(trainer.run_dir.path, trainer.committed, trainer.cfg.epochs,
                             trainer.committed_steps) from None
    finally:
        trainer.log.close()


def _models(spec: ir.Spec, student: ModelArg, teacher: ModelArg, models,
            teacher_ckpt: Optional[str]) -> Tuple[ir.Spec, Dict[str, nn.Module]]:
    """The spec (with ``teacher_ckpt`` swapped in) and the models given by the caller: references
    are built as the command line builds them, modules are taken as they are."""
    modules: Dict[str, nn.Module] = {}
    if isinstance(student, nn.Module):
        modules[spec.student.name] = student
        student = None
    if isinstance(teacher, nn.Module):
        if len(spec.teachers) != 1:
            raise error("KD701", f"teacher= is for a spec with one teacher; this one has {len(spec.teachers)}",
                        hint="pass models={NAME: model} for a particular model")
        modules[spec.teachers[0].name] = teacher
        teacher = None
    refs = [] if isinstance(models, Mapping) else list(models)
    for name, value in (models.items() if isinstance(models, Mapping) else ()):
        if isinstance(value, nn.Module):
            modules[name] = value
        else:
            refs.append(f"{name}={value}")
    chosen, given = apply_model_choice(spec, ModelChoice(student, teacher, refs, teacher_ckpt))
    given.update(modules)
    return chosen, given


def _weights_to_load(spec: ir.Spec, given: Dict[str, nn.Module], student: ModelArg, teacher: ModelArg, models,
                     teacher_ckpt: Optional[str]) -> List[str]:
    """The given models that get the spec's ``from`` weights: those built from references (as the
    spec's own are), and a passed teacher when ``teacher_ckpt`` asks for it; a module passed in
    otherwise keeps its own weights."""
    passed = {n for n, v in (models.items() if isinstance(models, Mapping) else ()) if isinstance(v, nn.Module)}
    passed |= {spec.student.name} if isinstance(student, nn.Module) else set()
    passed |= {spec.teachers[0].name} if isinstance(teacher, nn.Module) else set()
    return [n for n in given if n not in passed or (teacher_ckpt and len(spec.teachers) == 1
                                                     and n == spec.teachers[0].name)]


def _compile(spec: ir.Spec, given: Dict[str, nn.Module], data, device: torch.device, inputs=None,
             compile_models: bool = False, truncate: bool = True, load_weights: Optional[List[str]] = None,
             batch_size: Optional[int] = None, transform=None):
    """The distiller, dry-run on one validation batch (its loader draws no global randomness);
    a run whose input is generated dry-runs on the generator's output."""
    from kdsl.compiler.compiler import compile as compile_spec

    if load_weights is None:  # every model built from a reference (the command line's)
        load_weights = list(given)
    for m in given.values():
        m.to(device)
    if spec.input is not None:
        return compile_spec(spec, device=device, compile_models=compile_models, truncate=truncate,
                            load_weights=load_weights, batch_size=batch_size, **given)
    from kdsl.training.batches import model_call

    example = next(iter(data.val))  # the losses are checked on the batches they will get
    example = transform(example, 0, DRY_RUN_STEP) if transform is not None else example
    call = model_call(example, inputs, device)  # keyword batches: a dict example input
    example = call.kwargs if call.kwargs else call.args[0]
    fields = dict(call.fields, target=call.target) if call.target is not None else call.fields
    return compile_spec(spec, example_input=example, example_batch=fields, device=device,
                        compile_models=compile_models, truncate=truncate, load_weights=load_weights,
                        batch_size=batch_size, **given)
