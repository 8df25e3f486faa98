"""Shared fixtures: the repository root, and running the CLI in-process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> Path:
    return ROOT


def run_cli(*args: str, cwd: Path = ROOT, env=None, timeout: float = 600):
    """Run ``python -m kdsl ARGS`` in a subprocess, a fresh interpreter: (exit code, stdout, stderr)."""
    from forked import child_env

    path = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    full_env = child_env({"PYTHONPATH": path, **(env or {})})
    proc = subprocess.run([sys.executable, "-m", "kdsl", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def run_cli_in_process(*args: str, cwd: Path = ROOT, env=None):
    """``kdsl ARGS`` in this process (no interpreter start-up, seconds on a busy machine): (exit
    code, stdout, stderr), as :func:`run_cli` gives them. Through the entry point `python -m kdsl`
    runs (kdsl.cli.entry: a plain check answered without the typer app), in ``cwd``, with the
    ``sys.argv`` such a process has (environment.json records it) and ``env`` added to the
    environment; NO_COLOR as run_cli sets it."""
    import contextlib
    import io

    from kdsl.cli.entry import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.delenv("FORCE_COLOR", raising=False)
        for key, value in {"NO_COLOR": "1", **(env or {})}.items():
            patch.setenv(key, value)
        patch.chdir(cwd)
        patch.setattr(sys, "argv", [str(ROOT / "kdsl" / "__main__.py"), *args])
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else None  # a command sets its own
        try:
            main(list(args))
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code
        finally:
            if threads is not None:
                torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def interrupted_as_epoch_starts(monkeypatch, index: int):
    """The run inside dies (KeyboardInterrupt, as Ctrl-C) as its epoch ``index`` (0-based) starts:
    the checkpoint of the epoch before it is on disk, nothing of epoch ``index`` is."""
    from kdsl.training.data import EpochSampler

    real_set_epoch = EpochSampler.set_epoch

    def crash(self, epoch):
        if epoch == index:
            raise KeyboardInterrupt
        real_set_epoch(self, epoch)

    with monkeypatch.context() as m:
        m.setattr(EpochSampler, "set_epoch", crash)
        with pytest.raises(KeyboardInterrupt):
            yield


def completed_in_process(*args: str, env=None) -> subprocess.CompletedProcess:
    """:func:`run_cli_in_process` as the ``subprocess.run(..., capture_output=True, text=True)``
    of ``python -m kdsl ARGS`` would give it."""
    return subprocess.CompletedProcess(["kdsl", *args], *run_cli_in_process(*args, env=env))


@pytest.fixture
def cli():
    """``kdsl ARGS`` in a process of its own, forked from a server that imported torch and kdsl once
    (tests/forked.py: a tenth of an interpreter's start): (exit code, stdout, stderr), as
    :func:`run_cli` gives them. A test of what a command imports runs :func:`run_cli`."""
    import forked

    return forked.run_kdsl


# Tests that compare with MMRazor's and torchdistill's outputs read reference vectors from
# ../shared/reference, which a fresh clone does not have: they skip, and pytest's default summary
# shows only "N skipped". This says which and why, in every run's summary.
REFERENCE_SKIP = "reference vectors not found"


def _skip_reason(report) -> str:
    longrepr = getattr(report, "longrepr", None)
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _tests(count: int) -> str:
    return f"{count} test{'s' if count != 1 else ''}"


def reference_skip_line(reports) -> str:
    """The summary line for the reference-vector tests skipped among ``reports`` ('' for none)."""
    count = sum(REFERENCE_SKIP in _skip_reason(rep) for rep in reports)
    if not count:
        return ""
    return (f"{_tests(count)} skipped: ../shared/reference not found "
            "(MMRazor/torchdistill reference vectors; set KDSL_SHARED or KDSL_REFERENCE_DIR, "
            "CI sets KDSL_REQUIRE_SHARED=1)")


def skip_summary_lines(reports) -> List[str]:
    """Why tests skipped, one line per reason with its count (the reference vectors' line first):
    pytest's own quiet summary only counts them, and a skip must say why (an optional package that
    is not installed, a tool that is missing)."""
    reasons = Counter(_skip_reason(rep) for rep in reports if REFERENCE_SKIP not in _skip_reason(rep))
    lines = [reference_skip_line(reports)] + [f"{_tests(n)} skipped: {reason}" for reason, n in sorted(reasons.items())]
    return [line for line in lines if line]


def expected_seconds(item) -> float:
    """What ``@pytest.mark.slow(seconds=N)`` says a test costs (N: seconds of one idle core), 0
    for a test without the mark."""
    mark = item.get_closest_marker("slow")
    return float(mark.kwargs.get("seconds", 1)) if mark else 0.0


def longest_first(items) -> None:
    """Order ``items`` by the seconds their slow marks give, longest first, the rest after them in
    their own order (the sort is stable)."""
    items.sort(key=lambda item: -expected_seconds(item))


def pytest_configure(config):
    # pytest-xdist runs one worker per core. A worker's torch, and the `kdsl` processes a test
    # starts, would each take one thread per core too, spinning against the other workers: under
    # `-n auto` the README's main job took 229 s (2 threads) beside the other worker. One thread
    # each, unless the environment says otherwise (kdsl's thread rule takes OMP_NUM_THREADS over
    # its own choice; tests/train/test_threads.py unsets it to test the rule).
    if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)


def pytest_collection_modifyitems(session, config, items):
    # pytest-xdist hands out whole files (`--dist loadfile --no-loadscope-reorder` in
    # pyproject.toml: a module's fixtures, a training run or a teacher store, are built once), each
    # to the next free worker, in the order the workers collected them. A long file handed out
    # last runs alone while the other worker idles: the suite's time was its slowest tests' tail.
    # So the files holding the longest tests go out first, and the short ones fill in around
    # them. Workers collect and sort alike, so their orders agree. In one process nothing moves.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        longest_first(items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in skip_summary_lines(terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(line, yellow=True)
