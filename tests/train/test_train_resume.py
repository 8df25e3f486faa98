"""`kdsl train --resume`: an interrupted run continues to exactly the weights of an uninterrupted one."""

from __future__ import annotations

import re

import pytest

from kdsl.training.rundir import RunDir
from tests.conftest import interrupted_as_epoch_starts
from train_helpers import (BASELINE_SPEC, KD_SPEC, assert_same_weights, metrics_csv, metrics_jsonl,
                           student_weights)
from train_helpers import train_in_process as train

EPOCHS = 4
SEED = 3
# epochs of 5 steps, not the whole digits set: resuming restores the state at an epoch's end,
# whatever the epoch's length; a full epoch would only make each run longer
STEPS = 5
VOLATILE = {"time_s"}  # wall-clock time is the only thing allowed to differ between the runs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("resume") / "full"
    try:
        train(KD_SPEC, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out))
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
    with interrupted_as_epoch_starts(monkeypatch, index):
        train(spec, **flags)


def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _crash_before_epoch(monkeypatch, KD_SPEC, 2, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out))
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2]

    summary, printed = train(KD_SPEC, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out), resume=True)
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
    flags = dict(student="train_models:dropout_cnn(p=0.3)", epochs=3, steps_per_epoch=STEPS, seed=SEED)
    train(BASELINE_SPEC, out=str(tmp_path / "full"), **flags)
    _crash_before_epoch(monkeypatch, BASELINE_SPEC, 1, out=str(tmp_path / "cut"), **flags)
    train(BASELINE_SPEC, out=str(tmp_path / "cut"), resume=True, **flags)
    assert_same_weights(student_weights(tmp_path / "cut"), student_weights(tmp_path / "full"))
    _same_history(metrics_jsonl(tmp_path / "cut"), metrics_jsonl(tmp_path / "full"))


def test_resume_with_augmenting_workers(tmp_path, monkeypatch):
    """Random augmentation drawn in a DataLoader worker process: the workers' seeds depend on
    (seed, epoch) only, so the resumed epochs see the same augmented batches."""
    flags = dict(data="train_data:noisy_digits(num_workers=1)", epochs=3, steps_per_epoch=STEPS, seed=SEED)
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
        train(KD_SPEC, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out))
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2, 3]
    monkeypatch.setattr(RunDir, "write_checkpoint", real_save)

    train(KD_SPEC, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out), resume=True)
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2, 3, 4]
    assert [r["epoch"] for r in metrics_csv(out)] == ["1", "2", "3", "4"]
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    _same_history(metrics_jsonl(out), metrics_jsonl(uninterrupted))
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_resuming_a_finished_run_is_a_no_op(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "done"
    shutil.copytree(uninterrupted, out)
    # summary.json is rewritten as it was; environment.json gains this process's session
    kept = ("summary.json", "environment.json")
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in kept}
    summary, printed = train(KD_SPEC, epochs=EPOCHS, steps_per_epoch=STEPS, seed=SEED, out=str(out), resume=True)
    assert "the run is complete (4 epochs); nothing to resume" in printed
    assert not re.search(r"^epoch +\d+/\d+ +loss", printed, re.M)  # no epoch trained
    after = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name not in kept}
    assert "models/student.pt" in after and after == before  # weights, checkpoint, metrics, curves untouched
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


# ---- stages and phases: each (stage, phase) has its own optimizer and schedule state ----------
@pytest.fixture(scope="module")
def two_stage_full(tmp_path_factory):
    """The two-stage spec trained without interruption (4 epochs of 5 steps)."""
    import torch

    from train_helpers import TWO_STAGE_SPEC

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("two_stage") / "full"
    try:
        train(TWO_STAGE_SPEC, out=str(out), seed=SEED)
    finally:
        torch.set_num_threads(before)
    return out


@pytest.mark.parametrize("crash_at", [1, 2, 3], ids=["inside-stage-1", "at-the-stage-boundary", "inside-stage-2"])
def test_two_stage_run_resumes_in_the_right_stage(two_stage_full, tmp_path, monkeypatch, crash_at):
    """Stage 'hint' (epochs 1-2, Adam) then 'distil' (epochs 3-4, SGD): cut before epoch
    ``crash_at + 1``, resumed, the run ends with exactly the tensors of an uninterrupted one."""
    from train_helpers import TWO_STAGE_SPEC, run_state

    flags = dict(seed=SEED)
    _crash_before_epoch(monkeypatch, TWO_STAGE_SPEC, crash_at, out=str(tmp_path / "cut"), **flags)
    state = torch_load(tmp_path / "cut" / "checkpoint.pt")
    assert state["epoch"] == crash_at
    assert state["stage"] == ("hint" if crash_at <= 2 else "distil")
    assert list(state["optimization"]) == [state["stage"]]
    _, printed = train(TWO_STAGE_SPEC, out=str(tmp_path / "cut"), resume=True, **flags)
    assert f"after epoch {crash_at}" in printed
    full, cut = run_state(two_stage_full), run_state(tmp_path / "cut")
    assert_same_weights(cut, full)
    assert any(k.startswith("connectors/hint.") for k in full)  # the stage's connectors were saved
    _same_history(metrics_jsonl(tmp_path / "cut"), metrics_jsonl(two_stage_full))
    assert [r["stage"] for r in metrics_jsonl(tmp_path / "cut")] == ["hint", "hint", "distil", "distil"]


def test_phased_run_resumes_every_phase_optimizer(tmp_path, monkeypatch):
    """Phases 'soft' (Adam, twice a step) and 'hard' (SGD with momentum): both optimizers' state
    and both schedules are in the checkpoint and come back on resume, bit for bit."""
    from train_helpers import PHASED_SPEC, run_state

    train(PHASED_SPEC, out=str(tmp_path / "full"), seed=SEED)
    _crash_before_epoch(monkeypatch, PHASED_SPEC, 2, out=str(tmp_path / "cut"), seed=SEED)
    state = torch_load(tmp_path / "cut" / "checkpoint.pt")
    phases = state["optimization"]["main"]
    assert list(phases) == ["soft", "hard"]
    assert phases["soft"]["scheduler"]["last_epoch"] == 2 * 2 * 4  # two epochs of 4 steps, twice a step
    assert phases["hard"]["scheduler"]["last_epoch"] == 2 * 4
    assert phases["soft"]["optimizer"]["state"] and phases["hard"]["optimizer"]["state"]
    train(PHASED_SPEC, out=str(tmp_path / "cut"), resume=True, seed=SEED)
    assert_same_weights(run_state(tmp_path / "cut"), run_state(tmp_path / "full"))
    _same_history(metrics_jsonl(tmp_path / "cut"), metrics_jsonl(tmp_path / "full"))


def torch_load(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
