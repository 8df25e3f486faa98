"""VGG with batch norm for CIFAR, in the five-stage layout used by CRD/RepDistiller.

Each stage is a run of 3x3 convolutions (with bias, as in the original VGG) each followed by batch
norm and ReLU. Max-pooling halves the resolution after stages 1-3 only, so stages 4 and 5 both run
at 4x4 on a 32x32 input; a global average pool and one linear layer finish the network. VGG-8 uses
one convolution per stage and VGG-13 two.

Names: ``layer1``..``layer5`` (stages, each with ``conv1``/``bn1``, ``conv2``/``bn2``, ... and one
in-place ``relu`` called after every batch norm), ``pool1``..``pool3``, ``avgpool`` and ``fc``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from kdsl.zoo._init import init_weights

__all__ = ["VGGStage", "CifarVGG", "vgg8", "vgg13"]

# Output channels of every convolution, per stage. "B" is Simonyan & Zisserman's VGG-13
# configuration; "S" is the one-convolution-per-stage network CRD calls vgg8.
_CONFIGS = {
    "S": ((64,), (128,), (256,), (512,), (512,)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class VGGStage(nn.Module):
    """A run of conv-BN-ReLU units; submodules ``conv{i}``/``bn{i}`` for ``i = 1..n`` and ``relu``."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.depth = len(channels)
        for index, out_channels in enumerate(channels, start=1):
            self.add_module(f"conv{index}", nn.Conv2d(in_channels, out_channels, 3, padding=1))
            self.add_module(f"bn{index}", nn.BatchNorm2d(out_channels))
            in_channels = out_channels
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.depth + 1):
            x = self.relu(getattr(self, f"bn{index}")(getattr(self, f"conv{index}")(x)))
        return x


class CifarVGG(nn.Module):
    """Five-stage VGG for 32x32 inputs.

    Args:
        config: per-stage tuples of convolution widths (see ``_CONFIGS``).
        num_classes: size of the output layer.
    """

    def __init__(self, config: Sequence[Sequence[int]], num_classes: int = 100) -> None:
        super().__init__()
        if len(config) != 5:
            raise ValueError(f"a CIFAR VGG has five stages, got {len(config)}")
        in_channels = 3
        for index, channels in enumerate(config, start=1):
            self.add_module(f"layer{index}", VGGStage(in_channels, channels))
            in_channels = channels[-1]
            if index <= 3:
                self.add_module(f"pool{index}", nn.MaxPool2d(kernel_size=2, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.layer1(x))
        x = self.pool2(self.layer2(x))
        x = self.pool3(self.layer3(x))
        x = self.layer4(x)
        x = self.layer5(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def vgg8(num_classes: int = 100) -> CifarVGG:
    """VGG-8 with batch norm (one convolution per stage), CRD's student for vgg13."""
    return CifarVGG(_CONFIGS["S"], num_classes)


def vgg13(num_classes: int = 100) -> CifarVGG:
    """VGG-13 (configuration B) with batch norm."""
    return CifarVGG(_CONFIGS["B"], num_classes)
