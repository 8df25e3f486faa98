"""Runtime values in words and shapes: what messages say about a tensor, a tuple or a dict, and
the :class:`~kdsl.catalog.shapes.TensorInfo` that shape rules check."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from kdsl.catalog.shapes import TensorInfo


def info_of(value: Any) -> Optional[TensorInfo]:
    """Shape and dtype of a tensor; ``None`` for anything else."""
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), str(value.dtype).replace("torch.", ""))
    return None


def describe_value(value: Any) -> str:
    """A value as a message names it: ``a tensor of shape [2, 10]``, ``a tuple of 3 elements``."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape [{', '.join(map(str, value.shape))}]"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} element{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a dict with keys " + ", ".join(repr(k) for k in list(value)[:6])
    return f"a {type(value).__name__}"


def as_call(example: Any) -> Tuple[tuple, Dict[str, Any]]:
    """A model input as call arguments: a dict is keywords, a tuple or list positional."""
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    return (example,), {}
