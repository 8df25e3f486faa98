"""The run's batch transform (``batch_transform = mixup_cutmix()``): built once from the train
block, applied to every training batch before the models see it (and to the dry run's example
batch, so that the losses are checked on what they will get), never to validation batches.

Its randomness comes from numpy's generator seeded by :func:`~kdsl.training.data.sample_seed` of
(seed, epoch, step): the same batch is mixed the same way in every run and after a resumption,
and torch's own generator (dropout, noise) draws as if there were no transform."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import error
from kdsl.training.data import sample_seed

DRY_RUN_STEP = -1  # the example batch's "step": a draw of its own


class BatchTransform:
    """``transform(batch, epoch, step)``: the batch ``(input, target, index)`` transformed."""

    def __init__(self, cfg, num_classes: Optional[int], span=None) -> None:
        name, options = cfg.batch_transform
        self.name, self.seed, self.span = name, cfg.seed, span
        self.module = REGISTRY.get("batch_transform", name).load()(**options)
        self.module.classes = num_classes  # the mixing transforms' default class count

    def __call__(self, batch: Any, epoch: int, step: int) -> Any:
        if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise error("KD321", f"batch_transform {self.name}() takes batches of (input, target), got "
                        f"{'named fields' if isinstance(batch, dict) else type(batch).__name__}", self.span,
                        hint="batch transforms mix or rotate images with class labels")
        rng = np.random.default_rng(sample_seed(self.seed, epoch + 1, step))
        try:
            x, y = self.module(batch[0], batch[1], rng)
        except (ValueError, RuntimeError) as exc:
            raise error("KD321", f"batch_transform {self.name}(): {exc}", self.span) from None
        return (x, y, *batch[2:])


def run_transform(spec, cfg, data) -> Optional[BatchTransform]:
    """The run's transform, or None; where the train block writes it locates its errors."""
    if cfg.batch_transform is None:
        return None
    setting = spec.train.get("batch_transform") if spec.train is not None and \
        cfg.sources.get("batch_transform") == "spec" else None
    return BatchTransform(cfg, data.num_classes if data is not None else None,
                          setting.value.span if setting is not None else None)
