"""Logit distillation losses: torch implementations of :mod:`kdsl.catalog.logit_losses`.

Each class takes the catalog's options (its constructor is made from its entry:
:class:`~kdsl.components._common.Declared`) and the catalog's inputs positionally;
the options' types and ranges are declared, and checked, in the catalog
(:func:`kdsl.catalog.binding.instantiate`), so the classes do not repeat those checks.
Formulas, papers and the relation to MMRazor's implementations are documented on the catalog
entries. The class dimension is dimension 1 throughout, so dense predictions ``[N, C, H, W]``
work wherever the catalog allows them.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, reduce, student_teacher, upcast

__all__ = [
    "KLDivergence", "SoftCrossEntropy", "CrossEntropy", "KDLoss", "DKDLoss", "DISTLoss", "WSLDLoss",
    "LogitStdKDLoss",
]


def _kl_elementwise(log_p_t: torch.Tensor, log_p_s: torch.Tensor) -> torch.Tensor:
    # Teacher given as log-probabilities: a class whose teacher probability underflows to 0 then
    # contributes exactly 0 with finite gradients, where 0 * log(0) would give NaN.
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True)


def _tempered_kl(preds_S: torch.Tensor, preds_T: torch.Tensor, tau: float,
                 reduction: str) -> torch.Tensor:
    log_p_s = F.log_softmax(preds_S / tau, dim=1)
    log_p_t = F.log_softmax(preds_T / tau, dim=1)
    # tau^2 keeps the soft-target gradients' magnitude independent of tau (Hinton et al.).
    return tau ** 2 * reduce(_kl_elementwise(log_p_t, log_p_s), reduction)


# --------------------------------------------------------------------------------------------
# Soft targets
# --------------------------------------------------------------------------------------------
class KLDivergence(Declared):
    """Hinton's KD: tau^2 * KL(softmax(T / tau) || softmax(S / tau)) over dimension 1."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        return _tempered_kl(preds_S, preds_T, self.tau, self.reduction)


class SoftCrossEntropy(Declared):
    """Cross-entropy of the student against the teacher's softened distribution, times tau^2."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        p_t = F.softmax(preds_T / self.tau, dim=1)
        per_position = -(p_t * F.log_softmax(preds_S / self.tau, dim=1)).sum(dim=1)
        return self.tau ** 2 * reduce(per_position, self.reduction)


class CrossEntropy(Declared):
    """Cross-entropy with hard labels (the task loss), with label smoothing and ignore_index."""

    def forward(self, preds_S: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        (preds_S,) = upcast(preds_S)
        if gt_labels.is_floating_point():  # class probabilities (a mixed batch's soft labels)
            return F.cross_entropy(preds_S, gt_labels.to(preds_S.dtype), reduction=self.reduction,
                                   label_smoothing=self.label_smoothing)
        return F.cross_entropy(preds_S, gt_labels.long(), ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class KDLoss(Declared):
    """Hinton's KD with the hard-label term: alpha * CE(S, y) + beta * tau^2 * KL."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        if self.beta is None:
            self.beta = 1.0 - self.alpha

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                gt_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        log_p_s = F.log_softmax(preds_S / self.tau, dim=1)
        log_p_t = F.log_softmax(preds_T / self.tau, dim=1)
        soft = reduce(_kl_elementwise(log_p_t, log_p_s), self.reduction)
        soft_only = gt_labels is None or self.alpha == 0
        if soft_only and self.form == "torchdistill":
            # torchdistill's KDLoss returns the bare KL divergence here: no beta, no tau^2
            return soft
        soft = self.beta * self.tau ** 2 * soft
        if gt_labels is None:
            return soft
        # batchmean has no meaning for cross_entropy; torchdistill maps it to mean, as here
        ce_reduction = "mean" if self.reduction == "batchmean" else self.reduction
        hard = F.cross_entropy(preds_S, gt_labels.long(), reduction=ce_reduction,
                               label_smoothing=self.label_smoothing)
        return self.alpha * hard + soft


