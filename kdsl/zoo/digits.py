"""Small models for scikit-learn's 8x8 handwritten digits (``[N, 1, 8, 8]`` inputs in [0, 1]).

They exist so that examples and tests can run a real teacher -> student distillation on a CPU in
seconds. The two CNNs share one topology so that feature-level specs can pair the same module
names across teacher and student (``layer1`` is 4x4, ``layer2`` is 4x4 with twice the stem width):

* ``conv1``/``bn1``/``relu``: 3x3 stem at 8x8 with ``width`` channels;
* ``layer1``: 3x3 convolution to ``2 * width`` channels, then 2x2 max-pool to 4x4;
* ``layer2``: 3x3 convolution at 4x4, ``2 * width`` channels;
* ``avgpool``, ``fc``.

The MLP student flattens the image and has one hidden layer: ``flatten``, ``fc1``, ``relu``, ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

from kdsl.zoo._init import init_weights

__all__ = ["DigitsStage", "DigitsCNN", "DigitsMLP", "digits_teacher", "digits_cnn", "digits_mlp"]


class DigitsStage(nn.Module):
    """``conv``-``bn``-``relu``, optionally followed by a 2x2 max-pool named ``pool``."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        return x if self.pool is None else self.pool(x)


class DigitsCNN(nn.Module):
    """Three-convolution CNN for 8x8 digits; ``width`` sets the stem channels (stages use twice)."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = DigitsStage(width, 2 * width, pool=True)
        self.layer2 = DigitsStage(2 * width, 2 * width, pool=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class DigitsMLP(nn.Module):
    """One-hidden-layer perceptron over the 64 pixels; ``width`` is the hidden size."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_features: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, width)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.fc1(self.flatten(x))))


def digits_teacher(num_classes: int = 10, width: int = 32) -> DigitsCNN:
    """Digits teacher: :class:`DigitsCNN` with a 32-channel stem (about 57k parameters)."""
    return DigitsCNN(num_classes, width)


def digits_cnn(num_classes: int = 10, width: int = 8) -> DigitsCNN:
    """Digits CNN student: the teacher's topology at a quarter of its width (about 4k parameters)."""
    return DigitsCNN(num_classes, width)


def digits_mlp(num_classes: int = 10, width: int = 32) -> DigitsMLP:
    """Digits MLP student: 64 -> ``width`` -> ``num_classes`` (about 2.4k parameters)."""
    return DigitsMLP(num_classes, width)
