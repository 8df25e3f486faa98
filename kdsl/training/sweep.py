"""``kdsl sweep SPEC``: search the spaces a spec's params declare with Optuna (#25 item 5).

``param tau = 4 search uniform(1, 8)`` declares what is searched. Each trial is an ordinary
``kdsl train`` run (:func:`kdsl.training.api.train`, the params given as ``params=``) in its own
run directory ``DIR/trial-NNN``; its objective is the run's best metric (``best_metric``, by
default the task's primary one) in that metric's direction. After each epoch the trial reports
its validation metric to Optuna (:class:`TrialReporter`, the trainer's reporter), and a trial that
Optuna's median pruner finds poor (after the first third of its epochs) is stopped there. The study lives in ``DIR/study.db`` (SQLite),
so a sweep that is killed resumes where it stopped when run again (finished trials kept, a trial
killed in flight is failed once its heartbeat goes stale and does not count), and several
processes given the same directory share the work. The first trial of a new sweep is the spec as
written. Afterwards :mod:`kdsl.training.sweep_report` writes the summary.

Optuna is an optional extra (``pip install 'kdsl[sweep]'``), imported only here (KD750 without it).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from kdsl.core.diagnostics import KdslError, error
from kdsl.lang import ir
from kdsl.lang.params import GivenValues
from kdsl.lang.search_spaces import search_values
from kdsl.training.report import Reporter
from kdsl.training.sweep_report import finished, trial_line

STUDY = "study.db"
STUDY_NAME = "kdsl-sweep"
# A trial whose process died stops beating; after the grace period the next process to start a
# trial fails it (Optuna's stale-trial check), so it never counts towards --trials.
HEARTBEAT_S, GRACE_S = 10, 30


@dataclass
class Sweep:
    """What one sweep searches: the spec (with the params fixed by ``--set``), the searched params,
    the training settings of every trial, and the objective."""

    spec_path: str
    spec: ir.Spec
    fixed: Dict[str, Any]  # params fixed by --set / params=: not searched
    spaces: List[ir.ParamDecl]
    settings: Dict[str, Any]
    metric: str
    direction: str  # "maximize" or "minimize"
    out: str
    epochs: int = 1  # of every trial: pruning waits for the first third of them
    identity: Dict[str, Any] = field(default_factory=dict)


def optuna_module():
    """The optuna module; KD750 with the install line when it is not installed."""
    try:
        import optuna
    except ImportError:
        raise error("KD750", "kdsl sweep needs Optuna, which is not installed",
                    hint="pip install 'kdsl[sweep]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # kdsl prints a line per trial itself
    return optuna


def plan_sweep(spec_path: str, out: Optional[str] = None, params: GivenValues = None,
               **settings: Any) -> Sweep:
    """The sweep of ``spec_path``, checked before any trial: the spec with ``params`` (fixed
    values), its search spaces (KD751 when there are none) and the objective."""
    from kdsl.catalog.settings import METRICS
    from kdsl.lang.loader import load
    from kdsl.lang.search_spaces import param_record
    from kdsl.training.config import resolve_config

    spec = load(spec_path, params)
    spaces = [p for p in spec.params if p.search is not None and p.given is None]
    if not spaces:
        searched = [p.name for p in spec.params if p.search is not None]
        raise error("KD751", f"{spec_path} declares no search space" + (
            f" left to search: --set fixes {', '.join(searched)}" if searched else ""),
            hint="declare one beside a param: param tau = 4 search uniform(1, 8)")
    cfg = resolve_config(spec, dict(settings))
    metric = cfg.best_metric or ("val_ppl" if cfg.task == "lm" else "val_top1")
    record = param_record(spec)
    fixed = {name: entry["value"] for name, entry in record.items() if entry["source"] != "spec"}
    stem = os.path.splitext(os.path.basename(spec_path))[0]
    sweep = Sweep(spec_path, spec, fixed, spaces, {k: v for k, v in settings.items() if v is not None},
                  metric, "maximize" if METRICS.get(metric, "max") == "max" else "minimize",
                  os.path.normpath(out or os.path.join("sweeps", stem)), cfg.epochs)
    sweep.identity = {"spec": os.path.abspath(spec_path), "fixed": fixed, "settings": _jsonable(sweep.settings),
                      "spaces": {p.name: [p.search.func, list(search_values(p))] for p in spaces},
                      "metric": metric}
    return sweep


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def open_study(sweep: Sweep, overwrite: bool = False, seed: int = 0, prune: bool = True):
    """The sweep's study in ``DIR/study.db``: created (its first trial the spec as written), or
    loaded to resume when it is this sweep's (KD752 when it is another's)."""
    optuna = optuna_module()
    path = os.path.join(sweep.out, STUDY)
    if overwrite and os.path.isdir(sweep.out):
        shutil.rmtree(sweep.out)
    try:
        os.makedirs(sweep.out, exist_ok=True)
    except OSError as exc:
        raise error("KD706", f"cannot create the sweep directory {sweep.out}: {exc.strerror or exc}") from None
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what resumes need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(path)}", heartbeat_interval=HEARTBEAT_S,
                                             grace_period=GRACE_S,
                                             engine_kwargs={"connect_args": {"timeout": 60}})
    # early epochs say little (a cosine schedule's first epochs are noisy): no pruning in the
    # first third of a trial's epochs, nor before four trials have finished
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, sweep.epochs // 3)) \
        if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=sweep.direction,
                                pruner=pruner, load_if_exists=True)
    # seeded, and by how far the study has come: a resumed sweep (or a second process) must not
    # draw the same values as the run before it
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.get_trials(deepcopy=False)))
    saved = study.user_attrs.get("kdsl")
    if saved is None:
        study.set_user_attr("kdsl", sweep.identity)
        study.enqueue_trial({p.name: _spec_value(p) for p in sweep.spaces}, user_attrs={"first": True})
    elif saved != _jsonable(sweep.identity):
        differ = sorted(k for k in sweep.identity if saved.get(k) != _jsonable(sweep.identity[k]))
        raise error("KD752", f"{sweep.out} holds a sweep with other {', '.join(differ)}",
                    hint="choose another --dir, or --overwrite to replace it")
    return study


def _spec_value(p: ir.ParamDecl) -> Any:
    from kdsl.lang.literal import literal_value

    return literal_value(p.value)


class TrialReporter(Reporter):
    """Reports each epoch's validation metric to the trial, and stops the run (Optuna's
    ``TrialPruned``) when the pruner finds it poor: the sweep's hook in the training loop."""

    def __init__(self, trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def epoch_end(self, row: Dict[str, Any], total_epochs: int) -> None:
        value = row.get(self.metric)
        if value is None or value != value:  # no validation this epoch, or NaN
            return
        self.trial.report(float(value), int(row["epoch"]))
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"epoch {row['epoch']}: {self.metric} {value:g}")


