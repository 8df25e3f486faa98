"""`kdsl train --resume`: an interrupted run continues to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import re

import pytest

from kdsl.training.data import EpochSampler
from kdsl.training.rundir import RunDir
from train_helpers import (BASELINE_SPEC, KD_SPEC, assert_same_weights, metrics_csv, metrics_jsonl,
                           student_weights)
from train_helpers import train_in_process as train

EPOCHS = 4
SEED = 3
VOLATILE = {"time_s"}  # wall-clock time is the only thing allowed to differ between the runs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("resume") / "full"
    try:
        train(KD_SPEC, epochs=EPOCHS, seed=SEED, out=str(out))
    finally:
        torch.set_num_threads(before)
    return out


def _same_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert {k: v for k, v in ra.items() if k not in VOLATILE} == \
            {k: v for k, v in rb.items() if k not in VOLATILE}


def _crash_before_epoch(monkeypatch, spec, index, **flags):
    """Train, dying (KeyboardInterrupt) as epoch ``index`` (0-based) starts: the checkpoint of the
    epoch before it is on disk, nothing of epoch ``index`` is."""
    real_set_epoch = EpochSampler.set_epoch

    def crash(self, epoch):
        if epoch == index:
            raise KeyboardInterrupt
        real_set_epoch(self, epoch)

    with monkeypatch.context() as m:
        m.setattr(EpochSampler, "set_epoch", crash)
        with pytest.raises(KeyboardInterrupt):
            train(spec, **flags)


def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _crash_before_epoch(monkeypatch, KD_SPEC, 2, epochs=EPOCHS, seed=SEED, out=str(out))
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2]

    summary, printed = train(KD_SPEC, epochs=EPOCHS, seed=SEED, out=str(out), resume=True)
    assert "resuming" in printed and "after epoch 2" in printed
    assert "epoch   3/4" in printed and "epoch   1/4" not in printed
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    rows = metrics_jsonl(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    _same_history(rows, metrics_jsonl(uninterrupted))
    assert [r["epoch"] for r in metrics_csv(out)] == ["1", "2", "3", "4"]
    assert summary["epochs_done"] == EPOCHS


def test_resume_restores_the_random_state(tmp_path, monkeypatch):
    """A student with dropout: the resumed epochs draw the same dropout masks as an uninterrupted
    run only if the RNG state was saved and restored (digits alone draws nothing after init)."""
    flags = dict(student="train_models:dropout_cnn(p=0.3)", epochs=3, seed=SEED)
    train(BASELINE_SPEC, out=str(tmp_path / "full"), **flags)
    _crash_before_epoch(monkeypatch, BASELINE_SPEC, 1, out=str(tmp_path / "cut"), **flags)
    train(BASELINE_SPEC, out=str(tmp_path / "cut"), resume=True, **flags)
    assert_same_weights(student_weights(tmp_path / "cut"), student_weights(tmp_path / "full"))
    _same_history(metrics_jsonl(tmp_path / "cut"), metrics_jsonl(tmp_path / "full"))


def test_resume_with_augmenting_workers(tmp_path, monkeypatch):
    """Random augmentation drawn in a DataLoader worker process: the workers' seeds depend on
    (seed, epoch) only, so the resumed epochs see the same augmented batches."""
    flags = dict(data="train_data:noisy_digits(num_workers=1)", epochs=3, seed=SEED)
    train(BASELINE_SPEC, out=str(tmp_path / "full"), **flags)
    _crash_before_epoch(monkeypatch, BASELINE_SPEC, 1, out=str(tmp_path / "cut"), **flags)
    train(BASELINE_SPEC, out=str(tmp_path / "cut"), resume=True, **flags)
    assert_same_weights(student_weights(tmp_path / "cut"), student_weights(tmp_path / "full"))
    _same_history(metrics_jsonl(tmp_path / "cut"), metrics_jsonl(tmp_path / "full"))


def test_crash_after_metrics_before_checkpoint(uninterrupted, tmp_path, monkeypatch):
    """The metrics of epoch 3 were written but its checkpoint was not: the resumed run starts
    again at epoch 3 and the metrics end up with one row per epoch, not two rows for epoch 3."""
    out = tmp_path / "run"
    real_save = RunDir.write_checkpoint

    def save_then_die(self, *, epoch, **rest):
        if epoch == 3:
            raise KeyboardInterrupt
        return real_save(self, epoch=epoch, **rest)

    monkeypatch.setattr(RunDir, "write_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(KD_SPEC, epochs=EPOCHS, seed=SEED, out=str(out))
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2, 3]
    monkeypatch.setattr(RunDir, "write_checkpoint", real_save)

    train(KD_SPEC, epochs=EPOCHS, seed=SEED, out=str(out), resume=True)
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2, 3, 4]
    assert [r["epoch"] for r in metrics_csv(out)] == ["1", "2", "3", "4"]
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    _same_history(metrics_jsonl(out), metrics_jsonl(uninterrupted))
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_resuming_a_finished_run_is_a_no_op(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "done"
    shutil.copytree(uninterrupted, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "summary.json"}
    summary, printed = train(KD_SPEC, epochs=EPOCHS, seed=SEED, out=str(out), resume=True)
    assert "the run is complete (4 epochs); nothing to resume" in printed
    assert not re.search(r"^epoch +\d+/\d+ +loss", printed, re.M)  # no epoch trained
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "summary.json"}
    assert after == before  # weights, checkpoint, metrics and curves untouched
    assert summary["epochs_done"] == EPOCHS
    assert summary["student"]["top1"] == metrics_jsonl(uninterrupted)[-1]["val_top1"]


def test_resume_with_another_spec_is_refused(uninterrupted, tmp_path, kcli):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    code, stdout, err = kcli("train", BASELINE_SPEC, "--epochs", str(EPOCHS), "--out", str(out), "--resume")
    assert code == 2, err
    assert "error[KD703]" in err and "different spec" in err and "Traceback" not in err
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2, 3, 4]
