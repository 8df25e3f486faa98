"""Gradient accumulation (``accumulate = N``): each phase's optimizer steps once every N of its
updates, on the sum of their gradients, each loss scaled by 1/N (the mean over the N batches, as
one batch N times larger gives, up to batch-dependent layers such as BatchNorm).

An epoch whose steps N does not divide ends with a shorter accumulation: its last ``steps % N``
updates make an optimizer step of their own (still scaled by 1/N, so those batches weigh what
every other batch weighs), and the next epoch starts a fresh accumulation. An epoch then has
``ceil(steps / N)`` optimizer steps, which is what the lr schedules count.
"""

from __future__ import annotations

import math
from typing import Optional


def optimizer_steps(steps_per_epoch: int, accumulate: int) -> int:
    """Optimizer steps per epoch of ``steps_per_epoch`` training steps."""
    return math.ceil(steps_per_epoch / max(1, accumulate))


def remainder_note(steps_per_epoch: int, accumulate: int) -> Optional[str]:
    """What happens to an epoch's last steps when ``accumulate`` does not divide them, or None."""
    rest = steps_per_epoch % accumulate if accumulate > 1 else 0
    if not rest:
        return None
    return (f"accumulate = {accumulate} does not divide the {steps_per_epoch} steps of an epoch: each "
            f"epoch's last {rest} step{'s' if rest > 1 else ''} make an optimizer step of their own "
            f"({optimizer_steps(steps_per_epoch, accumulate)} optimizer steps an epoch, each batch "
            f"weighted 1/{accumulate}); set steps_per_epoch or the batch size to a multiple to avoid it")
