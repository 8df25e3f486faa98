"""Data-free distillation losses: torch implementations of :mod:`kdsl.catalog.datafree_losses`.

The formulas, the paper and the relation to DAFL's and MMRazor's code are documented on the
catalog entries; option types and ranges are checked there. None of these losses detaches the
teacher: their purpose is to send gradients through it into a generator.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, flat, upcast

__all__ = ["DAFLOneHot", "DAFLActivation", "DAFLEntropy"]


class DAFLOneHot(Declared):
    """DAFL's one-hot loss: mean cross-entropy of ``preds_T`` against its own argmax."""

    def forward(self, preds_T: torch.Tensor) -> torch.Tensor:
        (preds_T,) = upcast(preds_T)
        # The pseudo-label is an index: argmax has no gradient, the cross-entropy carries it.
        pseudo_labels = preds_T.detach().argmax(dim=1)
        return F.cross_entropy(preds_T, pseudo_labels)


class DAFLActivation(Declared):
    """DAFL's activation loss: ``-mean(|f|)`` (or ``-sum(|f|) / N`` with ``batchmean``)."""

    def forward(self, feat_T: torch.Tensor) -> torch.Tensor:
        (feat_T,) = upcast(feat_T)
        magnitude = flat(feat_T).abs()
        if self.reduction == "batchmean":
            return -magnitude.sum() / magnitude.shape[0]
        return -magnitude.mean()


class DAFLEntropy(Declared):
    """DAFL's information-entropy loss: ``sum_c p_c log_b p_c`` for the batch-mean softmax ``p``."""

    def forward(self, preds_T: torch.Tensor) -> torch.Tensor:
        (preds_T,) = upcast(preds_T)
        # log p_c = log mean_i softmax_ic, taken in log space: a class whose probability
        # underflows in every sample keeps a finite log (p log p -> 0) and a finite gradient.
        log_p = torch.logsumexp(F.log_softmax(preds_T, dim=1), dim=0) - math.log(preds_T.shape[0])
        return (log_p.exp() * log_p).sum() / math.log(self.base)
