"""Feature losses that pool, normalize or weigh their comparison (knowledge review, PAD, KTAAD)
and a plain norm penalty: torch implementations of :mod:`kdsl.catalog.adaptive_losses`.

Formulas, papers and the relation to torchdistill's implementations are documented on the catalog
entries; the options' types and ranges are declared, and checked, there.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from kdsl.components._common import flat, upcast
from kdsl.components.feature_losses import factor_distance

__all__ = ["HCLLoss", "KTALoss", "AffinityLoss", "PADL2Loss", "RegularizationLoss"]


def _batch_reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


class HCLLoss(nn.Module):
    """Hierarchical context loss: MSE at full resolution and at pooled sizes, halving weights."""

    # a list default (copied below, never mutated) so that it equals the catalog's default
    def __init__(self, output_sizes: List[int] = [4, 2, 1],  # noqa: B006
                 reduction: str = "mean") -> None:
        super().__init__()
        self.output_sizes = [int(k) for k in output_sizes]
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        loss = F.mse_loss(s, t, reduction=self.reduction)
        weight = total = 1.0
        for k in self.output_sizes:
            # a level as large as the map itself adds nothing new, so it is skipped
            if k >= s.shape[2]:
                continue
            weight /= 2.0
            total += weight
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(s, (k, k)),
                                              F.adaptive_avg_pool2d(t, (k, k)),
                                              reduction=self.reduction)
        return loss / total


class KTALoss(nn.Module):
    """Knowledge translation and adaptation: distance of l_q-normalized flattened features."""

    def __init__(self, p: int = 1, q: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        self.p = p
        self.q = float(q)
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        distance = "elementwise" if self.p == 1 else "norm"
        return factor_distance(s, t, self.p, self.q, self.reduction, distance)


class AffinityLoss(nn.Module):
    """Affinity distillation: distance of each channel's spatial self-affinity matrix."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        s = F.normalize(s.flatten(2), p=2.0, dim=2)
        t = F.normalize(t.flatten(2), p=2.0, dim=2)
        positions = s.shape[2]
        # ||s s^T - t t^T||_F^2 = (s.s)^2 + (t.t)^2 - 2 (s.t)^2 for each channel's vectors, so
        # the [N, C, HW, HW] affinity matrices are never built
        squared = (s * s).sum(2).pow(2) + (t * t).sum(2).pow(2) - 2 * (s * t).sum(2).pow(2)
        per_channel = squared.clamp_min(0.0).sqrt() / positions
        return _batch_reduce(per_channel.sum(dim=1), self.reduction)


class PADL2Loss(nn.Module):
    """Prime-aware adaptive distillation: L2 weighted by a predicted per-dimension variance."""

    def __init__(self, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__()
        self.eps = float(eps)
        self.reduction = reduction

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                log_variance: torch.Tensor) -> torch.Tensor:
        s, t, log_var = upcast(preds_S, preds_T, log_variance)
        s, t, log_var = flat(s), flat(t), flat(log_var)
        per_sample = ((t - s).pow(2) / (self.eps + log_var.exp()) + log_var).mean(dim=1)
        return _batch_reduce(per_sample, self.reduction)


class RegularizationLoss(nn.Module):
    """The p-norm of a whole tensor, a penalty on its size."""

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (x,) = upcast(x)
        return x.norm(p=self.p)
