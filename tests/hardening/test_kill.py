"""`kdsl train` killed at any instant, then `--resume`: nothing lost (issue #13, item 1).

Two kinds of kill: one injected at a *write point* of the run directory's atomic writes
(``KDSL_KILL_AT=N``: ``os._exit(137)`` at the Nth point, which is what SIGKILL leaves behind: no
cleanup, a half-written temporary file), and real SIGKILLs of a ``kdsl train`` process at
random times. After every kill, ``--resume`` must end with student.pt, models/student.pt,
checkpoint.pt, metrics.jsonl and summary.json agreeing, no temporary file left, and the final
weights bit-identical to an uninterrupted run's.

The default suite kills at the points of the last epoch where data was lost before (a few
trials); ``KDSL_KILL_TRIALS=all`` kills at every write point of the run and adds
``KDSL_KILL_REAL`` (default 2) real SIGKILLs. Each test prints its trial and failure counts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

import forked
import kdsl

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "digits" / "kd.kd")
FLAGS = {"epochs": 2, "steps_per_epoch": 2, "seed": 5, "threads": 1}
ARGS = ["--epochs", "2", "--steps-per-epoch", "2", "--seed", "5", "--threads", "1"]
ALL = os.environ.get("KDSL_KILL_TRIALS") == "all"
# the points of the last epoch (and the run's end) around the files that went out of step before
# (best.pt's, after the checkpoint: tests/train/test_rundir_files.py; every point: KDSL_KILL_TRIALS=all)
DEFAULT_POINTS = [("write", "checkpoint.pt"), ("renamed", "checkpoint.pt"), ("renamed", "student.pt"),
                  ("renamed", "metrics.jsonl"), ("rename", "summary.json")]


def _train(out: Path, env=None) -> forked.Child:
    """`kdsl train SPEC ARGS --out OUT`, started in a process of its own (tests/forked.py: forked
    from a server that imported torch and kdsl; the write points read KDSL_KILL_AT and
    KDSL_KILL_TRACE as they pass, so the child's environment is theirs)."""
    return forked.Child(["train", SPEC, *ARGS, "--out", str(out)],
                        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KDSL_KILL_AT": None,
                             "KDSL_KILL_TRACE": None, **(env or {})})


def _train_to_the_end(out: Path, env=None):
    """:func:`_train` until the process ends: (its exit code, what it printed)."""
    with _train(out, env) as child:
        code = child.wait(timeout=300)
        return code, "".join(child.output())


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """An uninterrupted run, its write points in order ``[(n, what, file)]``, and its wall time."""
    out = tmp_path_factory.mktemp("kill") / "full"
    trace = out.parent / "trace.txt"
    with _train(out, {"KDSL_KILL_TRACE": str(trace)}) as child:
        t0 = time.time()  # started (as the killed runs' clocks start: not the fork server's own start)
        code = child.wait(timeout=300)
        wall = time.time() - t0
        assert code == 0, child.output()
    points = [(int(n), what, name) for n, what, name in (line.split() for line in trace.read_text().splitlines())]
    return out, points, wall


def _resume(out: Path):
    """``--resume`` in this process; a run killed before its first checkpoint resumes as a fresh
    run (one rule, issue #27.19)."""
    before = torch.get_num_threads()
    try:
        kdsl.train(SPEC, out=str(out), resume=True, **FLAGS)
    finally:
        torch.set_num_threads(before)


def _problems(out: Path, full: Path):
    """What disagrees in the run directory ``out`` (an empty list: nothing)."""
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    problems = []
    ckpt = load(out / "checkpoint.pt")
    student, reference = load(out / "student.pt"), load(full / "student.pt")
    in_ckpt = {k[len("models.student."):]: v for k, v in ckpt["distiller"].items()
               if k.startswith("models.student.")}
    for name, a, b in (("checkpoint", student, in_ckpt), ("uninterrupted run", student, reference),
                       ("models/student.pt", student, load(out / "models" / "student.pt"))):
        if list(a) != list(b) or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"student.pt differs from the {name}'s")
    if (out / "best.pt").exists() != (full / "best.pt").exists():
        problems.append("best.pt is missing" if (full / "best.pt").exists() else "best.pt should not exist")
    elif (full / "best.pt").exists():
        best, reference_best = load(out / "best.pt"), load(full / "best.pt")
        if list(best) != list(reference_best) or not all(torch.equal(best[k], reference_best[k]) for k in best):
            problems.append("best.pt differs from the uninterrupted run's")
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads(json.dumps(ckpt["history"]))
    if ckpt["epoch"] != FLAGS["epochs"] or summary.get("epochs_done") != ckpt["epoch"]:
        problems.append(f"epochs: checkpoint {ckpt['epoch']}, summary {summary.get('epochs_done')}")
    if summary.get("history") != history or "student" not in summary:
        problems.append("summary.json is not the finished run's")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if rows != history:
        problems.append("metrics.jsonl disagrees with the checkpoint")
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def _report(kind: str, trials: int, failures: dict):
    print(f"\nkill test ({kind}): {trials} trials, {len(failures)} failures")
    assert not failures, json.dumps(failures, indent=1)


