"""Resuming a run: what may not change between the run and its resumption, and the repair of the
files a killed run left ahead of (or behind) its checkpoint.

A resumed run must continue the run it resumes, bit for bit: the settings that decide what is
trained (:data:`~kdsl.catalog.settings.RUN_SETTINGS`: the table's settings that are not
``resumable``) and the shapes of everything the checkpoint holds must be the
ones the run started with, or the resumption is refused (KD703) naming the setting and both
values (``best_metric`` too: best.pt holds the best epoch by the metric the run started with).
Settings that only decide where or how fast it runs, or what it reports (the table's
``resumable`` ones: device, threads, tensorboard, ...), may change; environment.json records each
session's. A refusal's hint gives the run's value as the command line takes it, so it pastes back.

A longer run is not a resumption: ``--epochs 60`` after a 30-epoch run would stretch a schedule
already spent (the cosine schedule jumps back up), so it is refused with a hint to start a new
run initialised from this one's student.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Dict, List, Optional, Tuple

from kdsl.catalog.settings import BY_NAME, METRICS, RUN_SETTINGS, Setting
from kdsl.core.diagnostics import error
from kdsl.lang.printer import value_text
from kdsl.training.config import flag_words, lr_of
from kdsl.training.metrics import best_epoch


def _shown(name: str, value: Any, config: Dict[str, Any]) -> str:
    """A setting's value as the train block writes it; an unset lr with the one it stands for."""
    text = value_text(value)
    if name == "lr" and value is None:
        try:
            return f"{text} (the optimizer's lr {value_text(lr_of(tuple(config['optimizer'])))})"
        except (KeyError, TypeError, AttributeError):  # an optimizer this kdsl does not know
            return text
    return text


def config_problem(saved: Any) -> Optional[str]:
    """What makes a checkpoint's ``config`` unusable to guard a resumption (it lacks a setting of
    :data:`RUN_SETTINGS`, or holds a value the setting cannot take), or None. Without its settings
    a checkpoint could be resumed into any run: it is damaged."""
    if not isinstance(saved, dict):
        return "is not a table of settings"
    for name in RUN_SETTINGS:
        if name not in saved:
            return f"lacks the setting '{name}'"
        problem = _value_problem(BY_NAME[name], saved[name])
        if problem:
            return f"holds {name} = {value_text(saved[name]) if _printable(saved[name]) else type(saved[name]).__name__}, " \
                   f"which {problem}"
    return None


def _printable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_printable(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _printable(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def _value_problem(setting: Setting, value: Any) -> Optional[str]:
    """Why ``value`` (as ``TrainConfig.describe()`` writes it) is not one of ``setting``'s."""
    if setting.call is not None:
        is_call = isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], dict)
        # a call setting without a value: no data (a generator's run), no batch transform
        return None if is_call or (value is None and setting.default is None) else "is not a call"
    if not setting.type.accepts(value):
        return f"is not {setting.type.describe()}"
    problem = setting.range_problem(value)
    return problem.replace("must", "should") if problem else None


def resume_hint(setting: Setting, value: Any) -> str:
    """How to resume with the value ``value`` the run started with, in words that paste back."""
    words = flag_words(setting, value)
    if words:
        how = "resume with " + " ".join(shlex.quote(w) for w in words)
    elif setting.flag is not None:  # none: no flag value says it
        how = f"resume without {setting.flag}"
    elif setting.data_option:
        how = f"resume with the data option {setting.name}={value_text(value)} (in dataset(...) or --data)"
    else:
        how = f"resume with `{setting.name} = {value_text(value)}` in the train block"
    return how + " (what the run started with), or start a new run with --out"


def check_same_run(saved: Dict[str, Any], now: Dict[str, Any], path: str,
                   worlds: Tuple[Optional[int], int] = (None, 1)) -> None:
    """KD703 when a setting of :data:`RUN_SETTINGS` differs between the checkpoint's config
    (``saved``) and this resumption's (``now``, both ``TrainConfig.describe()``), or when the
    checkpoint's config is damaged (:func:`config_problem`). ``worlds``: the processes of the run
    (None: a checkpoint that does not say) and of this resumption; at another world size
    ``batch_size`` (per process) must change so that the global batch stays the run's."""
    damaged = config_problem(saved)
    if damaged:
        raise error("KD703", f"{path} is damaged: its 'config' {damaged}",
                    hint="start a new run with --out or --overwrite")
    rescaled = isinstance(worlds[0], int) and worlds[0] != worlds[1]  # the global batch is what must stay
    for name in RUN_SETTINGS:
        if name == "batch_size" and rescaled:
            _check_global_batch(saved[name], now.get(name), worlds, path)
            continue
        if saved[name] == now.get(name):
            continue
        old, new = _shown(name, saved[name], saved), _shown(name, now.get(name), now)
        if name == "epochs":
            hint = (f"resume with --epochs {old}; to train longer, start a new run (--out NEW) whose student "
                    f"is loaded from this one's (student = model(...) from \"{os.path.dirname(path)}/student.pt\"), "
                    "so that its schedule spans all of its epochs")
        else:
            hint = resume_hint(BY_NAME[name], saved[name])
        raise error("KD703", f"the run in {os.path.dirname(path)} was started with {name} = {old}; "
                    f"resuming it with {name} = {new} would change the run", hint=hint)


def _check_global_batch(old: Any, new: Any, worlds: Tuple[Optional[int], int], path: str) -> None:
    """KD703 when a resumption at another world size changes the global batch (``batch_size`` is
    per process): every step must train on the same samples as the run's."""
    if isinstance(new, int) and old * worlds[0] == new * worlds[1]:
        return
    total, world = old * worlds[0], worlds[1]
    how = f"resume with --batch-size {total // world} (the global batch {total} over {_processes(world)})" \
        if total % world == 0 else f"the global batch {total} does not split over {_processes(world)}: " \
        "resume with a number of processes that divides it"
    raise error("KD703", f"the run in {os.path.dirname(path)} trained on a global batch of {old} x "
                f"{_processes(worlds[0])}; {value_text(new)} x {_processes(world)} would change the run",
                hint=how + ", or start a new run with --out")


def _processes(n: int) -> str:
    return f"{n} process" + ("es" if n != 1 else "")


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
    within = state.get("within") is not None  # the models are mid-epoch: the weights files are the last epoch's
    weights = [] if within else [("student.pt", distiller.student)]
    weights += [] if within else [(os.path.join("models", f"{n}.pt"), m)
                                  for n, m in distiller.trainable_models().items()]
    for name, module in weights:
        if not rd.weights_agree(name, module):
            rd.write_weights(name, module)
            fixed.append(name)
    for plan, _first, end in ranges:
        name = os.path.join("connectors", f"{plan.name}.pt")
        if end > epoch and rd.remove(name):  # written for a stage end the checkpoint never reached
            fixed.append(name)
    history = trainer.history
    if not within:
        fixed += _repair_best(trainer, epoch, state["config"].get("best_metric"))
    if not rd.metrics_agree(history):
        rd.write_metrics(history)
        if history:
            rd.write_curves(history, trainer.teachers)
        else:  # no epoch in the checkpoint: a curve of epoch 1 belongs to no run
            rd.remove("curves.png")
        fixed += ["metrics.jsonl", "metrics.csv", "curves.png"]
    validations = list(state.get("validations") or [])
    if not rd.validations_agree(validations):  # rows of validations after the checkpoint: redone
        if validations:
            rd.write_validations(validations)
        else:
            rd.remove("validation.jsonl")
        fixed.append("validation.jsonl")
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
