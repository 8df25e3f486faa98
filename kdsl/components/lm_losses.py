"""Language-model distillation losses: torch implementations of :mod:`kdsl.catalog.lm_losses`.

The vocabulary is the last dimension of the logits; every other dimension is a token position.
Formulas and papers are documented on the catalog entries; the options' types and ranges are
declared, and checked, there.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, student_teacher, upcast

__all__ = ["TokenKL", "TokenReverseKL", "TokenJSD", "TokenTopKKL", "HiddenMSE", "AttentionMSE",
           "MiniLMLoss"]


def token_weights(positions: torch.Size, mask: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                  ignore_index: int, dtype: torch.dtype, device) -> torch.Tensor:
    """1 for each token position that counts, 0 for the others (shape ``positions``)."""
    keep = torch.ones(positions, dtype=torch.bool, device=device)
    if mask is not None:
        keep = keep & (mask != 0)
    if labels is not None:
        keep = keep & (labels != ignore_index)
    return keep.to(dtype)


def masked_mean(per_token: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_token`` over the positions with weight 1; 0 (zero gradients) if none."""
    # clamp: an empty selection gives 0 / 1 = 0 rather than 0 / 0 = NaN
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def _shifted(shift: bool, x: Optional[torch.Tensor], *, logits: bool) -> Optional[torch.Tensor]:
    if not shift or x is None:
        return x
    # logits [..., T, V] drop their last position, labels and masks [..., T] their first
    return x[..., :-1, :] if logits else x[..., 1:]


class _TokenLoss(Declared):
    """A per-token divergence of student and teacher logits, averaged over the tokens that count
    (options ``ignore_index``, ``shift`` and ``detach_teacher`` besides the divergence's own)."""

    def per_token(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        s, t = student_teacher(preds_S, preds_T, self.detach_teacher)
        s, t = _shifted(self.shift, s, logits=True), _shifted(self.shift, t, logits=True)
        mask = _shifted(self.shift, mask, logits=False)
        labels = _shifted(self.shift, labels, logits=False)
        weights = token_weights(s.shape[:-1], mask, labels, self.ignore_index, s.dtype, s.device)
        return masked_mean(self.per_token(s, t), weights)


def _kl_last(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension from log-probabilities (0 where p underflows)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


class TokenKL(_TokenLoss):
    """tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau)) per token."""

    def per_token(self, s, t):
        tau = self.tau
        return tau ** 2 * _kl_last(F.log_softmax(t / tau, -1), F.log_softmax(s / tau, -1))


class TokenReverseKL(TokenKL):
    """tau^2 * KL(softmax(z_S / tau) || softmax(z_T / tau)) per token (TokenKL's options)."""

    def per_token(self, s, t):
        tau = self.tau
        return tau ** 2 * _kl_last(F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1))


class TokenJSD(_TokenLoss):
    """Generalized Jensen-Shannon divergence beta KL(P || M) + (1 - beta) KL(Q || M) per token."""

    def per_token(self, s, t):
        log_q = F.log_softmax(s / self.tau, -1)
        log_p = F.log_softmax(t / self.tau, -1)
        beta = self.beta
        # log M = log(beta P + (1 - beta) Q), in log space so that underflow stays finite
        log_m = torch.logsumexp(torch.stack([log_p + math.log(beta),
                                             log_q + math.log(1.0 - beta)]), dim=0)
        return beta * _kl_last(log_p, log_m) + (1.0 - beta) * _kl_last(log_q, log_m)


class TokenTopKKL(_TokenLoss):
    """tau^2 * KL over the teacher's top-k tokens, both distributions renormalized there."""

    def per_token(self, s, t):
        vocab = t.shape[-1]
        if self.k > vocab:
            raise ValueError(f"token_topk_kl: k={self.k} is larger than the vocabulary "
                             f"({vocab} logits per token)")
        top = t.topk(self.k, dim=-1).indices
        tau = self.tau
        if self.tail == "bucket":
            return tau ** 2 * _kl_last(_top_and_rest(F.log_softmax(t / tau, -1), top),
                                       _top_and_rest(F.log_softmax(s / tau, -1), top))
        s_k, t_k = s.gather(-1, top), t.gather(-1, top)
        return tau ** 2 * _kl_last(F.log_softmax(t_k / tau, -1), F.log_softmax(s_k / tau, -1))


def _top_and_rest(log_p: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the classes ``top`` and, last, of all the others together ([..., k + 1]);
    without others (k = V), a last category of probability 0."""
    rest = log_p.scatter(-1, top, float("-inf")).logsumexp(-1, keepdim=True)
    # a finite floor: an empty (or underflowed) rest adds 0 * finite = 0 to the KL, never NaN
    return torch.cat([log_p.gather(-1, top), rest.clamp_min(torch.finfo(log_p.dtype).min)], -1)


class HiddenMSE(Declared):
    """Mean squared error of token features over the tokens that count."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        per_token = (s - t).pow(2).mean(-1)
        weights = token_weights(s.shape[:-1], mask, None, 0, s.dtype, s.device)
        return masked_mean(per_token, weights)


class AttentionMSE(Declared):
    """Mean squared error of [N, h, T, T] attention scores over the (query, key) pairs that count."""

    def _cleaned(self, x: torch.Tensor) -> torch.Tensor:
        if self.masked_below is None:
            return x
        return torch.where(x <= self.masked_below, torch.zeros_like(x), x)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        squared = (self._cleaned(s) - self._cleaned(t)).pow(2)
        if mask is None:
            return squared.mean()
        keep = (mask != 0).to(s.dtype)
        pairs = (keep[:, :, None] * keep[:, None, :])[:, None]  # [N, 1, T, T]
        total = pairs.sum() * s.shape[1]
        return (squared * pairs).sum() / total.clamp_min(1.0)


class MiniLMLoss(Declared):
    """KL of the teacher's to the student's attention and value-relation rows, per query."""

    def _rows(self, s: torch.Tensor, t: torch.Tensor, keys: Optional[torch.Tensor]) -> torch.Tensor:
        """KL(t_row || s_row) for every query row, [N, h, T]."""
        if self.scores:
            if keys is not None:
                # a finite floor, not -inf: masked keys get probability 0 and 0 * finite = 0
                floor = torch.finfo(s.dtype).min / 2
                dropped = keys[:, None, None, :] == 0
                s, t = s.masked_fill(dropped, floor), t.masked_fill(dropped, floor)
            log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
            return (log_t.exp() * (log_t - log_s)).sum(-1)
        # given probabilities: a key the teacher gives 0 adds exactly 0, and its logarithms are
        # taken of 1 instead so that neither the value nor the gradient becomes NaN
        support = t > 0
        ones = torch.ones_like(t)
        log_t = torch.where(support, t, ones).log()
        log_s = torch.where(support, s, ones).log()
        return torch.where(support, t * (log_t - log_s), torch.zeros_like(t)).sum(-1)

    def _relation(self, s, t, mask):
        s, t = upcast(s, t)
        rows = self._rows(s, t, mask)
        if mask is None:
            return rows.mean()
        queries = (mask != 0).to(rows.dtype)[:, None, :].expand_as(rows)
        return masked_mean(rows, queries)

    def forward(self, attn_S: torch.Tensor, attn_T: torch.Tensor, value_S: torch.Tensor,
                value_T: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.detach_teacher:
            attn_T, value_T = attn_T.detach(), value_T.detach()
        return self._relation(attn_S, attn_T, mask) + self._relation(value_S, value_T, mask)
