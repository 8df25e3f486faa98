"""Sharded checkpoints without a launch (the launches are in test_fsdp_train.py): the resume guard
at another world size (``batch_size`` is per process, so a run resumed on another number of
processes must keep the global batch, and is told the batch size that does), the folders a new
checkpoint removes, and the shards a tracker never uploads."""

from __future__ import annotations

import pytest

from kdsl.core.diagnostics import KdslError
from kdsl.training.config import TrainConfig
from kdsl.training.dist_checkpoint import prune
from kdsl.training.resume import check_same_run
from kdsl.training.rundir import RunDir
from kdsl.training.trackers import run_files


def _config(batch_size: int):
    cfg = TrainConfig()
    cfg.batch_size = batch_size
    return cfg.describe()


@pytest.mark.parametrize("saved, now, worlds", [
    (4, 8, (2, 1)),  # 2 -> 1
    (8, 4, (1, 2)),  # 1 -> 2
    (4, 4, (2, 2)),
    (4, 4, (None, 1)),  # a checkpoint that does not say its world size: per process, as before
])
def test_the_global_batch_kept_resumes(saved, now, worlds):
    check_same_run(_config(saved), _config(now), "run/checkpoint.pt", worlds)


@pytest.mark.parametrize("saved, now, worlds, hint", [
    (4, 4, (2, 1), "resume with --batch-size 8 (the global batch 8 over 1 process)"),
    (8, 8, (1, 2), "resume with --batch-size 4 (the global batch 8 over 2 processes)"),
    (3, 3, (2, 4), "the global batch 6 does not split over 4 processes"),
])
def test_another_global_batch_is_refused(saved, now, worlds, hint):
    with pytest.raises(KdslError) as caught:
        check_same_run(_config(saved), _config(now), "run/checkpoint.pt", worlds)
    text = str(caught.value)
    assert "KD703" in text and f"global batch of {saved} x {worlds[0]} process" in text
    assert hint in text, text


def _shards(run):
    for name in ("epoch1", "epoch2.partial", "epoch2"):
        (run / "shards" / name).mkdir(parents=True)
        (run / "shards" / name / "__0_0.distcp").write_bytes(b"x")
    (run / "student.pt").write_bytes(b"x")


def test_a_checkpoint_keeps_only_the_shards_it_names(tmp_path):
    _shards(tmp_path)
    prune(RunDir(str(tmp_path)), {"dir": "shards/epoch2", "world": 2, "files": {}})
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["epoch2"]
    prune(RunDir(str(tmp_path)), None)  # a plain checkpoint (the run resumed in one process) names none
    assert list((tmp_path / "shards").iterdir()) == []
    assert (tmp_path / "student.pt").exists()


def test_trackers_never_upload_the_shards(tmp_path):
    _shards(tmp_path)
    assert [rel for _, rel in run_files(str(tmp_path))] == [""]  # student.pt alone
