"""Tensor functions of the catalog (``kdsl/catalog/functions.py``): options in ``__init__``, inputs
in ``forward``, like losses. A function that needs to know about the step (``noise`` needs the batch
size, device and dtype) sets ``needs_context`` and receives a :class:`FunctionContext`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn


@dataclass(frozen=True)
class FunctionContext:
    """What a context-needing function learns of the step it runs in."""

    batch_size: int
    device: torch.device
    dtype: torch.dtype


class Detach(nn.Module):
    """``detach(x)``: the same values, cut from the autograd graph (a stop-gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class Argmax(nn.Module):
    """``argmax(x, dim)``: int64 indices of the largest entries along ``dim`` (no gradient)."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=self.dim)


class Softmax(nn.Module):
    """``softmax(x, dim, tau)``: ``softmax(x / tau)`` along ``dim``."""

    def __init__(self, dim: int = 1, tau: float = 1.0) -> None:
        super().__init__()
        self.dim, self.tau = dim, tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x / self.tau, dim=self.dim)


class LogSoftmax(Softmax):
    """``log_softmax(x, dim, tau)``: ``log_softmax(x / tau)`` along ``dim``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x / self.tau, dim=self.dim)


class Flatten(nn.Module):
    """``flatten(x, start_dim)``: ``x`` with the dimensions from ``start_dim`` on merged into one."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, start_dim=self.start_dim)


class Noise(nn.Module):
    """``noise(dim)``: a fresh ``[rows, dim]`` draw of N(0, 1) from torch's generator of the
    step's device, in the step's dtype; ``rows`` is ``batch_size`` or the step's batch size."""

    needs_context = True

    def __init__(self, dim: int, batch_size: Optional[int] = None) -> None:
        super().__init__()
        self.dim, self.batch_size = dim, batch_size

    def forward(self, context: FunctionContext) -> torch.Tensor:
        rows = self.batch_size or context.batch_size
        return torch.randn(rows, self.dim, device=context.device, dtype=context.dtype)


# The catalog names implementations in lower case, as they read in a spec.
detach, argmax, softmax, log_softmax, flatten, noise = Detach, Argmax, Softmax, LogSoftmax, Flatten, Noise
