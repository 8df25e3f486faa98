"""Data factories of the scheduling tests (issue #20), referenced as ``sched_data:NAME``."""

from __future__ import annotations

from torch.utils.data import Subset

import kdsl.data


def small_digits(train: int = 40, val: int = 20):
    """The first ``train`` and ``val`` samples of the digits: epochs whose batches a test counts."""
    splits = kdsl.data.digits()
    return Subset(splits.train, range(train)), Subset(splits.val, range(val))
