"""Resuming a run: what may not change between the run and its resumption, and the repair of the
files a killed run left ahead of (or behind) its checkpoint.

A resumed run must continue the run it resumes, bit for bit: the settings that decide what is
trained (:data:`RUN_SETTINGS`) and the shapes of everything the checkpoint holds must be the
ones the run started with, or the resumption is refused (KD703) naming the setting and both
values (``best_metric`` too: best.pt holds the best epoch by the metric the run started with).
Settings that only decide where or how fast it runs, or what it reports (device, threads,
num_workers, eval_teachers, tensorboard, progress_every, and compile, truncate and teacher_cache,
which leave every value the same), may change; environment.json records each session's.

A longer run is not a resumption: ``--epochs 60`` after a 30-epoch run would stretch a schedule
already spent (the cosine schedule jumps back up), so it is refused with a hint to start a new
run initialised from this one's student.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from kdsl.catalog.settings import METRICS
from kdsl.core.diagnostics import error
from kdsl.training.metrics import best_epoch

# The settings that decide what a run trains; a resumption must keep every one of them.
RUN_SETTINGS = ("epochs", "steps_per_epoch", "batch_size", "drop_last", "data", "optimizer", "lr",
                "lr_schedule", "seed", "amp", "grad_clip", "accumulate", "best_metric", "inputs", "task")

_FLAGS = {"epochs": "--epochs", "steps_per_epoch": "--steps-per-epoch", "batch_size": "--batch-size",
          "data": "--data", "optimizer": "--optimizer", "lr": "--lr", "seed": "--seed", "amp": "--amp",
          "best_metric": "--best-metric", "accumulate": "--accumulate"}


def _shown(name: str, value: Any) -> str:
    """A setting's value as the command line or the train block writes it."""
    if name in ("optimizer", "lr_schedule", "data") and isinstance(value, (list, tuple)) and len(value) == 2:
        ref, options = value
        args = ", ".join(f"{k}={v!r}" for k, v in (options or {}).items())
        return f"{ref}({args})"
    return "none" if value is None else str(value)


def check_same_run(saved: Dict[str, Any], now: Dict[str, Any], path: str) -> None:
    """KD703 when a setting of :data:`RUN_SETTINGS` differs between the checkpoint's config
    (``saved``) and this resumption's (``now``, both ``TrainConfig.describe()``). A setting the
    checkpoint does not record (a run of an older kdsl) is not compared."""
    for name in RUN_SETTINGS:
        if name not in saved or saved[name] == now.get(name):
            continue
        old, new = _shown(name, saved[name]), _shown(name, now.get(name))
        where = _FLAGS.get(name, name)
        if name == "epochs":
            hint = (f"resume with --epochs {old}; to train longer, start a new run (--out NEW) whose student "
                    f"is loaded from this one's (student = model(...) from \"{os.path.dirname(path)}/student.pt\"), "
                    "so that its schedule spans all of its epochs")
        else:
            hint = f"resume with {where} {old} (what the run started with), or start a new run with --out"
        raise error("KD703", f"the run in {os.path.dirname(path)} was started with {name} = {old}; "
                    f"resuming it with {name} = {new} would change the run", hint=hint)


def check_state_fits(saved: Dict[str, Any], own: Dict[str, Any], path: str) -> None:
    """KD703 when the checkpoint's distiller state does not fit this run's models: a model of
    another architecture (a different --student or --model), named by its first differing entry."""
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    if missing or extra:
        which = f"'{missing[0]}' is missing from it" if missing else f"it holds '{extra[0]}', which this run lacks"
        raise error("KD703", f"{path} does not fit this run's models: {which}",
                    hint="resume with the models (--student, --model) that started the run")
    for k, v in own.items():
        if tuple(saved[k].shape) != tuple(v.shape):
            raise error("KD703", f"{path} does not fit this run's models: '{k}' is "
                        f"{list(saved[k].shape)} there and {list(v.shape)} here",
                        hint="resume with the models (--student, --model) that started the run")


