"""Loss-weight schedules: a weight that changes with training progress (no torch needed).

Progress is measured in epochs, fractional within an epoch (``epoch + step / steps_per_epoch``),
so a schedule moves smoothly even over few epochs. ``epochs=None`` means "over the whole run" and
needs the total number of epochs (``Distiller.set_progress(total_epochs=...)``; the trainer sets it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Progress:
    epoch: float = 0.0  # fractional epochs done
    total_epochs: Optional[int] = None
    step: int = 0  # global optimizer steps done


class Schedule:
    def __call__(self, progress: Progress) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def _span(self, epochs: Optional[float], progress: Progress) -> float:
        if epochs is not None:
            return float(epochs)
        if progress.total_epochs is None:
            raise ValueError(f"schedule '{type(self).__name__.lower()}' runs over the whole training "
                             "but the total number of epochs is unknown: give it epochs=..., or call "
                             "distiller.set_progress(total_epochs=...)")
        return float(progress.total_epochs)

    def _fraction(self, epochs: Optional[float], progress: Progress) -> float:
        span = self._span(epochs, progress)
        return 1.0 if span <= 0 else min(max(progress.epoch / span, 0.0), 1.0)


class Constant(Schedule):
    """``constant(value)``: the same weight throughout."""

    def __init__(self, value: float = 1.0) -> None:
        self.value = float(value)

    def __call__(self, progress: Progress) -> float:
        return self.value


class Linear(Schedule):
    """``linear(start, end, epochs)``: from ``start`` to ``end`` linearly over ``epochs`` epochs
    (the whole run if omitted), then ``end``."""

    def __init__(self, start: float = 0.0, end: float = 1.0, epochs: Optional[float] = None) -> None:
        self.start, self.end, self.epochs = float(start), float(end), epochs

    def __call__(self, progress: Progress) -> float:
        t = self._fraction(self.epochs, progress)
        return self.start + (self.end - self.start) * t


class Warmup(Schedule):
    """``warmup(value, epochs)``: from 0 to ``value`` linearly over the first ``epochs`` epochs,
    then ``value`` (DKD's warm-up of its loss weight, Zhao et al. 2022)."""

    def __init__(self, value: float = 1.0, epochs: float = 5.0) -> None:
        self.value, self.epochs = float(value), float(epochs)

    def __call__(self, progress: Progress) -> float:
        return self.value * self._fraction(self.epochs, progress)


class Cosine(Schedule):
    """``cosine(start, end, epochs)``: from ``start`` to ``end`` along a half cosine over
    ``epochs`` epochs (the whole run if omitted), then ``end``."""

    def __init__(self, start: float = 1.0, end: float = 0.0, epochs: Optional[float] = None) -> None:
        self.start, self.end, self.epochs = float(start), float(end), epochs

    def __call__(self, progress: Progress) -> float:
        t = self._fraction(self.epochs, progress)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))


class Step(Schedule):
    """``step(value, milestones, gamma)``: ``value * gamma ** k`` after the k-th milestone epoch."""

    def __init__(self, value: float = 1.0, milestones: Sequence[float] = (), gamma: float = 0.1) -> None:
        self.value, self.milestones, self.gamma = float(value), sorted(milestones), float(gamma)

    def __call__(self, progress: Progress) -> float:
        passed = sum(1 for m in self.milestones if progress.epoch >= m)
        return self.value * self.gamma ** passed
