"""The learning-rate schedule of a phase, built from the run's ``lr_schedule`` setting: one of the
per-epoch schedules with warm-up (``cosine()``), one chainable piece (``poly(power=0.9)``) or a
``chain(...)`` of pieces (:mod:`kdsl.components.lr_schedules`)."""

from __future__ import annotations

from typing import Any, Dict, Tuple

from kdsl.catalog.lr_schedules import CHAIN
from kdsl.catalog.registry import REGISTRY
from kdsl.components.lr_schedules import Chain, Piece


def build_lr_schedule(optimizer, setting: Tuple[str, Dict[str, Any]], *, epochs: int, steps_per_epoch: int):
    """The scheduler of ``optimizer`` over a stage of ``epochs`` epochs of ``steps_per_epoch``
    optimizer steps; it is stepped after every optimizer step."""
    name, options = setting
    if name == CHAIN:
        pieces = [_piece(n, o) for n, o in options["schedules"]]
        return Chain(optimizer, pieces, epochs=epochs, steps_per_epoch=steps_per_epoch)
    impl = REGISTRY.get("lr_schedule", name).load()
    if isinstance(impl, type) and issubclass(impl, Piece):
        return Chain(optimizer, [impl(**options)], epochs=epochs, steps_per_epoch=steps_per_epoch)
    return impl(optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, **options)


def _piece(name: str, options: Dict[str, Any]) -> Piece:
    return REGISTRY.get("lr_schedule", name).load()(**options)