def repair(trainer, state: Dict[str, Any], ranges) -> List[str]:
    """Rewrite, from the checkpoint just restored into ``trainer``, every derived file of the run
    directory that disagrees with it (a kill between the files of an epoch leaves them so); the
    names rewritten or removed. Files that agree are left untouched."""
    rd, distiller, epoch = trainer.run_dir, trainer.distiller, state["epoch"]
    if not rd.writer:
        return []
    fixed: List[str] = []
    weights = [("student.pt", distiller.student)]
    weights += [(os.path.join("models", f"{n}.pt"), m) for n, m in distiller.trainable_models().items()]
    for name, module in weights:
        if not rd.weights_agree(name, module):
            rd.write_weights(name, module)
            fixed.append(name)
    for plan, _first, end in ranges:
        name = os.path.join("connectors", f"{plan.name}.pt")
        if end > epoch and rd.remove(name):  # written for a stage end the checkpoint never reached
            fixed.append(name)
    history = trainer.history
    fixed += _repair_best(trainer, epoch, state["config"].get("best_metric"))
    if not rd.metrics_agree(history):
        rd.write_metrics(history)
        if history:
            rd.write_curves(history, trainer.teachers)
        else:  # no epoch in the checkpoint: a curve of epoch 1 belongs to no run
            rd.remove("curves.png")
        fixed += ["metrics.jsonl", "metrics.csv", "curves.png"]
    if not rd.summary_agrees(epoch, history):
        rd.write_summary(progress_summary(trainer, epoch))
        fixed.append("summary.json")
    if fixed:
        trainer.reporter.warning(f"repaired {', '.join(fixed)} from checkpoint.pt (epoch {epoch}): "
                                 "the last run stopped between writing them and its checkpoint")
    return fixed


def run_best(trainer) -> Optional[Dict[str, Any]]:
    """The run's best epoch so far (:func:`~kdsl.training.metrics.best_epoch` of its history, by
    the ``best_metric`` setting, else the task's primary metric)."""
    return best_epoch(trainer.history, getattr(trainer, "task", None), trainer.cfg.best_metric)


def write_best(trainer, epochs_done: int, best: Optional[Dict[str, Any]]) -> None:
    """best.pt, when epoch ``epochs_done`` is the best (called after its checkpoint: see
    :mod:`kdsl.training.rundir` on why best.pt follows the commit point)."""
    if best is not None and best["epoch"] == epochs_done:
        trainer.run_dir.write_weights("best.pt", trainer.distiller.student)


def _repair_best(trainer, epoch: int, metric: Optional[str]) -> List[str]:
    """best.pt against the checkpoint's history, by the checkpoint's ``metric`` (an --eval-only
    given another --best-metric must not rewrite it): rebuilt from the checkpoint's student when
    the checkpoint's last epoch is the best (a kill between the checkpoint and best.pt); removed
    when the history has no best (a best.pt of a run the checkpoint does not hold). A best.pt of an
    earlier epoch is not in the checkpoint, so it is kept as it is; a missing one is a warning."""
    if not isinstance(metric, str) or metric not in METRICS:
        metric = None  # a run of an older kdsl, or a hand-edited config: the default metric
    rd, best = trainer.run_dir, best_epoch(trainer.history, getattr(trainer, "task", None), metric)
    if best is None:
        return ["best.pt"] if rd.remove("best.pt") else []
    if best["epoch"] == epoch:
        if rd.weights_agree("best.pt", trainer.distiller.student):
            return []
        rd.write_weights("best.pt", trainer.distiller.student)
        return ["best.pt"]
    if not os.path.isfile(rd.file("best.pt")):
        trainer.reporter.warning(f"best.pt (epoch {best['epoch']}) is missing from {rd.path} and cannot be "
                                 "rebuilt: the checkpoint holds the last epoch's weights only")
    return []


def progress_summary(trainer, epochs_done: int) -> Dict[str, Any]:
    """summary.json of a run after ``epochs_done`` epochs (the end of the run writes the full one)."""
    return {"spec": trainer.spec.file, "epochs_done": epochs_done, "teachers": trainer.teachers,
            "best": run_best(trainer), "history": trainer.history, "config": trainer.cfg.describe()}


def nan_hint(run_dir) -> str:
    """Where a run that hit a non-finite loss can restart from: its last checkpoint, if any."""
    hint = "lower the learning rate or the term's weight"
    if run_dir.has_checkpoint():
        return hint + f"; the last good checkpoint is in {run_dir.path} (--resume continues from it)"
    return hint + "; no epoch finished, so there is no checkpoint to go back to"


def zero_steps_problem(data, cfg) -> Optional[str]:
    """Why an epoch over ``data`` would train nothing (an empty training set, or drop_last with a
    batch larger than it), or None."""
    if len(data.train) > 0:
        return None
    if data.train_size == 0:
        return "the training set is empty: every epoch would train 0 steps"
    return (f"drop_last = true with batch_size {cfg.batch_size} larger than the training set "
            f"({data.train_size} samples per process): every epoch would drop its only batch and train 0 steps")
