"""Whether models are being built for inspection (``kdsl check``, ``kdsl explain``, ``kdsl graph``)
rather than for training.

Inspection needs shapes, never weights. A factory that would read gigabytes of weights (a pretrained
Hugging Face model: :func:`kdsl.hub.hf_pretrained`) asks :func:`inspecting` and, when it is true,
builds its model from its config on the meta device instead: no file of weights is read and no
memory is allocated. The compiler's inspection pass sets it around the factories it calls.
Torch-free.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

__all__ = ["inspecting", "inspection"]

_INSPECTING: contextvars.ContextVar[bool] = contextvars.ContextVar("kdsl_inspecting", default=False)


def inspecting() -> bool:
    """True while models are built for inspection (shapes only, weights not read)."""
    return _INSPECTING.get()


@contextlib.contextmanager
def inspection() -> Iterator[None]:
    """Build models for inspection inside this block."""
    token = _INSPECTING.set(True)
    try:
        yield
    finally:
        _INSPECTING.reset(token)
