"""Fixtures for `kdsl train` tests: in-process runs, single-threaded CLI runs, a shared KD run.

Every run here is single-threaded: on a small shared machine torch's intra-op thread pool spins
against other processes and makes an epoch of the digits job ten times slower. In-process runs get
OMP_NUM_THREADS=1, which kdsl's thread rule takes over its own choice (the rule no longer drops to
one thread on a busy machine: tests/train/test_threads.py unsets it to test the rule).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # train_helpers and the fake data factories next to this file
    sys.path.insert(0, str(HERE))

from tests.conftest import run_cli_in_process  # noqa: E402
from train_helpers import KD_SEED, KD_SPEC, train_in_process  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


@pytest.fixture
def kcli():
    """``kdsl ARGS`` through the entry point `python -m kdsl` runs, single-threaded, in this
    process (conftest's run_cli_in_process: an interpreter importing torch costs seconds on a busy
    machine): (exit code, stdout, stderr)."""

    def run(*args: str, env=None):
        return run_cli_in_process(*args, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})})

    return run


@pytest.fixture(scope="session")
def kd_run(tmp_path_factory) -> Path:
    """``kdsl train specs/digits/kd.kd --epochs 2 --seed 7 --out DIR``, trained once per session;
    what it printed is in DIR/../printed.txt."""
    out = tmp_path_factory.mktemp("kd_run") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("OMP_NUM_THREADS", "1")
            _, printed = train_in_process(KD_SPEC, epochs=2, seed=KD_SEED, out=str(out))
    finally:
        torch.set_num_threads(before)
    (out.parent / "printed.txt").write_text(printed)
    return out