def suggest(trial, p: ir.ParamDecl) -> Any:
    """The trial's value of a searched param, drawn from its space."""
    values = search_values(p)
    kind = p.search.func
    if kind == "choice":
        return trial.suggest_categorical(p.name, list(values))
    if kind == "int_uniform":
        return trial.suggest_int(p.name, values[0], values[1])
    return trial.suggest_float(p.name, float(values[0]), float(values[1]), log=kind == "log_uniform")


def trial_dir(sweep: Sweep, number: int) -> str:
    return os.path.join(sweep.out, f"trial-{number:03d}")


def objective(sweep: Sweep) -> Callable:
    """Optuna's objective: one ``kdsl train`` run of the trial's params; its best metric."""
    from kdsl.training.api import train

    def run(trial) -> float:
        values = {p.name: suggest(trial, p) for p in sweep.spaces}
        out = trial_dir(sweep, trial.number)
        trial.set_user_attr("run_dir", out)
        try:
            result = train(sweep.spec_path, out=out, overwrite=True, reporter=TrialReporter(trial, sweep.metric),
                           params={**sweep.fixed, **values}, **sweep.settings)
        except KdslError as exc:  # a trial the spec cannot run (a NaN loss, ...): failed, said why
            trial.set_user_attr("error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        best = result.best
        if best is None or best["metric"] != sweep.metric:
            raise error("KD753", f"trial {trial.number} reports no {sweep.metric}",
                        hint="give the metric the sweep optimises with --best-metric")
        trial.set_user_attr("best_epoch", best["epoch"])
        trial.set_user_attr("seconds", round(result.seconds, 1))
        return float(best["value"])
    return run


def run_sweep(sweep: Sweep, trials: int, overwrite: bool = False, prune: bool = True, seed: int = 0,
              say: Callable[[str], None] = lambda _line: None):
    """Run trials until ``trials`` of them have finished (those of earlier, interrupted runs of the
    sweep count); the study."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(sweep, overwrite=overwrite, seed=seed, prune=prune)
    done = finished(study)
    if done:
        say(f"resuming {sweep.out}: {done} of {trials} trials finished")

    def report(study, trial) -> None:
        say(trial_line(sweep, study, trial, trials))

    if done < trials:
        study.optimize(objective(sweep), catch=(KdslError,),
                       callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                  report])
    return study
