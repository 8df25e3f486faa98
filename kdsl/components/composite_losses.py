"""Losses that read several tensors of a model (logits with features, or an auxiliary head):
torch implementations of :mod:`kdsl.catalog.composite_losses`.

Formulas, papers and the relation to torchdistill's implementations are documented on the catalog
entries; the options' types and ranges are declared, and checked, there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, flat, reduce, student_teacher, upcast

__all__ = ["DISTPlusLoss", "SRDLoss", "SKDInstanceLoss", "SKDDirectionLoss", "SSKDLoss",
           "SSKDAuxLoss"]


def _centred_correlation(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Pearson correlation along ``dim``, 1e-8 added to the product of the norms."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    norms = (a.pow(2).sum(dim=dim) * b.pow(2).sum(dim=dim)).sqrt()
    return (a * b).sum(dim=dim) / (norms + 1e-8)


class DISTPlusLoss(Declared):
    """DIST+'s feature term: channel and spatial Pearson-correlation relations of feature maps."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        channel = _centred_correlation(s, t, dim=1).mean()
        # torchdistill adds the correlation itself, which rewards disagreement; the paper's
        # relation loss is 1 - correlation, as for every other DIST term
        channel_term = channel if self.form == "torchdistill" else 1.0 - channel
        # each position's per-sample response (summed over channels), correlated over the batch
        a = s.sum(dim=1).flatten(1).t()
        b = t.sum(dim=1).flatten(1).t()
        a = a - a.mean(dim=1, keepdim=True)
        b = b - b.mean(dim=1, keepdim=True)
        spatial = F.cosine_similarity(a, b, dim=1, eps=1e-8).mean()
        return self.channel_weight * channel_term + self.spatial_weight * (1.0 - spatial)


class SRDLoss(Declared):
    """SRD's feature term: 2 log of the summed |S - T|^exponent."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        return 2.0 * torch.log((s - t).abs().pow(self.exponent).sum())


class SKDInstanceLoss(Declared):
    """SKD's instance term: KL(softmax(T / tau) || softmax(S / tau)) / N, without tau^2."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = student_teacher(preds_S, preds_T, self.detach_teacher)
        log_p_s = F.log_softmax(s / self.tau, dim=1)
        log_p_t = F.log_softmax(t / self.tau, dim=1)
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


class SKDDirectionLoss(Declared):
    """SKD's direction term: Mahalanobis length of the rows of the similarity difference."""

    @staticmethod
    def _similarity(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(flat(x), p=2.0, dim=1)
        return x @ x.t()

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = student_teacher(preds_S, preds_T, self.detach_teacher)
        diff = self._similarity(s) - self._similarity(t)
        n = diff.shape[0]
        # the Tikhonov term keeps the N x N covariance of the rows invertible for any batch
        cov = torch.cov(diff.t()) + self.tikhonov * torch.eye(n, dtype=diff.dtype,
                                                              device=diff.device)
        solved = torch.cholesky_solve(diff.t(), torch.linalg.cholesky(cov))
        return (diff * solved.t()).sum(dim=1).sqrt().mean()


def _rotation_similarities(ss: torch.Tensor) -> torch.Tensor:
    """cos(aug_a, normal_j) for the [x0, rot(x0) x3, x1, ...] layout: [3N/4, N/4]."""
    index = torch.arange(ss.shape[0], device=ss.device)
    normal, aug = ss[index % 4 == 0], ss[index % 4 != 0]
    return F.cosine_similarity(aug.unsqueeze(2), normal.t().unsqueeze(0), dim=1)


def _kept_by_rank(scores: torch.Tensor, targets: torch.Tensor, ratio: float) -> torch.Tensor:
    """Rows whose target ranks first, then ``ratio`` of the others, best-ranked first
    (SSKD's error-level ranking); returned in row order."""
    order = torch.argsort(scores, dim=1, descending=True)
    ranks = (order == targets.unsqueeze(1)).long().argmax(dim=1)
    wrong = int((ranks != 0).sum())
    keep = ranks.shape[0] - wrong + int(wrong * ratio)
    return torch.sort(torch.argsort(ranks, stable=True)[:keep])[0]


class SSKDLoss(Declared):
    """SSKD: CE + KD on the originals, KD of the self-supervised similarities and of the
    rotated samples, each on the rows the teacher ranks well."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.taus = (self.kl_tau, self.ss_tau, self.tf_tau)
        self.weights = (self.ce_weight, self.kl_weight, self.ss_weight, self.tf_weight)

    def _kd(self, s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
        kl = F.kl_div(F.log_softmax(s / tau, dim=1), F.softmax(t / tau, dim=1), reduction="none")
        return tau ** 2 * reduce(kl, self.reduction)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor, ss_S: torch.Tensor,
                ss_T: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        s, t, ss_s, ss_t = student_teacher(preds_S, preds_T, self.detach_teacher, ss_S, ss_T)
        kl_tau, ss_tau, tf_tau = self.taus
        index = torch.arange(s.shape[0], device=s.device)
        normal, aug = index % 4 == 0, index % 4 != 0
        labels = gt_labels.long()
        ce = F.cross_entropy(s[normal], labels,
                             reduction="mean" if self.reduction == "batchmean" else self.reduction)
        kl = self._kd(s[normal], t[normal], kl_tau)
        aug_labels = labels.repeat_interleave(3)
        tf_rows = _kept_by_rank(t[aug].detach(), aug_labels, self.tf_ratio)
        tf = self._kd(s[aug][tf_rows], t[aug][tf_rows], tf_tau)
        sim_s = _rotation_similarities(ss_s)
        sim_t = _rotation_similarities(ss_t).detach()
        originals = torch.arange(sim_t.shape[1], device=s.device).repeat_interleave(3)
        ss_rows = _kept_by_rank(sim_t, originals, self.ss_ratio)
        ss = self._kd(sim_s[ss_rows], sim_t[ss_rows], ss_tau)
        w_ce, w_kl, w_ss, w_tf = self.weights
        return w_ce * ce + w_kl * kl + w_ss * ss + w_tf * tf


class SSKDAuxLoss(Declared):
    """SSKD's first stage: each rotated sample must recognise its original by cosine similarity."""

    def forward(self, preds: torch.Tensor) -> torch.Tensor:
        (x,) = upcast(preds)
        similarities = _rotation_similarities(x)
        originals = torch.arange(similarities.shape[1], device=x.device).repeat_interleave(3)
        return F.cross_entropy(similarities, originals, reduction=self.reduction)
