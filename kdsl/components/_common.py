"""Helpers shared by the loss implementations."""

from __future__ import annotations

from typing import Tuple

import torch


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype a loss computes in: the inputs' promoted dtype, but at least float32.

    Half-precision softmax, log-sum-exp, norms and sums over whole feature maps lose too many
    digits to be useful; float64 stays float64 so that the tests can compare to 1e-9.
    """
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        return torch.float32
    return dtype


_FULL = (torch.float32, torch.float64)


def upcast(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    first = tensors[0].dtype
    if first in _FULL and all(t.dtype is first for t in tensors):
        return tensors  # nothing to convert: the usual case, kept cheap
    dtype = compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def reduce(elementwise: torch.Tensor, reduction: str) -> torch.Tensor:
    """``none``, ``sum``, ``mean`` (over elements) or ``batchmean`` (sum / N)."""
    if reduction == "none":
        return elementwise
    if reduction == "sum":
        return elementwise.sum()
    if reduction == "mean":
        return elementwise.mean()
    return elementwise.sum() / elementwise.shape[0]


def flat(x: torch.Tensor) -> torch.Tensor:
    """One row per sample."""
    return x.reshape(x.shape[0], -1)
