"""What a dry run must leave as it found: the buffers of the modules it ran, and the RNG states."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Snapshot:
    """Buffers of modules and the RNG states, restored after a dry run."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.cpu_rng = torch.random.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and \
            torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        torch.random.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
