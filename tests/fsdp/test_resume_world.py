"""The resume guard at another world size: ``batch_size`` is per process, so a run resumed on
another number of processes must keep the global batch (batch_size x processes), and is told the
batch size that does (the launches are in test_fsdp_train.py)."""

from __future__ import annotations

import pytest

from kdsl.core.diagnostics import KdslError
from kdsl.training.config import TrainConfig
from kdsl.training.resume import check_same_run


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
