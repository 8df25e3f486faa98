"""Random state of a run: seeding, and saving/restoring every generator a run draws from.

The data order and the data-loader workers' seeds of epoch ``e`` are functions of
``epoch_seed(seed, e)`` only, so a resumed run draws exactly what an uninterrupted one draws.
"""

from __future__ import annotations

import random
from typing import Any, Dict

import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order (and of its workers)."""
    return seed * 1_000_003 + epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """torch's and Python's generator states (and the GPU's), as a checkpoint stores them."""
    state = {"torch": torch.random.get_rng_state(), "python": list(_py_state())}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _py_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def set_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    torch.random.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
