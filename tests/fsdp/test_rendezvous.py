"""A missing rendezvous says so (issue 21): a process of a 2-process run whose peer never comes
ends after --collective-timeout with kdsl's KD786, naming the rendezvous address and what to
check, not a traceback and not a wait without end. The two sides, in this process (the
environment torchrun gives its workers, without torchrun): the first process, which hosts the
rendezvous and waits for the second; and the second, which finds nobody at the address. Under
torchrun the agents meet first, before any kdsl process starts: with only the first of two
machines started, torchrun's own rendezvous ends after --rdzv-conf timeout=N (the wait
docs/distributed.md tells how to bound)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch.distributed as dist

from tests.conftest import run_cli_in_process
from forked import free_port
from fsdp_helpers import ENTRY, ROOT, SPEC, corpus


@pytest.mark.parametrize("rank, reason", [(0, "1/2 clients joined"), (1, "trying to connect to (127.0.0.1")])
def test_a_process_whose_peer_never_comes_ends_with_kd786(tmp_path, monkeypatch, rank, reason):
    port = free_port()
    monkeypatch.setenv("NO_COLOR", "1")
    for key, value in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli_in_process("train", SPEC, "--data", corpus(tmp_path), "--out", str(tmp_path / "run"),
                                        "--allow-random-teacher", "--collective-timeout", "1", "--threads", "1")
    text = out + err
    assert code == 1 and "Traceback" not in text, text[-3000:]
    assert f"error[KD786]: the rendezvous at 127.0.0.1:{port} failed: 2 processes were to meet there within 1 s" in text
    assert f"rank {rank}: " in text and reason in text
    assert "--rdzv-endpoint" in text and "--rdzv-conf timeout=N" in text  # the hints
    assert not dist.is_initialized()


@pytest.mark.slow(seconds=8)
def test_torchrun_with_a_machine_missing_ends_after_its_rendezvous_timeout(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", "0", "--nproc_per_node", "1",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-conf", "timeout=1",
           ENTRY, "train", SPEC, "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "1/2 clients joined" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # kdsl never started: the agents did not meet