# --------------------------------------------------------------------------------------------
# Variants of KD
# --------------------------------------------------------------------------------------------
class DKDLoss(Declared):
    """Decoupled KD: alpha * TCKD + beta * NCKD (Zhao et al., CVPR 2022)."""

    def _mmrazor(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """MMRazor's computation, kept for parity: the target class masked by a -1000 logit and
        the binary distribution built from probabilities (the teacher gradient is NaN)."""
        gt = torch.zeros_like(preds_S).scatter_(1, target, 1.0)
        n = self._batch_divisor(preds_S)

        def kl(log_q, p):
            return F.kl_div(log_q, p, reduction="sum") / n

        def binary(p):
            return torch.cat([(p * gt).sum(1, keepdim=True), (p * (1 - gt)).sum(1, keepdim=True)], 1)

        p_s, p_t = F.softmax(preds_S / self.tau, dim=1), F.softmax(preds_T / self.tau, dim=1)
        tckd = kl(torch.log(binary(p_s)), binary(p_t))
        nckd = kl(F.log_softmax(preds_S / self.tau - 1000.0 * gt, dim=1),
                  F.softmax(preds_T / self.tau - 1000.0 * gt, dim=1))
        return self.tau ** 2 * (self.alpha * tckd + self.beta * nckd)

    def _batch_divisor(self, preds: torch.Tensor) -> int:
        """batchmean: the batch size; "sum" (MMRazor's legacy reduction): 1."""
        return preds.shape[0] if self.reduction == "batchmean" else 1

    @staticmethod
    def _split(logits: torch.Tensor, target: torch.Tensor, other_classes: torch.Tensor):
        """(log of the binary [p_target, 1 - p_target], log-softmax over the other classes)."""
        others = logits.gather(1, other_classes)
        # log(1 - p_target) as a log-sum-exp over the other logits: exact even when p_target
        # rounds to 1, where 1 - p_target would cancel to 0.
        binary = torch.cat([logits.gather(1, target), torch.logsumexp(others, 1, keepdim=True)],
                           dim=1)
        return F.log_softmax(binary, dim=1), F.log_softmax(others, dim=1)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                gt_labels: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        target = gt_labels.long().view(-1, 1)
        if self.form == "mmrazor":
            return self._mmrazor(preds_S, preds_T, target)
        # Column j of the non-target logits is class j, or j + 1 from the target on; a gather
        # rather than a boolean mask, which would wait for the device to count the selection.
        columns = torch.arange(preds_S.shape[1] - 1, device=target.device).expand(
            target.shape[0], -1)
        other_classes = columns + (columns >= target).long()
        binary_s, others_s = self._split(preds_S / self.tau, target, other_classes)
        binary_t, others_t = self._split(preds_T / self.tau, target, other_classes)
        n = self._batch_divisor(preds_S)
        tckd = _kl_elementwise(binary_t, binary_s).sum() / n
        nckd = _kl_elementwise(others_t, others_s).sum() / n
        return self.tau ** 2 * (self.alpha * tckd + self.beta * nckd)


def pearson_rows(a: torch.Tensor, b: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    if form == "torchdistill":
        # torch's cosine_similarity clamps each norm at 1e-8 instead of adding to the product
        return F.cosine_similarity(a, b, dim=1, eps=1e-8)
    # The authors' guard: 1e-8 added to the denominator, so that a constant row (all classes
    # equally likely) correlates 0 instead of NaN.
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


class DISTLoss(Declared):
    """DIST: Pearson-correlation relations between and within classes (Huang et al., 2022)."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        y_s = F.softmax(preds_S / self.tau, dim=1)
        y_t = F.softmax(preds_T / self.tau, dim=1)
        inter = 1.0 - pearson_rows(y_s, y_t, self.form).mean()
        intra = 1.0 - pearson_rows(y_s.t(), y_t.t(), self.form).mean()
        return self.tau ** 2 * (self.inter_weight * inter + self.intra_weight * intra)


class WSLDLoss(Declared):
    """Weighted soft labels: KD per sample weighted by 1 - exp(-CE_student / CE_teacher)."""

    # Keeps the weight finite when the teacher is certain of the right class (CE_teacher = 0,
    # weight 1); the same constant as the authors' and MMRazor's code.
    EPS = 1e-7

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                gt_labels: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        p_t = F.softmax(preds_T / self.tau, dim=1)
        soft_ce = -(p_t * F.log_softmax(preds_S / self.tau, dim=1)).sum(dim=1)
        with torch.no_grad():
            labels = gt_labels.long()
            ce_s = F.cross_entropy(preds_S, labels, reduction="none")
            ce_t = F.cross_entropy(preds_T, labels, reduction="none")
            weight = 1.0 - torch.exp(-ce_s / (ce_t + self.EPS))
        return self.tau ** 2 * (weight * soft_ce).mean()


class LogitStdKDLoss(Declared):
    """KD on z-scored logits (Sun et al., CVPR 2024)."""

    # eps floors a row's standard deviation: a constant row (std 0) standardizes to zeros
    # instead of NaN. A floor rather than the authors' `std + eps` keeps the loss exactly
    # invariant to scaling a row.

    def standardize(self, logits: torch.Tensor) -> torch.Tensor:
        centered = logits - logits.mean(dim=1, keepdim=True)
        if self.form == "torchdistill":
            # the authors' code and torchdistill: unbiased std, eps added to it
            return centered / (self.eps + logits.std(dim=1, keepdim=True))
        # Floored before the square root, whose gradient at 0 would be infinite.
        variance = centered.pow(2).mean(dim=1, keepdim=True).clamp_min(self.eps ** 2)
        return centered / variance.sqrt()

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = student_teacher(preds_S, preds_T, self.detach_teacher)
        return _tempered_kl(self.standardize(preds_S), self.standardize(preds_T), self.tau,
                            self.reduction)
