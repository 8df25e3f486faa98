"""Sharded checkpoints without a launch (the launches are in test_fsdp_train.py): the writer in a
process group of one (what a redone epoch finds of a killed writer, the round trip), the resume guard
at another world size (``batch_size`` is per process, so a run resumed on another number of
processes must keep the global batch, and is told the batch size that does), the folders a new
checkpoint removes, and the shards a tracker never uploads."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from kdsl.core.diagnostics import KdslError
from kdsl.training.config import TrainConfig
from kdsl.training.dist_checkpoint import merge_shards, prune, save
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


@pytest.fixture
def group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/group", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _trainer(run):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    stage = SimpleNamespace(name="main", state_dict=lambda: {"step": {
        "optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": 3}, "scaler": None}})
    run.mkdir()
    rd = RunDir(str(run))
    rd.begin(fresh=True)
    rd.claim("shards/")  # listed at the run's first checkpoint
    return SimpleNamespace(dist=SimpleNamespace(enabled=True, main=True, rank=0, world=1), run_dir=rd,
                           sharding=object(), distiller=model, stage=stage, device=torch.device("cpu")), optimizer


def test_a_redone_epoch_replaces_what_a_killed_writer_left(tmp_path, group):
    """A writer killed mid-write leaves epoch2.partial; one killed after its rename, before
    checkpoint.pt, a whole epoch2 that nothing names. Redoing the epoch replaces both, and the
    shards read back are the state written, optimizer states keyed by parameter index again."""
    run = tmp_path / "run"
    trainer, optimizer = _trainer(run)
    for stale in ("epoch2", "epoch2.partial"):
        os.makedirs(run / "shards" / stale)
        (run / "shards" / stale / "__0_0.distcp").write_bytes(b"left by a killed writer")
        (run / "shards" / stale / "__9_0.distcp").write_bytes(b"of a rank that no longer is")
    shards = save(trainer, 2)
    assert sorted(os.listdir(run / "shards")) == ["epoch2"]
    assert sorted(os.listdir(run / "shards" / "epoch2")) == [".metadata", "__0_0.distcp"]
    assert shards["dir"] == "shards/epoch2" and shards["world"] == 1 and set(shards["files"]) == {".metadata", "__0_0.distcp"}
    state = merge_shards(str(run), {"epoch": 2, "shards": shards}, "checkpoint.pt")
    mine = trainer.distiller.state_dict()
    assert list(state["distiller"]) == list(mine) and all(torch.equal(state["distiller"][k], v) for k, v in mine.items())
    step = state["optimization"]["main"]["step"]
    assert step["scheduler"] == {"last_epoch": 3} and step["scaler"] is None
    saved = optimizer.state_dict()["state"]
    assert sorted(step["optimizer"]["state"]) == sorted(saved)
    for i, slot in saved.items():
        assert all(torch.equal(step["optimizer"]["state"][i][k], v) for k, v in slot.items())
    assert torch.equal(state["rng"]["torch"], torch.random.get_rng_state())


def test_a_sharded_runs_checkpoint_is_no_weights_file(tmp_path):
    """``model(...) from "RUN/checkpoint.pt"`` of an fsdp run: its models are in the shards."""
    from kdsl.io.weights import read_state_dict

    torch.save({"format": "kdsl-run/2", "distiller": {}, "shards": {"dir": "shards/epoch2", "world": 2, "files": {}}},
               tmp_path / "checkpoint.pt")
    with pytest.raises(KdslError) as caught:
        read_state_dict(str(tmp_path / "checkpoint.pt"))
    text = str(caught.value)
    assert "KD509" in text and "its models are in the shards it names (shards/epoch2)" in text
    assert "load the student.pt written next to it" in text
