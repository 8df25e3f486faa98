"""Chunked token losses: torch implementations of :mod:`kdsl.catalog.lm_chunked_losses`.

The loss and its gradients are computed together, a chunk of token positions at a time, inside
one autograd Function (:class:`_ChunkedHeadLoss`): the forward pass computes each chunk's logits
from the hidden states and head weights, the chunk's share of the loss, and (with autograd, on
the chunk alone) its gradients with respect to every input that needs one, then frees the chunk.
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
        # the weights and biases are leaves of every chunk's graph: their gradients sum over chunks
        shared = [_leaf(t, need[i]) if i not in (0, 3) else None for i, t in enumerate(heads)]
        grads: List[Optional[torch.Tensor]] = [torch.zeros_like(t) if t is not None and need[i] else None
                                               for i, t in enumerate(heads)]
        total = torch.zeros((), dtype=dtype, device=heads[0].device)
        positions = heads[0].shape[0]
        for start in range(0, positions, chunk):
            rows = slice(start, min(start + chunk, positions))
            leaves = list(shared)
            leaves[0], leaves[3] = _leaf(heads[0][rows], need[0]), _leaf(heads[3][rows], need[3])
            with torch.enable_grad():
                z_s = F.linear(leaves[0], leaves[1], leaves[2]).to(dtype)
                z_t = F.linear(leaves[3], leaves[4], leaves[5]).to(dtype)
                part = (per_token(z_s, z_t) * weights[rows].to(dtype)).sum() / count.to(dtype)
            wanted = [i for i, leaf in enumerate(leaves) if leaf is not None and leaf.requires_grad]
            if wanted:
                for i, g in zip(wanted, torch.autograd.grad(part, [leaves[i] for i in wanted])):
                    if i in (0, 3):
                        grads[i][rows] = g
                    else:
                        grads[i] += g
            total += part.detach()
            del z_s, z_t, part  # this chunk's [chunk, V] tensors go before the next chunk's
        ctx.grads = grads
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        scaled = [None if g is None else g * grad_output.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (None, None, None, None, *scaled)


def _leaf(t: Optional[torch.Tensor], needs_grad: bool) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().requires_grad_(needs_grad)


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
