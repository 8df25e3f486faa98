"""Data factories for the teacher-store tests: the digits with a random horizontal flip drawn
from torch's generator (which kdsl seeds per sample), or from Python's ``random`` (which it does
not). ``AUGMENT`` switches the flip off without changing the data reference or its options, so
that a test can change the augmentation alone; ``CHANGED`` alters one training image alone;
``NOISE_BEYOND`` replaces with noise every training image whose index is not in that set (the
samples a run does not check before its first step)."""

from __future__ import annotations

import random

import torch

from kdsl.data import ImageDataset, Splits, digits

AUGMENT = True
CHANGED = False
NOISE_BEYOND: frozenset = frozenset()


class _Flip:
    def __init__(self, python_random: bool) -> None:
        self.python_random = python_random

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        heads = random.random() < 0.5 if self.python_random else bool(torch.rand(()) < 0.5)
        return image.flip(-1) if heads else image


def flipped_digits(python_random: bool = False) -> Splits:
    base = digits()
    images = base.train.images.clone()
    if CHANGED:
        images[5] = 1.0 - images[5]
    if NOISE_BEYOND:
        others = [i for i in range(len(images)) if i not in NOISE_BEYOND]
        images[others] = torch.rand(len(others), *images.shape[1:], generator=torch.Generator().manual_seed(0))
    transform = _Flip(python_random) if AUGMENT else None
    return Splits(ImageDataset(images, base.train.labels, transform), base.val, base.num_classes,
                  base.input_shape)