@pytest.mark.slow(seconds=10)  # with the traced run: six `kdsl train` processes, forked
def test_kill_at_write_points_then_resume(traced, tmp_path):
    full, points, _ = traced
    last_epoch = max(n for n, what, name in points if name == "checkpoint.pt")  # the final commit point
    if ALL:
        chosen = [n for n, _, _ in points]
    else:
        chosen = []
        for what, name in DEFAULT_POINTS:  # each one's last occurrence: in the final epoch or after it
            chosen.append(max(n for n, w, f in points if (w, f) == (what, name)))
    assert len(chosen) >= 5 and last_epoch in chosen
    failures = {}
    for n in chosen:
        out = tmp_path / f"at-{n}"
        code, output = _train_to_the_end(out, {"KDSL_KILL_AT": str(n)})
        assert code == 137, f"point {n} was not reached: {output[-2000:]}"
        _resume(out)
        problems = _problems(out, full)
        if problems:
            failures[f"point {n} {points[n - 1][1:]}"] = problems
    _report("injected at write points", len(chosen), failures)


@pytest.mark.slow(seconds=3)
def test_real_sigkill_at_random_times_then_resume(traced, tmp_path):
    full, _, wall = traced
    rng = random.Random(13)
    trials = int(os.environ.get("KDSL_KILL_REAL", "2")) * (3 if ALL else 1)
    failures = {}
    for i in range(trials):
        out = tmp_path / f"real-{i}"
        delay = rng.uniform(0.5, 1.0) * wall  # the second half: data loading, training, writing
        with _train(out) as child:
            child.process.join(delay)
            if child.returncode is None:
                child.send_signal(signal.SIGKILL)
                child.wait()
        _resume(out)
        problems = _problems(out, full)
        if problems:
            failures[f"trial {i} killed at {delay:.2f}s"] = problems
    _report("real SIGKILL", trials, failures)


def test_stale_student_after_the_final_checkpoint_is_repaired(traced, tmp_path):
    """The data loss of issue #13: the final checkpoint written, student.pt (and the summary) still
    an epoch behind. --eval-only evaluates and repairs the checkpoint's student; --resume says the
    run is complete and leaves student.pt, checkpoint.pt and summary.json agreeing."""
    import shutil

    full, _, _ = traced
    out = tmp_path / "stale"
    shutil.copytree(full, out)
    stale = {k: torch.zeros_like(v) for k, v in torch.load(out / "student.pt", weights_only=True).items()}
    torch.save(stale, out / "student.pt")
    (out / "summary.json").write_text(json.dumps({"epochs_done": 1}))
    (out / "metrics.jsonl.tmp-999999999").write_text("half")
    before = torch.get_num_threads()
    try:
        evaluated = kdsl.train(SPEC, out=str(out), eval_only=True, **FLAGS)
        summary = json.loads((full / "summary.json").read_text())
        assert evaluated.final["top1"] == pytest.approx(summary["student"]["top1"])
        assert not list(out.glob("*.tmp-*"))
        torch.save(stale, out / "student.pt")
        (out / "summary.json").write_text("{}")
        kdsl.train(SPEC, out=str(out), resume=True, **FLAGS)
    finally:
        torch.set_num_threads(before)
    assert _problems(out, full) == []


@pytest.mark.parametrize("left", ["kdsl-run.json.tmp-{pid}", ".write-test-{pid}"], ids=["manifest", "probe"])
def test_a_run_killed_as_it_started_is_started_afresh(tmp_path, left):
    """Killed while it wrote its first file, the manifest (KDSL_KILL_AT=1 or 2; the real SIGKILLs
    above can land there), or probed the directory: what it left is its own temporary file, and
    --resume starts the run afresh where it refused the directory as not kdsl's (KD706). A live
    process's file is still no leftover."""
    import subprocess

    from kdsl.core.diagnostics import KdslError
    from kdsl.training.rundir import RunDir

    ended = subprocess.Popen(["true"])
    ended.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / left.format(pid=ended.pid)).write_text('{"format": "kdsl-run-fi')  # cut mid-write
    run = RunDir(str(out))
    run.prepare(resume=True, eval_only=False, overwrite=False)
    assert run.manifest.paths is None and not run.has_checkpoint()  # a fresh run's directory
    if left.startswith("kdsl-run"):
        assert not list(out.iterdir())  # removed, as the manifest's temporary files of dead writers are
    (out / left.format(pid=os.getppid())).write_text("")  # the file of a process still writing it
    with pytest.raises(KdslError) as info:
        RunDir(str(out)).prepare(resume=True, eval_only=False, overwrite=False)
    assert info.value.diagnostics[0].code == "KD706"
