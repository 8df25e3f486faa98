"""What a dry run must leave as it found: the buffers of the modules it ran, the RNG states, and
the parameters of FSDP2-sharded modules sharded."""

from __future__ import annotations

import sys
from typing import Sequence

import torch
from torch import nn


class Snapshot:
    """Buffers of modules and the RNG states, restored after a dry run."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.buffers = [(b, b.detach().clone()) for m in modules for b in m.buffers()]
        self.cpu_rng = torch.random.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and \
            torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        torch.random.set_rng_state(self.cpu_rng)
        for module in self.modules:
            reshard(module)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def reshard(module: nn.Module) -> None:
    """Put every FSDP2 unit of ``module`` back in its sharded state. A forward without backward
    (a dry run, an evaluation) leaves the root unit's parameters gathered, and while they are,
    ``module.parameters()`` yields the gathered copies: an optimizer built then would update
    tensors that the next all-gather overwrites."""
    if "torch.distributed.fsdp" not in sys.modules:  # nothing sharded it: no FSDP2 unit can exist,
        return  # and its import (about 0.7 s of CPU) is no cost of a run that shards nothing
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2 shards nothing
        return
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
