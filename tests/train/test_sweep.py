"""`kdsl sweep SPEC` (#25 item 5): Optuna over the spaces the spec's params declare, each trial an
ordinary `kdsl train` run in its own directory, the study in SQLite so that a killed sweep resumes
with its finished trials kept, and a summary (best trial, its command, the table, PNG plots)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import forked
from train_helpers import ROOT
from tests.conftest import run_cli_in_process

optuna = pytest.importorskip("optuna")

SWEEP_SPEC = str(ROOT / "specs" / "digits" / "kd_sweep.kd")
KD_SPEC = str(ROOT / "specs" / "digits" / "kd.kd")
PNG = b"\x89PNG\r\n\x1a\n"
FLAGS = ["--set", "epochs=1", "--steps-per-epoch", "3", "--threads", "1"]

def _paced_sweeps(signals: Path, count: int, *args: str) -> List[forked.Child]:
    """``count`` processes of their own (tests/forked.py) running ``kdsl sweep ARGS``, their trials
    paced by the files in ``signals`` (tests/train/sweep_paced_entry.py)."""
    signals.mkdir(exist_ok=True)
    env = {"OMP_NUM_THREADS": "1", "COLUMNS": "200", "KDSL_TEST_SIGNALS": str(signals)}
    return [forked.Child(["sweep", SWEEP_SPEC, *args, *FLAGS], env=env, entry="sweep_paced_entry")
            for _ in range(count)]


def _wait_for_epochs(signals: Path, procs: list, count: int) -> Dict[int, int]:
    """Until ``count`` trials have reached the end of their first epoch: {trial: its process}."""
    while True:
        reached = dict(tuple(int(n) for n in p.name.split("-")[1:]) for p in signals.glob("epoch-*"))
        if len(reached) >= count:
            return reached
        for proc in procs:
            assert proc.poll() is None, proc.output()
        time.sleep(0.05)


def _kill_during_second_trial(sweep_dir: Path) -> None:
    """Start the sweep in another process and kill it (SIGKILL: no cleanup) in its second trial,
    after its first epoch."""
    signals = sweep_dir.parent / "signals"
    signals.mkdir()
    (signals / "go-0").touch()
    (proc,) = _paced_sweeps(signals, 1, "--trials", "5", "--dir", str(sweep_dir))
    with proc:
        try:
            _wait_for_epochs(signals, [proc], 2)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_a_killed_sweep_resumes_keeps_its_trials_and_reports_the_best(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    sweep_dir = tmp_path / "sweep"
    _kill_during_second_trial(sweep_dir)
    study = optuna.load_study(study_name="kdsl-sweep", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    before = {t.number: (t.state.name, t.value) for t in study.get_trials()}
    assert before[0][0] == "COMPLETE" and before[1] == ("RUNNING", None)  # killed in flight

    code, out, err = run_cli_in_process("sweep", SWEEP_SPEC, "--trials", "2", "--dir", str(sweep_dir), *FLAGS)
    assert code == 0, out + err
    assert "resuming" in out and "1 of 2 trials finished" in out
    summary = json.loads((sweep_dir / "summary.json").read_text())
    rows = {r["trial"]: r for r in summary["trials"]}
    assert rows[0]["state"] == "complete" and rows[0]["val_top1"] == before[0][1]  # kept, not rerun
    assert rows[0]["spec_as_written"] and (rows[0]["tau"], rows[0]["kd_weight"]) == (4, 0.9)
    assert rows[1]["state"] == "fail" and "its process" in rows[1]["error"]  # killed: failed on resuming
    assert summary["finished"] == 2 and sorted(rows) == [0, 1, 2]
    assert 1 <= rows[2]["tau"] <= 8 and 0.1 <= rows[2]["kd_weight"] <= 1
    best = summary["best"]
    done = [r for r in summary["trials"] if r["state"] == "complete"]
    assert best["value"] == max(r["val_top1"] for r in done)
    assert f"best: trial {best['trial']}, val_top1" in out and f"reproduce: {best['command']}" in out
    assert best["command"].startswith(f"kdsl train {SWEEP_SPEC} --steps-per-epoch 3 --threads 1 --set epochs=1 "
                                      "--set tau=")
    assert (rows[2]["tau"], rows[2]["kd_weight"]) != (rows[1]["tau"], rows[1]["kd_weight"])  # drawn afresh
    assert (sweep_dir / "history.png").read_bytes()[:8] == PNG
    assert (sweep_dir / "trials.csv").read_text().splitlines()[0].startswith("trial,state,tau,kd_weight,val_top1")

    # the command printed for the best trial reproduces it: the same run, the same metric
    words = shlex.split(best["command"])
    words[words.index("--out") + 1] = str(tmp_path / "again")
    code, out, err = run_cli_in_process(*words[1:])
    assert code == 0, out + err
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["best"]["value"] == best["value"]
    assert again["config"]["params"]["tau"] == {"value": best["params"]["tau"], "source": "--set",
                                                "search": "uniform(1, 8)"}

    # each trial is an ordinary run: its summary records the params and where each value came from
    trial = json.loads((sweep_dir / "trial-002" / "summary.json").read_text())
    params = trial["config"]["params"]
    assert params["epochs"] == {"value": 1, "source": "params="}
    assert params["tau"]["source"] == "params=" and params["tau"]["search"] == "uniform(1, 8)"
    assert params["tau"]["value"] == rows[2]["tau"] and trial["config"]["epochs"] == 1



def test_two_processes_share_one_sweep_each_trial_run_once(tmp_path):
    """Two `kdsl sweep` processes started together on one directory: --trials in total, each trial
    once in its own directory, the spec as written once, other values in each, and both report
    every trial."""
    sweep_dir, signals = tmp_path / "sweep", tmp_path / "signals"
    procs = _paced_sweeps(signals, 2, "--trials", "3", "--dir", str(sweep_dir))
    with contextlib.ExitStack() as running:
        for proc in procs:
            running.enter_context(proc)
        taken = _wait_for_epochs(signals, procs, 2)  # each process holds a trial: both take part
        assert set(taken.values()) == {proc.pid for proc in procs}
        for number in range(3):
            (signals / f"go-{number}").touch()
        outputs = [(proc.wait(timeout=600), *proc.output()) for proc in procs]
    for code, out, err in outputs:
        assert code == 0, out + err
        assert "3 trials finished" in out and "best: trial" in out
    summary = json.loads((sweep_dir / "summary.json").read_text())
    rows = summary["trials"]
    assert [r["trial"] for r in rows] == [0, 1, 2] and {r["state"] for r in rows} == {"complete"}
    assert summary["finished"] == 3 and [r["spec_as_written"] for r in rows] == [True, False, False]
    assert (rows[0]["tau"], rows[0]["kd_weight"]) == (4, 0.9)
    assert (rows[1]["tau"], rows[1]["kd_weight"]) != (rows[2]["tau"], rows[2]["kd_weight"])
    assert sorted(p.name for p in sweep_dir.glob("trial-*")) == ["trial-000", "trial-001", "trial-002"]
    study = optuna.load_study(study_name="kdsl-sweep", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    workers = {t.number: t.user_attrs["worker"]["pid"] for t in study.get_trials()}
    assert set(workers.values()) == {proc.pid for proc in procs}  # both took trials
    for number, row in enumerate(rows):  # each run directory holds the one run of its trial
        run = json.loads((sweep_dir / f"trial-{number:03d}" / "summary.json").read_text())
        assert run["best"]["value"] == row["val_top1"] and run["config"]["params"]["tau"]["value"] == row["tau"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # study.ask() outside optimize: no heartbeat needed
def test_a_sweep_draws_the_same_values_again_and_other_values_per_trial(tmp_path):
    """The sampler is seeded by the trial's number: a sweep is reproducible, and two processes
    (whose trials have other numbers) do not draw the same values."""
    from kdsl.training.sweep import open_study, plan_sweep, suggest

    def draws(directory):
        plan = plan_sweep(SWEEP_SPEC, str(directory), params=["epochs=1"])
        study = open_study(plan)
        values = []
        for _ in range(3):
            trial = study.ask()
            values.append(tuple(suggest(trial, p) for p in plan.spaces))
            study.tell(trial, 1.0)
        return values

    first, again = draws(tmp_path / "a"), draws(tmp_path / "b")
    assert first == again and first[0] == (4, 0.9) and len(set(first)) == 3


def test_a_sweep_whose_every_trial_fails_ends_after_its_trials(tmp_path, monkeypatch):
    """A failed run (a NaN loss, ...) counts towards --trials: the sweep ends, with no best trial."""
    from kdsl.core.diagnostics import error
    from kdsl.training import sweep as sweeping

    calls = []

    def failing(_sweep):
        def run(trial):
            calls.append(trial.number)
            raise error("KD707", "loss became nan at epoch 1, step 1")
        return run

    monkeypatch.setattr(sweeping, "objective", failing)
    plan = sweeping.plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=1"])
    study = sweeping.run_sweep(plan, trials=3)
    assert calls == [0, 1, 2]
    assert [t.user_attrs.get("run_failed") for t in study.get_trials()] == [True, True, True]
    summary = sweeping.summarize(plan, study)  # `kdsl sweep` prints it, then KD753 for the missing best
    assert summary["best"] is None and summary["finished"] == 0


def test_the_sweep_spec_as_written_is_the_readme_kd_spec():
    """kd_sweep.kd's params, put in place, give kd.kd's program exactly (so its first trial, the
    spec as written, is kd.kd's run)."""
    import kdsl
    from kdsl.lang import ir

    def program(spec):
        return [s.canonical_json() for s in spec.statements if not isinstance(s, ir.ParamDecl)]

    assert program(kdsl.load(SWEEP_SPEC)) == program(kdsl.load(KD_SPEC))


def test_a_sweep_of_a_spec_without_search_spaces_is_refused(tmp_path):
    code, out, err = run_cli_in_process("sweep", KD_SPEC, "--trials", "2", "--dir", str(tmp_path / "s"))
    assert code == 1 and "KD751" in err and "param tau = 4 search uniform(1, 8)" in err
    code, out, err = run_cli_in_process("sweep", SWEEP_SPEC, "--set", "tau=2", "--set", "kd_weight=0.5", "--dir", str(tmp_path / "s"))
    assert code == 1 and "KD751" in err and "--set fixes tau, kd_weight" in err
    assert not (tmp_path / "s").exists()


def test_a_sweep_directory_of_another_sweep_is_refused(tmp_path):
    from kdsl.core.diagnostics import KdslError
    from kdsl.training.sweep import open_study, plan_sweep

    open_study(plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=1"]))
    with pytest.raises(KdslError) as info:
        open_study(plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=2"]))
    assert info.value.diagnostics[0].code == "KD752" and "other fixed" in str(info.value)
    study = open_study(plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=2"]), overwrite=True)
    (first,) = study.get_trials()  # enqueued afresh: the spec as written
    assert first.system_attrs["fixed_params"] == {"tau": 4, "kd_weight": 0.9}


def test_pruning_stops_a_poor_trial_after_an_epoch():
    from kdsl.training.sweep import TrialReporter

    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    for value in (90.0, 91.0):
        t = study.ask()
        t.report(value, 1)
        study.tell(t, value)
    trial = study.ask()
    reporter = TrialReporter(trial, "val_top1")
    reporter.epoch_end({"epoch": 1, "loss": 1.0}, 3)  # no validation in this row: nothing reported
    with pytest.raises(optuna.TrialPruned, match="epoch 1: val_top1 10"):
        reporter.epoch_end({"epoch": 1, "val_top1": 10.0}, 3)
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {1: 10.0}


def test_without_optuna_the_sweep_gives_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    code, out, err = run_cli_in_process("sweep", SWEEP_SPEC, "--dir", str(tmp_path / "s"))
    assert code == 1 and "KD750" in err and "pip install 'kdsl[sweep]'" in err
    assert "Traceback" not in out + err


def test_the_summary_ranks_the_params_and_draws_both_plots(tmp_path):
    """With trials whose metric follows tau and hardly kd_weight, the importance says so."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from kdsl.training.sweep import open_study, plan_sweep
    from kdsl.training.sweep_report import param_importances, write_summary

    plan = plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=1"])
    study = open_study(plan)
    spaces = {"tau": FloatDistribution(1, 8), "kd_weight": FloatDistribution(0.1, 1)}
    for i in range(8):
        tau, weight = 1 + i * 0.9, 0.1 + (i * 37 % 9) / 10
        study.add_trial(create_trial(params={"tau": tau, "kd_weight": weight}, distributions=spaces,
                                     value=90 - (tau - 5) ** 2 + 0.01 * weight, user_attrs={"run_dir": f"t{i}"}))
    summary = write_summary(plan, study)
    assert list(param_importances(study)) == ["tau", "kd_weight"]
    for name in ("history", "importance"):
        assert Path(summary["plots"][name]).read_bytes()[:8] == PNG
    best = summary["best"]
    assert best["params"]["tau"] == pytest.approx(4.6) and best["run_dir"] == "t4"
    assert best["command"] == (f"kdsl train {SWEEP_SPEC} --set epochs=1 --set tau={best['params']['tau']!r} "
                               f"--set kd_weight={best['params']['kd_weight']!r} --out runs/kd_sweep-trial-005")



# Workers sharing a sweep: this process runs `run_sweep` while the test plays another process of
# the same machine through its own view of the study. No trial trains (the objective is replaced):
# what is tested is which trials are taken.

@pytest.fixture(scope="module")
def new_study_db(tmp_path_factory) -> Path:
    """A new sweep's study.db (the spec as written enqueued), made once: making one takes a second."""
    from kdsl.training.sweep import open_study, plan_sweep

    directory = tmp_path_factory.mktemp("new") / "s"
    open_study(plan_sweep(SWEEP_SPEC, str(directory), params=["epochs=1"]))
    return directory / "study.db"


@pytest.fixture
def shared(tmp_path, new_study_db, monkeypatch):
    """A new sweep in tmp_path/s whose trials record their numbers instead of training, and the
    study as another process sees it: (the sweep, that study, the trials this process ran)."""
    from kdsl.training import sweep as sweeping

    (tmp_path / "s").mkdir()
    shutil.copy(new_study_db, tmp_path / "s" / "study.db")
    calls = []
    monkeypatch.setattr(sweeping, "objective", lambda _sweep: lambda trial: calls.append(trial.number) or 0.1)
    other = optuna.load_study(study_name="kdsl-sweep", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    return sweeping.plan_sweep(SWEEP_SPEC, str(tmp_path / "s"), params=["epochs=1"]), other, calls


def _take(other, finished: int, pid: Optional[int] = os.getpid(), **worker):
    """The other process finishes ``finished`` trials and takes one more, marked as run by process
    ``pid`` of this machine (by default this process: a live one; None: not marked); that trial."""
    from kdsl.training.sweep import WORKER

    for value in range(finished):
        other.tell(other.ask(), 0.5 + value)
    trial = other.ask()
    if pid is not None:
        trial.set_user_attr("worker", {"host": WORKER["host"], "pid": pid, **worker})
    return trial


def _states(study) -> List[str]:
    return [t.state.name for t in study.get_trials()]


def test_a_trial_finishing_while_another_process_counts_does_not_free_a_place(shared, monkeypatch):
    """The race of two workers (#25: "trial 3 [4/3]"): trials 0 and 1 finished, trial 2 running in
    another process, which finishes it while this one, holding the lock, counts the trials. A
    count of finished trials, then of running ones, missed it and ran a 4th trial of 3."""
    from optuna.study import Study

    from kdsl.training import sweep as sweeping

    plan, other, calls = shared
    running = _take(other, finished=2)
    locked, reads = [], []
    real_lock, real_get_trials = sweeping.sweep_lock, Study.get_trials

    @contextlib.contextmanager
    def lock_seen(out):
        with real_lock(out) as release:
            locked.append(out)
            try:
                yield release
            finally:
                locked.pop()

    def get_trials(self, *args, **kwargs):
        trials = real_get_trials(self, *args, **kwargs)
        if locked and self is not other and not reads:  # this process's first read under the lock
            reads.append(len(trials))
            other.tell(running, 0.7)  # the other process finishes its trial right after it
        return trials

    monkeypatch.setattr(sweeping, "sweep_lock", lock_seen)
    monkeypatch.setattr(Study, "get_trials", get_trials)
    study = sweeping.run_sweep(plan, trials=3)
    assert reads and calls == [] and _states(study) == ["COMPLETE"] * 3


def test_a_live_trial_whose_heartbeat_is_late_is_not_failed(shared, tmp_path, monkeypatch):
    """A loaded (or suspended) machine delays a live process's heartbeat past the grace period:
    its trial is judged by its process, still running, and no other trial takes its place."""
    import sqlite3

    from kdsl.training import sweep as sweeping

    plan, other, calls = shared
    running = _take(other, finished=2)
    other._storage.record_heartbeat(running._trial_id)
    with contextlib.closing(sqlite3.connect(tmp_path / "s" / "study.db")) as db, db:  # its last beat an hour ago
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")

    def run(trial):  # while this process runs trial 3, the other finishes trial 2
        calls.append(trial.number)
        other.tell(running, 0.7, skip_if_finished=True)
        return 0.1

    monkeypatch.setattr(sweeping, "objective", lambda _sweep: run)
    study = sweeping.run_sweep(plan, trials=4)
    assert calls == [3] and _states(study) == ["COMPLETE"] * 4


@pytest.mark.parametrize("worker, error", [
    ({"pid": None}, "its process ended as it took the trial"),  # killed between taking and marking its trial
    ({"started": "a-boot-before:1"}, "its process ({pid}) ended"),  # its pid is now another's
], ids=["killed-before-marking", "pid-reused"])  # static ids: every xdist worker collects the same tests
def test_a_trial_whose_process_has_ended_is_failed_and_replaced(shared, worker, error):
    """A process takes a trial and marks it as its own under the lock. Its trial is failed by the
    next process to hold the lock (instead of being waited for for ever) when the process was
    killed between the two (before its heartbeat began), or when its pid is now another
    process's (pids are reused, and start again after a reboot)."""
    from kdsl.training.sweep import run_sweep

    plan, other, calls = shared
    _take(other, finished=1, **worker)
    study = run_sweep(plan, trials=2)
    assert calls == [2] and _states(study) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.get_trials()[1].user_attrs["error"] == error.format(pid=os.getpid())


def test_a_process_waiting_for_a_trial_that_is_killed_takes_its_place(shared):
    """Stop any worker and the others go on: one with no trial left, waiting for another's, runs
    the trial that takes the killed one's place, so the sweep still finishes --trials trials."""
    from kdsl.training.sweep import run_sweep

    plan, other, calls = shared
    worker = subprocess.Popen(["sleep", "600"])  # the other process, running trial 1

    def say(line):
        if line.startswith("waiting for 1 trial"):
            worker.kill()
            worker.wait()

    try:
        _take(other, finished=1, pid=worker.pid)
        study = run_sweep(plan, trials=2, say=say)
    finally:
        worker.kill()
        worker.wait()
    assert calls == [2] and _states(study) == ["COMPLETE", "FAIL", "COMPLETE"]
