"""Module-level functions that the runtime tests' specs record (``function "kdrt_ops:..."``).

``kdrt_models`` imports them by name (``from kdrt_ops import resize``), which gives each a second
binding that kdsl must patch and restore as well."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size=None, mode: str = "nearest") -> torch.Tensor:
    return F.interpolate(x, size=size, mode=mode)


def scale(x: torch.Tensor, factor: float = 2.0) -> torch.Tensor:
    return x * factor
