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

from forked import child_env, free_port
from fsdp_helpers import ENTRY, HERE, ROOT, SPEC, TIMEOUT, corpus

pytestmark = pytest.mark.slow(seconds=11)


def _import_path(*more) -> dict:
    """The import path of a launched process: the checkout (and ``more`` folders) before the test's own."""
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, more), os.environ.get("PYTHONPATH", "")])}


def test_two_nodes_train_together_and_a_failing_rank_stops_both(tmp_path):
    data = corpus(tmp_path)
    port = free_port()
    out = tmp_path / "run"
    env = child_env({"OMP_NUM_THREADS": "1", "KDSL_TEST_FAIL_AT": "2", **_import_path(HERE),
                     **dict.fromkeys(("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))})
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


SCRIPT = """
import os, sys
from pathlib import Path
import kdsl

out = Path(sys.argv[1])
kdsl.train(sys.argv[2], out=str(out / "run"), data=sys.argv[3], strategy="fsdp", allow_random_teacher=True,
           epochs=1, steps_per_epoch=2, threads=1)
threads = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
(out / f"threads.{os.environ['RANK']}").write_text(" ".join(threads))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads a process's threads from /proc (Linux)")
def test_a_script_calling_train_ends_the_groups_threads_before_it_returns(tmp_path):
    """A user's script run as torchrun's ranks (fresh interpreters, as torchrun starts them: nothing
    imported before kdsl joins the group): when kdsl.train returns, the process group it started
    is gone with its communication threads (gloo's), while the interpreter is whole. Left to the
    interpreter's teardown, they ended in no set order, and a finished rank aborted now and then
    ('terminate called without an active exception')."""
    data = corpus(tmp_path)
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    port = free_port()
    env = child_env({"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                     "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", **_import_path()})
    ranks = [subprocess.Popen([sys.executable, str(script), str(tmp_path), SPEC, data], cwd=tmp_path,
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    logs = [p.communicate(timeout=TIMEOUT)[0] for p in ranks]
    for rank, process in enumerate(ranks):
        assert process.returncode == 0, logs[rank][-3000:]
        threads = (tmp_path / f"threads.{rank}").read_text().split()
        # the group's: pt_gloo_runloop, gloo_tcp_loop, and the store's pt_tcpstore_uv (rank 0 hosts it)
        assert not [t for t in threads if "gloo" in t or "tcpstore" in t], (rank, threads)
