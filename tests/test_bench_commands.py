"""The bench commands the README and the docs pages show, shortened to their smallest honest
settings, each run as a user would (`python bench/NAME.py ...`): one test each, in a file of their
own, so that pytest-xdist runs them beside the README's main job."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.test_readme import ENV, ROOT, SHOWN


def _bench(*args: str) -> str:
    assert f"python bench/{args[0]}" in SHOWN, args[0]
    proc = subprocess.run([sys.executable, f"bench/{args[0]}", *args[1:]], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


# The README's bench commands that fit in a test, shortened, one test each (so that pytest-xdist
# can run them side by side): `python bench/digits_table.py` (one thread: the table's default of
# two oversubscribes a busy 2-core machine, 191 s -> 96 s at load 9), `bench/overhead.py`,
# `bench/truncation.py`, `bench/compile.py` (eager backend: inductor takes minutes to compile) and
# `bench/check_time.py`. Each with the least work its script accepts (one step, no warm-up, the
# smallest batch or models): what is checked is that the documented command runs end to end and
# prints its lines, not its figures. Most of what remains is the processes' start (torch's import,
# five `kdsl train` processes for the table). The slow marks' seconds: each one's CPU time (its
# processes', measured).
@pytest.mark.slow(seconds=24)
def test_bench_digits_table(tmp_path):
    _bench("digits_table.py", "--seeds", "1", "--epochs", "1", "--steps-per-epoch", "1", "--threads", "1",
           "--out", str(tmp_path / "table"))
    assert (tmp_path / "table" / "table.md").read_text().count("\n| ") >= 5


@pytest.mark.slow(seconds=5)
def test_bench_overhead():
    out = _bench("overhead.py", "--steps", "1", "--warmup", "0", "--growth-steps", "50", "--batch", "4")
    assert "digits_teacher -> digits_cnn" in out and "growth" in out


@pytest.mark.slow(seconds=3)
def test_bench_truncation():
    out = _bench("truncation.py", "--steps", "1", "--threads", "1", "--batch", "2")
    assert "truncated" in out and "record layer2" in out


@pytest.mark.slow(seconds=9)
def test_bench_compile():
    out = _bench("compile.py", "--steps", "1", "--warmup", "0", "--threads", "1", "--backend", "eager", "--small")
    assert out.count("graph breaks added by kdsl: 0") == 2


def test_bench_check_time():
    out = _bench("check_time.py", "--runs", "1", "specs/digits/kd.kd")
    assert "python -c pass" in out and "kdsl check" in out
