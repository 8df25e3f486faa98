"""``kdsl sweep SPEC``: search the spaces a spec's params declare with Optuna (#25 item 5).

``param tau = 4 search uniform(1, 8)`` declares what is searched. Each trial is an ordinary
``kdsl train`` run (:func:`kdsl.training.api.train`, the params given as ``params=``) in its own
run directory ``DIR/trial-NNN``; its objective is the run's best metric (``best_metric``, by
default the task's primary one) in that metric's direction. After each epoch the trial reports
its validation metric to Optuna (:class:`TrialReporter`, the trainer's reporter), and a trial that
Optuna's median pruner finds poor (after the first third of its epochs) is stopped there. The study lives in ``DIR/study.db`` (SQLite),
so a sweep that is killed resumes where it stopped when run again (finished trials kept, a trial
killed in flight is failed and does not count), and several processes given the same directory
share the work: they take trials one at a time under ``DIR/study.lock`` (:func:`sweep_lock`), so
together they run ``--trials`` trials, each once in its own directory. The first trial of a new
sweep is the spec as written. Afterwards :mod:`kdsl.training.sweep_report` writes the summary.

Optuna is an optional extra (``pip install 'kdsl[sweep]'``), imported only here (KD750 without it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from kdsl.core.diagnostics import KdslError, error
from kdsl.lang import ir
from kdsl.lang.params import GivenValues
from kdsl.lang.search_spaces import search_values
from kdsl.training.report import Reporter
from kdsl.training.run_manifest import process_alive
from kdsl.training.sweep_report import finished, trial_line, write_summary

STUDY, LOCK = "study.db", "study.lock"
STUDY_NAME = "kdsl-sweep"
# A trial of another machine whose process died stops beating; after the grace period the next
# process to take a trial fails it (Optuna's stale-trial check), so it stops counting towards
# --trials. A trial of this machine is judged by whether its process exists, never by its
# heartbeat: a live process that could not beat (a loaded or suspended machine) is not dead.
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
    with sweep_lock(sweep.out):  # one process creates the study and enqueues the spec as written
        return _create_or_load(optuna, sweep, path, seed, prune)


def _create_or_load(optuna, sweep: Sweep, path: str, seed: int, prune: bool):
    with warnings.catch_warnings():  # the heartbeat is marked experimental; it is what resumes need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _sweep_storage(optuna)(f"sqlite:///{os.path.abspath(path)}", heartbeat_interval=HEARTBEAT_S,
                                        grace_period=GRACE_S, engine_kwargs={"connect_args": {"timeout": 60}})
    # early epochs say little (a cosine schedule's first epochs are noisy): no pruning in the
    # first third of a trial's epochs, nor before four trials have finished
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, sweep.epochs // 3)) \
        if prune else optuna.pruners.NopPruner()
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=sweep.direction,
                                pruner=pruner, load_if_exists=True)
    study.sampler = trial_seeded_sampler(seed)
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
    sweep count, and those other processes sharing the directory run), waiting for the trials
    still running in other processes (and taking the place of one whose process is killed); the
    study."""
    study = open_study(sweep, overwrite=overwrite, seed=seed, prune=prune)
    done = finished(study)
    if done:
        say(f"resuming {sweep.out}: {done} of {trials} trials finished")
    run = objective(sweep)

    def report(study, trial) -> None:
        say(trial_line(sweep, study, trial, trials))

    waiting = False
    while True:
        with sweep_lock(sweep.out) as release:
            count = _count(study)
            if count.taken < trials:

                def claimed(trial) -> float:  # RUNNING, and marked as ours before others may count it
                    trial.set_user_attr("worker", WORKER)
                    release()
                    try:
                        return run(trial)
                    except KdslError:
                        trial.set_user_attr("run_failed", True)  # not killed: it would fail again
                        raise

                study.optimize(claimed, n_trials=1, catch=(KdslError,), callbacks=[report])
                continue
        if not count.running:
            return study
        if not waiting:  # so that this process reports the others' trials finished
            say(f"waiting for {count.running} trial(s) running in other processes")
            waiting = True
        time.sleep(1.0)


def summarize(sweep: Sweep, study, seconds: Optional[float] = None) -> Dict[str, Any]:
    """The summary files, written under the lock from the study as it is now: whichever process
    sharing the sweep writes last writes every trial."""
    with sweep_lock(sweep.out):
        return write_summary(sweep, study, seconds)


