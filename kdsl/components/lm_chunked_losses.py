"""Chunked token losses: torch implementations of :mod:`kdsl.catalog.lm_chunked_losses`.

The loss and its gradients are computed together, a chunk of token positions at a time, inside
one autograd Function (:class:`_ChunkedHeadLoss`): the forward pass computes each chunk's logits
from the hidden states and head weights, the chunk's share of the loss, its gradient with
respect to the chunk's logits (autograd, on the chunk alone: the divergence's formula is the
unchunked loss's) and from it those of the hidden states, weights and biases that need one, then
frees the chunk.
The backward pass scales the accumulated gradients by the incoming one. Recomputing the chunks in
the backward pass (torch.utils.checkpoint) would hold as little memory but run both heads twice.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, compute_dtype
from kdsl.components.lm_losses import TokenJSD, TokenKL, TokenReverseKL, _shifted, token_weights

__all__ = ["TokenKLChunked", "TokenReverseKLChunked", "TokenJSDChunked"]

PerToken = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # [c, V] x [c, V] -> [c]


class _ChunkedHeadLoss(torch.autograd.Function):
    """sum over positions of weights * per_token(h_S W_S^T + b_S, h_T W_T^T + b_T) / count,
    computed ``chunk`` positions at a time; hidden states are [P, d], weights [P]."""

    @staticmethod
    def forward(ctx, per_token: PerToken, chunk: int, weights: torch.Tensor, count: torch.Tensor,
                *heads: Optional[torch.Tensor]) -> torch.Tensor:
        need = ctx.needs_input_grad[4:]
        dtype = compute_dtype(*(t for t in heads if t is not None))
        grads: List[Optional[torch.Tensor]] = [torch.zeros_like(t) if t is not None and need[i] else None
                                               for i, t in enumerate(heads)]
        total = torch.zeros((), dtype=dtype, device=heads[0].device)
        positions = heads[0].shape[0]
        for start in range(0, positions, chunk):
            rows = slice(start, min(start + chunk, positions))
            # autograd sees only the chunk's logits; the heads' gradients are two matmuls each
            # (grad_hidden = g W, grad_W += g^T hidden), which keeps no [V, d] temporary per chunk
            z_s = _logits(heads[0][rows], heads[1], heads[2], dtype, any(need[:3]))
            z_t = _logits(heads[3][rows], heads[4], heads[5], dtype, any(need[3:]))
            with torch.enable_grad():
                part = (per_token(z_s, z_t) * weights[rows].to(dtype)).sum() / count.to(dtype)
            wanted = [z for z in (z_s, z_t) if z.requires_grad]
            if wanted:
                found = iter(torch.autograd.grad(part, wanted))
                for side, z in ((0, z_s), (3, z_t)):
                    if z.requires_grad:
                        _head_grads(next(found), heads[side][rows], heads[side + 1], grads[side:side + 3], rows)
            total += part.detach()
            del z_s, z_t, part  # this chunk's [chunk, V] tensors go before the next chunk's
        ctx.grads = grads
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        scaled = [None if g is None else g * grad_output.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (None, None, None, None, *scaled)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype,
            needs_grad: bool) -> torch.Tensor:
    """One chunk's logits in the compute dtype, a leaf of the chunk's graph when a gradient is wanted."""
    return F.linear(hidden, weight, bias).to(dtype).requires_grad_(needs_grad)


def _head_grads(g_logits: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                grads: List[Optional[torch.Tensor]], rows: slice) -> None:
    """Add the chunk's share to the gradients of (hidden, weight, bias) from that of its logits."""
    g = g_logits.to(weight.dtype)
    g_hidden, g_weight, g_bias = grads
    if g_hidden is not None:
        g_hidden[rows] = g @ weight
    if g_weight is not None:
        g_weight.addmm_(g.T, hidden.to(g.dtype))  # under autocast the hidden states may be half precision
    if g_bias is not None:
        g_bias += g.sum(0)


class _ChunkedTokenLoss(Declared):
    """A token divergence of the logits of two LM heads, from their hidden states and weights,
    computed in chunks of positions (options ``chunk``, ``ignore_index``, ``shift`` and
    ``detach_teacher`` besides the divergence's own). ``per_token`` is the unchunked loss's."""

    per_token: PerToken

    def forward(self, hidden_S: torch.Tensor, weight_S: torch.Tensor, hidden_T: torch.Tensor,
                weight_T: torch.Tensor, mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, bias_S: Optional[torch.Tensor] = None,
                bias_T: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.detach_teacher:
            hidden_T, weight_T = hidden_T.detach(), weight_T.detach()
            bias_T = None if bias_T is None else bias_T.detach()
        # the shift drops a position of the hidden states exactly as it drops one of the logits
        h_s = _shifted(self.shift, hidden_S, logits=True)
        h_t = _shifted(self.shift, hidden_T, logits=True)
        mask = _shifted(self.shift, mask, logits=False)
        labels = _shifted(self.shift, labels, logits=False)
        weights = token_weights(h_s.shape[:-1], mask, labels, self.ignore_index, torch.float32, h_s.device)
        weights = weights.reshape(-1)
        count = weights.sum().clamp_min(1.0)  # an empty selection gives 0, as masked_mean does
        return _ChunkedHeadLoss.apply(self.per_token, self.chunk, weights, count,
                                      h_s.reshape(-1, h_s.shape[-1]), weight_S, bias_S,
                                      h_t.reshape(-1, h_t.shape[-1]), weight_T, bias_T)


class TokenKLChunked(_ChunkedTokenLoss):
    """token_kl from hidden states and head weights, in chunks of positions."""

    per_token = TokenKL.per_token


class TokenReverseKLChunked(_ChunkedTokenLoss):
    """token_reverse_kl from hidden states and head weights, in chunks of positions."""

    per_token = TokenReverseKL.per_token


class TokenJSDChunked(_ChunkedTokenLoss):
    """token_jsd from hidden states and head weights, in chunks of positions."""

    per_token = TokenJSD.per_token
