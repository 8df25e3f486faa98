"""Checkpoints within an epoch (checkpoint_every = N steps), resumed bit for bit, and early
stopping (patience on best_metric) (issue #27.14)."""

from __future__ import annotations

import json

import pytest
import torch

import kdsl
from kdsl.training.report import Reporter, RunInterrupted
from train_helpers import BASELINE_SPEC, KD_SPEC, assert_same_weights, metrics_jsonl, student_weights

RUN = dict(epochs=2, threads=1, eval_teachers=False, seed=3)  # 23 steps an epoch (1438 samples, batch 64)


class _StopAt(Reporter):
    """Ctrl-C at the ``n``th progress event (every 10 steps and at an epoch's last step)."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def step(self, epoch, steps_done, steps, terms):
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def _rows(run):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in metrics_jsonl(run)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("within") / "full"
    kdsl.train(KD_SPEC, out=str(out), checkpoint_every=4, **RUN)
    return out


def test_a_checkpoint_within_an_epoch_resumes_bit_for_bit(uninterrupted, tmp_path):
    out = tmp_path / "run"
    # progress events at steps 10, 20, 23 of epoch 1, then 10, 20 of epoch 2: stop at global step 43,
    # whose last checkpoint is global step 40, step 17 of epoch 2
    with pytest.raises(RunInterrupted) as stop:
        kdsl.train(KD_SPEC, out=str(out), checkpoint_every=4, reporter=_StopAt(5), **RUN)
    assert (stop.value.saved, stop.value.steps) == (1, 17)
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 40 and state["within"]["steps"] == 17
    kdsl.train(KD_SPEC, out=str(out), resume=True, checkpoint_every=4, **RUN)
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    assert _rows(out) == _rows(uninterrupted)  # the interrupted epoch's loss sums carried over


def test_an_interrupted_first_epoch_keeps_its_checkpoint(tmp_path):
    """An interrupted one-epoch run used to keep nothing."""
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stop:
        kdsl.train(BASELINE_SPEC, out=str(out), checkpoint_every=5, reporter=_StopAt(2), epochs=1, threads=1,
                   eval_teachers=False)
    assert (stop.value.saved, stop.value.steps) == (0, 15)  # the progress event of step 20 comes before its checkpoint
    result = kdsl.train(BASELINE_SPEC, out=str(out), resume=True, checkpoint_every=5, epochs=1, threads=1,
                        eval_teachers=False)
    assert result.summary["epochs_done"] == 1
    assert [r["step"] for r in metrics_jsonl(out)] == [23]


def test_a_damaged_within_record_is_refused(uninterrupted, tmp_path):
    from kdsl.training.rundir import checkpoint_problem

    state = torch.load(uninterrupted / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint_problem(state) is None
    state["within"] = {"steps": 3, "sums": {"totals": {}, "runs": {"step": 1}, "sums": {}, "counts": {}}}
    assert "within" in checkpoint_problem(state)


def test_early_stopping_ends_the_run_and_a_resume_agrees(tmp_path):
    out = tmp_path / "run"
    flags = dict(epochs=6, steps_per_epoch=2, threads=1, eval_teachers=False, patience=2,
                 optimizer="sgd(lr=1e-12)")  # nothing learnt: top-1 never improves after epoch 1
    result = kdsl.train(BASELINE_SPEC, out=str(out), **flags)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 3
    again = kdsl.train(BASELINE_SPEC, out=str(out), resume=True, **flags)
    assert [r["epoch"] for r in again.history] == [1, 2, 3]


def test_patience_must_stay_the_same_on_resume(tmp_path):
    out = tmp_path / "run"
    kdsl.train(BASELINE_SPEC, out=str(out), epochs=2, steps_per_epoch=2, threads=1, eval_teachers=False, patience=3)
    with pytest.raises(kdsl.KdslError, match="patience"):
        kdsl.train(BASELINE_SPEC, out=str(out), resume=True, epochs=2, steps_per_epoch=2, threads=1,
                   eval_teachers=False, patience=1)


def test_validation_every_n_steps_changes_nothing_else(uninterrupted, tmp_path):
    from kdsl.training.report import EventLog

    out, events = tmp_path / "run", EventLog()
    kdsl.train(KD_SPEC, out=str(out), checkpoint_every=4, val_every=10, reporter=events, **RUN)
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    # every 10 global steps (epochs of 23 steps; an epoch's end validates anyway)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[0]["epoch"] == pytest.approx(10 / 23) and 0 <= rows[0]["val_top1"] <= 100
    assert [e[1]["step"] for e in events.events if e[0] == "validation"] == [10, 20, 30, 40]
    # evaluation draws no randomness and leaves the models training: the run is the same run
    assert_same_weights(student_weights(out), student_weights(uninterrupted))
    assert _rows(out) == _rows(uninterrupted)


def test_a_resumed_run_redoes_the_validations_after_its_checkpoint(tmp_path):
    out, flags = tmp_path / "run", dict(checkpoint_every=12, val_every=10, **RUN)
    # stopped at global step 43 (step 20 of epoch 2): checkpoint at step 36, validations at 10, 20, 30, 40
    with pytest.raises(RunInterrupted):
        kdsl.train(BASELINE_SPEC, out=str(out), reporter=_StopAt(5), **flags)
    steps = lambda: [json.loads(r)["step"] for r in (out / "validation.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps() == [10, 20, 30, 40]
    kdsl.train(BASELINE_SPEC, out=str(out), eval_only=True, **flags)
    assert steps() == [10, 20, 30]  # the checkpoint's: step 40's validation came after it
    kdsl.train(BASELINE_SPEC, out=str(out), resume=True, **flags)
    assert steps() == [10, 20, 30, 40]


def test_kdsl_train_says_which_step_an_interrupted_run_kept():
    from kdsl.cli.train_view import interrupted_text

    text = interrupted_text(RunInterrupted("runs/lm", 0, 1, 120), ["train", "specs/lm/kd.kd", "--checkpoint-every", "40"])
    assert "step 120 of epoch 1 of 1 is saved in runs/lm" in text and "nothing is saved" not in text
    assert "--resume" in text
