"""Tensor functions of the catalog (``kdsl/catalog/functions.py``): options from the entry
(:class:`~kdsl.components._common.Declared`), inputs in ``forward``, like losses. A function that
needs to know about the step (``noise`` needs the batch size, device and dtype) sets
``needs_context`` and receives a :class:`FunctionContext`."""

from __future__ import annotations

from dataclasses import dataclass
import torch

from kdsl.components._common import Declared


@dataclass(frozen=True)
class FunctionContext:
    """What a context-needing function learns of the step it runs in."""

    batch_size: int
    device: torch.device
    dtype: torch.dtype


class Detach(Declared):
    """``detach(x)``: the same values, cut from the autograd graph (a stop-gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


class Argmax(Declared):
    """``argmax(x, dim)``: int64 indices of the largest entries along ``dim`` (no gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(dim=self.dim)


class Softmax(Declared):
    """``softmax(x, dim, tau)``: ``softmax(x / tau)`` along ``dim``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x / self.tau, dim=self.dim)


class LogSoftmax(Softmax):
    """``log_softmax(x, dim, tau)``: ``log_softmax(x / tau)`` along ``dim``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x / self.tau, dim=self.dim)


class Flatten(Declared):
    """``flatten(x, start_dim)``: ``x`` with the dimensions from ``start_dim`` on merged into one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, start_dim=self.start_dim)


class Noise(Declared):
    """``noise(dim)``: a fresh ``[rows, dim]`` draw of N(0, 1) from torch's generator of the
    step's device, in the step's dtype; ``rows`` is ``batch_size`` or the step's batch size."""

    needs_context = True

    def forward(self, context: FunctionContext) -> torch.Tensor:
        rows = self.batch_size or context.batch_size
        return torch.randn(rows, self.dim, device=context.device, dtype=context.dtype)

