"""Losses that are not distillation formulas but let a spec use what a model computes itself."""

from __future__ import annotations

from typing import Any

import torch

from kdsl.components._common import Declared


class ModelLoss(Declared):
    """A loss the model computed itself: a scalar tensor, or the sum of the entries of a dict
    (or of an object's ``loss`` attribute) whose key contains ``key`` (mmdet's ``loss_cls``,
    ``loss_bbox``; Hugging Face's ``outputs.loss``). Lists of tensors are summed too."""

    def forward(self, value: Any) -> torch.Tensor:
        total = self._total(value)
        if total is None:
            raise TypeError(f"model_loss found no loss in {type(value).__name__} "
                            f"(looked for a scalar tensor or entries whose key contains '{self.key}')")
        return total

    def _total(self, value: Any):
        if isinstance(value, torch.Tensor):
            return value.sum() if value.ndim else value
        if isinstance(value, dict):
            parts = [self._total(v) for k, v in value.items() if self.key in str(k)]
        elif isinstance(value, (list, tuple)):
            parts = [self._total(v) for v in value]
        elif hasattr(value, self.key):
            parts = [self._total(getattr(value, self.key))]
        else:
            return None
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return total
