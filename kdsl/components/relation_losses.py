"""Relational distillation losses: torch implementations of :mod:`kdsl.catalog.relation_losses`.

These losses compare how samples of a batch relate to each other (distances, angles,
similarities) in the student and in the teacher, so the two may have different widths. Inputs
``[N, ...]`` are flattened per sample. Formulas, papers and the relation to MMRazor's and the
authors' implementations are documented on the catalog entries. The options' types and ranges
are declared, and checked, in the catalog (:func:`kdsl.catalog.binding.instantiate`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, compute_dtype, flat, upcast

__all__ = ["DistanceWiseRKD", "AngleWiseRKD", "PKTLoss", "SPLoss", "CCLoss", "CRDLoss"]


def _without_autocast(x: torch.Tensor):
    # Under autocast a matmul runs in half precision even on float32 inputs, and distances
    # derived from a half-precision Gram matrix cancel to noise.
    try:
        active = torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know, such as meta
        active = False
    return torch.autocast(x.device.type, enabled=False) if active else contextlib.nullcontext()


def _gram(x: torch.Tensor) -> torch.Tensor:
    with _without_autocast(x):
        return x @ x.t()


def _off_diagonal(n: int, device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def _squared_distances(gram: torch.Tensor) -> torch.Tensor:
    # From the Gram matrix rather than from the [N, N, D] differences, which would not fit in
    # memory for flattened feature maps.
    sq = gram.diagonal()
    return (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)


# --------------------------------------------------------------------------------------------
# Relational KD
# --------------------------------------------------------------------------------------------
class DistanceWiseRKD(Declared):
    """RKD distance loss: Huber distance of mean-normalized pairwise distances."""

    # Floor on squared distances: sqrt has an infinite gradient at 0 (MMRazor's value).
    MIN_SQUARED = 1e-12

    def _normalized_distances(self, x: torch.Tensor) -> torch.Tensor:
        x = flat(x)
        if self.with_l2_norm:
            x = F.normalize(x, p=2.0, dim=1)
        n = x.shape[0]
        off = _off_diagonal(n, x.device)
        d = _squared_distances(_gram(x)).clamp_min(self.MIN_SQUARED).sqrt() * off
        return d / (d.sum() / (n * (n - 1)))

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = upcast(preds_S, preds_T)
        return F.smooth_l1_loss(self._normalized_distances(preds_S),
                                self._normalized_distances(preds_T), reduction=self.reduction)


class AngleWiseRKD(Declared):
    """RKD angle loss: Huber distance of the cosines of all angles formed by sample triplets."""

    # Floor on a difference vector's squared norm, as F.normalize's 1e-12 on the norm.
    MIN_SQUARED = 1e-24

    def _angles(self, x: torch.Tensor) -> torch.Tensor:
        """cos[a, b, c]: cosine of the angle at x_a between x_b - x_a and x_c - x_a, 0 where
        b = a or c = a."""
        x = flat(x)
        if self.with_l2_norm:
            x = F.normalize(x, p=2.0, dim=1)
        n = x.shape[0]
        gram = _gram(x)
        sq = gram.diagonal()
        # <x_b - x_a, x_c - x_a> = G_bc - G_ab - G_ac + G_aa, all in O(N^3) memory.
        dots = gram[None, :, :] - gram[:, :, None] - gram[:, None, :] + sq[:, None, None]
        off = _off_diagonal(n, x.device)
        # Degenerate pairs get norm 1 so that no 0/0 enters the graph; they are masked below.
        norms = torch.where(off, _squared_distances(gram).clamp_min(self.MIN_SQUARED).sqrt(),
                            torch.ones_like(gram))
        cos = dots / (norms[:, :, None] * norms[:, None, :])
        return cos * (off[:, :, None] & off[:, None, :])

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = upcast(preds_S, preds_T)
        return F.smooth_l1_loss(self._angles(preds_S), self._angles(preds_T),
                                reduction=self.reduction)


# --------------------------------------------------------------------------------------------
# Similarity-based
# --------------------------------------------------------------------------------------------
class PKTLoss(Declared):
    """Probabilistic knowledge transfer: KL between cosine-kernel conditional distributions."""

    # eps floors the norms and guards the log ratio (the authors' 1e-7 by default): the cosine
    # kernel is exactly 0 for opposite samples.

    def _conditional(self, x: torch.Tensor) -> torch.Tensor:
        x = flat(x)
        if self.form == "torchdistill":
            # the authors' code: eps added to the norm, and each sample its own neighbour
            x = torch.nan_to_num(x / (x.norm(dim=1, keepdim=True) + self.eps), nan=0.0)
            kernel = (_gram(x) + 1.0) / 2.0
            return kernel / kernel.sum(dim=1, keepdim=True)
        x = F.normalize(x, p=2.0, dim=1, eps=self.eps)
        kernel = (_gram(x) + 1.0) / 2.0
        kernel = kernel * _off_diagonal(x.shape[0], x.device)
        return kernel / kernel.sum(dim=1, keepdim=True).clamp_min(self.eps)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = upcast(preds_S, preds_T)
        p_t = self._conditional(preds_T)
        p_s = self._conditional(preds_S)
        kl = p_t * torch.log((p_t + self.eps) / (p_s + self.eps))
        # the authors' code averages over the N^2 pairs, the paper over the N anchors
        return kl.mean() if self.form == "torchdistill" else kl.sum() / p_t.shape[0]


class SPLoss(Declared):
    """Similarity-preserving KD: squared distance of row-normalized batch Gram matrices."""

    def _similarity(self, x: torch.Tensor) -> torch.Tensor:
        x = flat(x)
        return F.normalize(_gram(x), p=1.0 if self.normalize == "l1" else 2.0, dim=1)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = upcast(preds_S, preds_T)
        return F.mse_loss(self._similarity(preds_S), self._similarity(preds_T),
                          reduction=self.reduction)


class CCLoss(Declared):
    """Correlation congruence: squared distance of Taylor-expanded RBF correlation matrices."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        gamma = self.gamma
        # exp(-gamma * ||a - b||^2) = exp(-2 gamma) * exp(2 gamma <a, b>) for unit vectors;
        # these are the first p + 1 coefficients of its series in <a, b>.
        self.coefficients = tuple(math.exp(-2.0 * gamma) * (2.0 * gamma) ** k / math.factorial(k)
                                  for k in range(self.p + 1))

    def _correlation(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(flat(x), p=2.0, dim=1) if self.normalize else flat(x)
        similarity = _gram(x)
        if self.kernel == "bilinear":
            return similarity
        # Horner's rule: one multiplication per order instead of a power per term.
        correlation = torch.full_like(similarity, self.coefficients[-1])
        for coefficient in reversed(self.coefficients[:-1]):
            correlation = correlation * similarity + coefficient
        return correlation

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        preds_S, preds_T = upcast(preds_S, preds_T)
        diff = self._correlation(preds_S) - self._correlation(preds_T)
        # squared: ||.||_F^2; unsquared: ||.||_F (torchdistill's torch.dist)
        loss = diff.pow(2).sum() if self.distance == "squared" else diff.norm()
        return loss / diff.numel() if self.reduction == "mean" else loss


# --------------------------------------------------------------------------------------------
# Contrastive representation distillation
# --------------------------------------------------------------------------------------------
class CRDLoss(Declared):
    """Contrastive representation distillation with momentum memory banks (Tian et al., 2020).

    ``memory_s`` and ``memory_t`` hold one unit vector per dataset sample, for the student's and
    the teacher's embeddings. A batch's scores are ``exp(<v, m> / nce_t) / Z`` of each embedding
    against the other side's memory at the positive index and ``k`` negative indices; ``Z`` is
    fixed from the first batch (``z_s``, ``z_t``, negative until then). In training mode the
    memories then move towards the batch's embeddings at ``indices`` with momentum ``nce_m``.
    """

    # In the NCE posterior, as in the authors' code: keeps log() finite for a zero score.
    EPS = 1e-7

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        num_data, feat_dim = self.num_data, self.feat_dim
        if self.negatives == "exact":
            # each dataset sample's class as seen in the batches so far, -1 while unseen; only
            # this form has the buffer, so uniform-form checkpoints keep their keys
            self.register_buffer("labels", torch.full((num_data,), -1, dtype=torch.long))
        # Uniform in [-b, b] with b = sqrt(3 / feat_dim) has variance 1 / feat_dim per
        # coordinate, so the initial rows have unit norm in expectation like the embeddings.
        bound = math.sqrt(3.0 / feat_dim)
        self.register_buffer("memory_s", torch.rand(num_data, feat_dim) * (2 * bound) - bound)
        self.register_buffer("memory_t", torch.rand(num_data, feat_dim) * (2 * bound) - bound)
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def sample_contrast(self, indices: torch.Tensor) -> torch.Tensor:
        """``[N, 1 + nce_k]`` dataset indices: each sample's own index, then ``nce_k`` others
        drawn uniformly with torch's RNG (never the sample itself)."""
        indices = indices.long().view(-1, 1)
        negatives = torch.randint(0, self.num_data - 1, (indices.shape[0], self.nce_k),
                                  device=indices.device)
        # Drawing from num_data - 1 values and stepping over the positive is uniform over the
        # other samples without rejection.
        negatives = negatives + (negatives >= indices).long()
        return torch.cat([indices, negatives], dim=1)

    def sample_exact(self, indices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``[N, 1 + nce_k]`` dataset indices: each sample's own index, then ``nce_k`` indices
        drawn uniformly, with replacement, from those seen with another class (from all other
        indices while none has been seen)."""
        indices = indices.long().view(-1)
        target = target.long().view(-1).to(self.labels.device)
        self.labels[indices.to(self.labels.device)] = target
        negatives = self.sample_contrast(indices)[:, 1:]
        for label in target.unique():
            rows = (target == label).nonzero().view(-1).to(indices.device)
            others = ((self.labels >= 0) & (self.labels != label)).nonzero().view(-1)
            if others.numel() == 0:
                continue  # nothing of another class seen yet: keep the uniform draw
            pick = torch.randint(0, others.numel(), (rows.numel(), self.nce_k),
                                 device=others.device)
            negatives[rows] = others[pick].to(indices.device)
        return torch.cat([indices.view(-1, 1), negatives], dim=1)

    def _scores(self, embedding: torch.Tensor, memory: torch.Tensor, contrast: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        weights = memory[contrast].to(embedding.dtype)  # [N, 1 + k, feat_dim]
        with _without_autocast(embedding):
            dots = torch.bmm(weights, embedding.unsqueeze(2)).squeeze(2)
        scores = torch.exp(dots / self.nce_t)
        if z.item() < 0:
            # Monte-Carlo estimate of the partition function over the whole dataset, fixed once
            # so that the scores of later batches stay comparable.
            z.copy_(scores.detach().mean() * self.num_data)
        return scores / z.to(scores.dtype)

    def _nce(self, scores: torch.Tensor) -> torch.Tensor:
        """Negative log-posterior that the positive comes from the data and each of the
        ``k`` others from the uniform noise distribution 1 / num_data."""
        k = scores.shape[1] - 1
        noise = k / self.num_data
        log_positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + self.EPS))
        log_negative = torch.log(noise / (scores[:, 1:] + noise + self.EPS))
        return -(log_positive.sum() + log_negative.sum()) / scores.shape[0]

    @torch.no_grad()
    def _update(self, memory: torch.Tensor, embedding: torch.Tensor,
                indices: torch.Tensor) -> None:
        moved = memory[indices] * self.nce_m + embedding.to(memory.dtype) * (1.0 - self.nce_m)
        memory.index_copy_(0, indices, F.normalize(moved, p=2.0, dim=1))

    def _contrast(self, indices: torch.Tensor, contrast_idx: Optional[torch.Tensor],
                  target: Optional[torch.Tensor]) -> torch.Tensor:
        if contrast_idx is not None:
            return contrast_idx.long()
        if self.negatives == "exact":
            if target is None:
                raise ValueError("crd with negatives=\"exact\" needs each sample's class: pass "
                                 "target=batch.target")
            return self.sample_exact(indices, target)
        return self.sample_contrast(indices)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor, indices: torch.Tensor,
                contrast_idx: Optional[torch.Tensor] = None,
                target: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = compute_dtype(preds_S, preds_T, self.memory_s)
        preds_S, preds_T = preds_S.to(dtype), preds_T.to(dtype)
        indices = indices.long().view(-1)
        contrast = self._contrast(indices, contrast_idx, target)
        # Each side's embedding is scored against the other side's memory.
        loss = (self._nce(self._scores(preds_S, self.memory_t, contrast, self.z_s))
                + self._nce(self._scores(preds_T, self.memory_s, contrast, self.z_t)))
        if self.training:
            self._update(self.memory_s, preds_S.detach(), indices)
            self._update(self.memory_t, preds_T.detach(), indices)
        return loss
