"""Feature losses that pool, normalize or weigh their comparison (knowledge review, PAD, KTAAD)
and a plain norm penalty: torch implementations of :mod:`kdsl.catalog.adaptive_losses`.

Formulas, papers and the relation to torchdistill's implementations are documented on the catalog
entries; the options' types and ranges are declared, and checked, there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, flat, upcast
from kdsl.components.feature_losses import factor_distance

__all__ = ["HCLLoss", "KTALoss", "AffinityLoss", "PADL2Loss", "RegularizationLoss"]


def _batch_reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


class HCLLoss(Declared):
    """Hierarchical context loss: MSE at full resolution and at pooled sizes, halving weights."""

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


class KTALoss(Declared):
    """Knowledge translation and adaptation: distance of l_q-normalized flattened features."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        distance = "elementwise" if self.p == 1 else "norm"
        return factor_distance(s, t, self.p, self.q, self.reduction, distance)


class AffinityLoss(Declared):
    """Affinity distillation: distance of each channel's spatial self-affinity matrix."""

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


class PADL2Loss(Declared):
    """Prime-aware adaptive distillation: L2 weighted by a predicted per-dimension variance."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                log_variance: torch.Tensor) -> torch.Tensor:
        s, t, log_var = upcast(preds_S, preds_T, log_variance)
        s, t, log_var = flat(s), flat(t), flat(log_var)
        per_sample = ((t - s).pow(2) / (self.eps + log_var.exp()) + log_var).mean(dim=1)
        return _batch_reduce(per_sample, self.reduction)


class RegularizationLoss(Declared):
    """The p-norm of a whole tensor, a penalty on its size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (x,) = upcast(x)
        return x.norm(p=self.p)