def _process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (the boot's id and the clock tick, from Linux's ``/proc``): with
    only 32768 pids on many machines, and after a reboot, another process may hold the pid of one
    that ended. None where it cannot be read (no such process, not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot, open(f"/proc/{pid}/stat") as stat:
            return boot.read().strip() + ":" + stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# Which process runs a trial: a RUNNING trial of this machine whose process is gone was killed.
WORKER = {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}


@contextlib.contextmanager
def sweep_lock(out: str):
    """Hold ``DIR/study.lock`` (an exclusive ``flock``, released when the process dies): processes
    sharing a sweep create its study, take a trial and write the summary one at a time. Yields
    the function that releases it early."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: one process per sweep directory
        yield lambda: None
        return
    handle = open(os.path.join(out, LOCK), "a+")

    def release() -> None:
        if not handle.closed:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield release
    finally:
        release()


class Count(NamedTuple):
    taken: int  # the trials that count towards --trials
    running: int  # those of them running in live processes


def _count(study) -> Count:
    """The sweep's trials, from one read of every trial, made under the lock (so that no other
    process takes a trial meanwhile). A trial counts from the moment it is taken to its end:
    running in a live process, finished (completed or pruned), or failed by its run (a NaN loss,
    ...: it would fail again, and a sweep whose every trial fails must end, with KD753). Other
    processes end their trials while this one reads, so the read may see a trial in either state:
    both count, and the total is the same (counting finished and running trials in two reads
    missed a trial that ended between them, and a 4th trial of 3 was run). Optuna's cache of the
    trials is no hazard here: it reads every unfinished trial again, and a finished one does not
    change. A trial whose process has ended (killed) is failed here and does not count: another
    takes its place."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # fail_stale_trials is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # the trials of other machines that stopped beating
    taken = running = 0
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            ended = _ended(t)
            if ended is None:
                taken, running = taken + 1, running + 1
                continue
            study._storage.set_trial_user_attr(t._trial_id, "error", ended)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED) or \
                (t.state == TrialState.FAIL and t.user_attrs.get("run_failed")):
            taken += 1
    return Count(taken, running)


def _ended(trial) -> Optional[str]:
    """Why the process of a RUNNING trial has ended, or None while it may be running: on this
    machine, whether the process exists; of another machine, Optuna's heartbeat decides."""
    worker = trial.user_attrs.get("worker")
    if worker is None:  # a trial is marked before its process releases the lock: this one's died holding it
        return "its process ended as it took the trial"
    if _judged_here(worker) and not _same_process(worker):
        return f"its process ({worker['pid']}) ended"
    return None


def _same_process(worker: Dict[str, Any]) -> bool:
    """Whether the trial's process still runs: its pid exists, and was not given to another since."""
    if not process_alive(worker["pid"]):
        return False
    started = worker.get("started")
    return started is None or _process_start(worker["pid"]) in (None, started)


def _judged_here(worker: Dict[str, Any]) -> bool:
    """Whether a trial's process is judged by whether it exists (one of this machine, on a POSIX
    system), not by its heartbeat."""
    return worker.get("host") == WORKER["host"] and worker.get("pid") is not None and os.name == "posix"


def _sweep_storage(optuna):
    """Optuna's SQLite storage, whose heartbeat judges only the trials :func:`_judged_here` does not
    (those of other machines): a live process that could not beat in time (a loaded or suspended
    machine) is not dead."""

    class SweepStorage(optuna.storages.RDBStorage):
        def _get_stale_trial_ids(self, study_id: int) -> List[int]:
            stale = super()._get_stale_trial_ids(study_id)
            return [i for i in stale if not _judged_here(self.get_trial(i).user_attrs.get("worker") or {})]

    return SweepStorage


def trial_seeded_sampler(seed: int):
    """Optuna's TPE sampler seeded afresh for each trial with ``seed`` + the trial's number: one
    process draws what it drew before (a sweep is reproducible), and processes sharing a study,
    whose trials have other numbers, draw other values."""
    import optuna

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._by_trial: Dict[int, Any] = {}

        def _of(self, trial):
            if trial.number not in self._by_trial:
                self._by_trial[trial.number] = optuna.samplers.TPESampler(seed=seed + trial.number)
            return self._by_trial[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._of(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._of(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._of(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._of(trial).after_trial(study, trial, state, values)
            self._by_trial.pop(trial.number, None)

    return TrialSeededSampler()
