"""Data factories for `kdsl train` tests, referenced as ``train_data:NAME``."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

import kdsl.data


class NoisyDigits(Dataset):
    """The digits training set with random noise added on every access: an augmentation that
    draws from torch's RNG in whichever process reads the item (a DataLoader worker, say)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x + 0.1 * torch.rand_like(x), y


def noisy_digits():
    splits = kdsl.data.digits()
    return NoisyDigits(splits.train), splits.val


class Untouchable(Dataset):
    """A training set that must never be read: every access is counted, then refused."""

    reads = 0

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        Untouchable.reads += 1
        raise RuntimeError(f"the training set was read (item {i})")


def untouchable_digits():
    """The digits, whose training half raises on any read (the validation half is the real one)."""
    splits = kdsl.data.digits()
    return Untouchable(splits.train), splits.val
