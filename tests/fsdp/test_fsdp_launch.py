"""Two machines stood in for by two torchrun agents on this one (--nnodes 2 --node-rank R
--rdzv-endpoint 127.0.0.1:PORT, one process each): they meet, train sharded steps together, and
when the rank on the second "machine" fails, the first one stops too, promptly, and the failing
rank's message is in its machine's log."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from forked import free_port
from fsdp_helpers import ENTRY, HERE, ROOT, SPEC, TIMEOUT, corpus

pytestmark = pytest.mark.slow(seconds=11)


def test_two_nodes_train_together_and_a_failing_rank_stops_both(tmp_path):
    data = corpus(tmp_path)
    port = free_port()
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1", KDSL_TEST_FAIL_AT="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "FORCE_COLOR"):
        env.pop(key, None)
    nodes = []
    t0 = time.time()
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc_per_node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}",
               ENTRY, "train", SPEC, "--data", data, "--out", str(out), "--allow-random-teacher",
               "--strategy", "fsdp", "--collective-timeout", "60"]
        nodes.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=TIMEOUT)[0] for p in nodes]
    elapsed = time.time() - t0
    assert (out / "reached2").exists(), logs[1][-3000:]  # two sharded steps ran across the "machines"
    assert "2 processes" in logs[0]  # rank 0 (node 0) announces a run of both
    assert nodes[1].returncode != 0 and "rank 1 fails on purpose at step 2" in logs[1]
    assert "error[KD707]" in logs[1]
    assert nodes[0].returncode != 0, logs[0][-3000:]  # taken down, not left waiting
    assert elapsed < TIMEOUT
