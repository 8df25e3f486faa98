"""`kdsl train` on two CPU processes (gloo), DistributedDataParallel: the user's command under
torchrun once, and the runs that observe the ranks as processes of their own with torchrun's
environment, forked ready-imported (tests/forked.run_ranks)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdsl.data
import kdsl.zoo
from kdsl.core.diagnostics import KdslError
from kdsl.training.distributed import Dist, check_ranks_agree
from forked import free_port, run_ranks
from train_helpers import KD_SPEC, ROOT, metrics_csv, metrics_jsonl, student_weights

HERE = Path(__file__).resolve().parent
TIMEOUT = 240


def _torchrun(*args: str):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_COLOR="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop("FORCE_COLOR", None)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout, proc.stderr


def _evaluate(weights):
    """Top-1 correct count and mean loss of a digits_cnn with these weights, in one process."""
    model = kdsl.zoo.digits_cnn()
    model.load_state_dict(weights, strict=True)
    model.eval()
    val = kdsl.data.digits().val
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        out = model(x)
    return int((out.argmax(1) == y).sum()), float(torch.nn.functional.cross_entropy(out, y)), len(val)


@pytest.mark.slow(seconds=10)  # torchrun and its two processes
def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = _torchrun("-m", "kdsl", "train", KD_SPEC, "--epochs", "1", "--out", str(out))
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stdout + stderr
    # only rank 0 logs: one announcement, one epoch line, one table, one closing line
    assert stdout.count("kdsl train: results on the validation set") == 1
    assert stdout.count("run written to") == 1
    # the epoch's line ("epoch   1/1  loss ..."), not a progress line ("epoch 1/1 step 10/12 ..."), which
    # a pipe gets once an epoch has run 30 s (progress_every's default): a loaded machine's
    assert len(re.findall(r"^epoch +1/1 +loss ", stdout, re.M)) == 1
    assert "2 processes" in stdout
    assert "of 12 steps" in stdout  # 1438 samples, 719 per rank, batches of 64
    # only rank 0 writes: one row per epoch, the files of a run and nothing else
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1]
    assert [r["epoch"] for r in metrics_csv(out)] == ["1"]
    assert metrics_jsonl(out)[0]["step"] == 12
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "student.pt", "best.pt", "metrics.jsonl",
                                               "metrics.csv", "curves.png", "summary.json", "models", "spec",
                                               "environment.json", "kdsl-run.json"}
    sessions = json.loads((out / "environment.json").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["world_size"] == 2  # rank 0's, once
    kdsl.zoo.digits_cnn().load_state_dict(student_weights(out), strict=True)


@pytest.mark.slow(seconds=3)  # two forked ranks
def test_two_ranks_agree(tmp_path):
    """The same run with the rank-agreement check observed (tests/train/dist_entry.py): it ran and
    passed on both ranks, both ranks hold exactly the saved student (buffers included), and the
    logged validation metrics are the saved student's."""
    out = tmp_path / "run"
    code, stdout, stderr = run_ranks("train", KD_SPEC, "--epochs", "1", "--lr", "0.5", "--out", str(out),
                                     entry="dist_entry")
    assert code == 0, stderr[-3000:]
    assert (out / "agreed0").read_text() == "ok" and (out / "agreed1").read_text() == "ok"
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    saved = student_weights(out)
    for k in saved:
        assert torch.equal(rank0[k], rank1[k]), f"ranks differ in {k}"
        assert torch.equal(rank0[k], saved[k]), k
    correct, loss, n = _evaluate(saved)
    row = metrics_jsonl(out)[0]
    assert row["val_top1"] == pytest.approx(100.0 * correct / n, abs=1e-9)
    assert row["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert row["val_top1"] > 20.0  # it learned (a high lr for one short epoch)


def test_rank_agreement_check_detects_divergence(monkeypatch):
    """check_ranks_agree against a stand-in for torch.distributed (all_gather hands
    back what the other rank would send): equal sums pass, a difference is KD707."""
    import torch.distributed as dist

    student = kdsl.zoo.digits_cnn()
    for nudge, should_fail in ((0.0, False), (1e-3, True)):
        def all_gather(tensors, mine, nudge=nudge):
            tensors[0].copy_(mine)
            tensors[1].copy_(mine + nudge)

        monkeypatch.setattr(dist, "all_gather", all_gather)
        if should_fail:
            with pytest.raises(KdslError) as info:
                check_ranks_agree(student, Dist(rank=0, world=2), torch.device("cpu"))
            d = info.value.diagnostics[0]
            assert d.code == "KD707" and "diverged" in d.message
        else:
            check_ranks_agree(student, Dist(rank=0, world=2), torch.device("cpu"))


@pytest.mark.slow(seconds=3)  # two forked ranks
def test_phases_average_their_gradients(tmp_path):
    """Phases run without the DDP wrapper: the loop averages every phase's gradients over the
    ranks itself, so both ranks end with the same student (the trainer's agreement check)."""
    from train_helpers import PHASED_SPEC

    out = tmp_path / "run"
    code, stdout, stderr = run_ranks("train", PHASED_SPEC, "--epochs", "1", "--out", str(out))
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stdout + stderr and "diverged" not in stderr
    assert stdout.count("run written to") == 1
    rows = metrics_jsonl(out)
    assert [r["epoch"] for r in rows] == [1] and "train/soft/kd" in rows[0] and "train/hard/task" in rows[0]
