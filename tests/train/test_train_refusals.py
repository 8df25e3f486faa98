"""Runs that cannot do what they say are refused with a message that is true (issue #13, item 6):
``drop_last`` with a batch larger than the data set (it trained 0 steps and reported loss 0.0000),
and a non-finite loss's hint, which pointed to "the last good checkpoint in DIR" when DIR had none."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdsl
from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC, assert_usage_error

FAST = {"epochs": 2, "steps_per_epoch": 2, "seed": 1, "threads": 1}


def test_drop_last_with_a_batch_larger_than_the_data_is_refused_before_training(tmp_path):
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), drop_last=True, batch_size=5000, **FAST)
    d = info.value.diagnostics[0]
    assert d.code == "KD702"
    assert "drop_last = true with batch_size 5000 larger than the training set (1438 samples" in d.message
    assert "0 steps" in d.message and any("--batch-size" in h for h in d.hints)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_drop_last_refusal_on_the_command_line(tmp_path):
    result = run_cli_in_process("train", KD_SPEC, "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "run"),
                                "--data", "kdsl.data:digits(batch_size=4000, drop_last=true)")
    assert_usage_error(result, "KD702", "drop_last = true", "batch_size 4000", exit_code=result[0])
    assert result[0] not in (0, 3)


def test_without_drop_last_a_large_batch_still_trains(tmp_path):
    result = kdsl.train(KD_SPEC, out=str(tmp_path / "run"), batch_size=5000, **FAST)
    assert result.history[-1]["train_loss"] > 0


def _nan_run(out, **flags):
    """A run whose loss overflows at once: the kd term weighted 1e300 (an lr of 1e30 did it before
    learning rates were bounded, issue #26.12)."""
    text = Path(KD_SPEC).read_text().replace("tau=4) * 0.9", "tau=4) * 1e300")
    spec = kdsl.loads(text, str(Path(KD_SPEC).with_name("overflowing.kd")))  # teacher.pt beside it
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(spec, out=str(out), **dict(FAST, **flags))
    d = info.value.diagnostics[0]
    assert d.code == "KD707" and ("nan" in d.message or "infinite" in d.message), d.message
    return " ".join(d.hints)


def test_a_nan_in_the_first_epoch_does_not_point_to_a_checkpoint(tmp_path):
    hint = _nan_run(tmp_path / "run")
    assert "no epoch finished, so there is no checkpoint" in hint
    assert "last good checkpoint" not in hint
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_nan_after_a_checkpoint_points_to_it(tmp_path):
    from kdsl.training.resume import nan_hint
    from kdsl.training.rundir import RunDir

    run = RunDir(str(tmp_path))
    assert "no checkpoint" in nan_hint(run)
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    hint = nan_hint(run)
    assert f"the last good checkpoint is in {tmp_path}" in hint and "--resume" in hint
