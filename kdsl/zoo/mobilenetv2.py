"""MobileNetV2 (Sandler et al., 2018) in the CIFAR form CRD benchmarks as "MobileNetV2".

CRD's network is the width-0.5 model (RepDistiller's ``mobile_half``): the usual seven stages of
inverted residuals (expansion 6, except the first stage) scaled to half width, but with a stride-2
stem and strides 1/1/2/2/1/2/1 so that a 32x32 input ends at 2x2, and a 1x1 head convolution that
keeps 1280 channels whatever the width multiplier (below 1). The first stage keeps its 1x1
expansion convolution even though its expansion factor is 1, which the reference model does and
the published parameter count includes.

Names: ``conv1``/``bn1``/``relu`` (stem), ``layer1``..``layer7`` (stages of
:class:`InvertedResidual`), ``conv2``/``bn2`` (head), ``avgpool``, ``fc``. Blocks hold ``conv1``/
``bn1`` (expand), ``conv2``/``bn2`` (depthwise), ``conv3``/``bn3`` (linear projection) and one
in-place ``relu`` used after the first two.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from kdsl.zoo._classifier import StagedClassifier

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion, output channels at width 1, blocks, stride of the first block); ``None`` expansion
# means "the network's expansion ratio".
_STAGES = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise (3x3), project (1x1, linear), with a residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return x + out if self.use_residual else out


class MobileNetV2(StagedClassifier):
    """CIFAR MobileNetV2.

    Args:
        num_classes: size of the output layer.
        width_mult: channel multiplier for the stem and the seven stages.
        expansion: expansion ratio of stages 2-7.
    """

    def __init__(self, num_classes: int = 100, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        channels = self._add_stem(nn.Conv2d(3, int(32 * width_mult), 3, stride=2, padding=1, bias=False))
        for ratio, width, blocks, stride in _STAGES:
            out_channels = int(width * width_mult)
            ratio = expansion if ratio is None else ratio
            layers: List[nn.Module] = []
            for block in range(blocks):
                layers.append(InvertedResidual(channels, out_channels, stride if block == 0 else 1, ratio))
                channels = out_channels
            self._add_stage(nn.Sequential(*layers))
        head = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self._add_classifier(channels, num_classes, head)


def mobilenetv2(num_classes: int = 100, width_mult: float = 0.5, expansion: int = 6) -> MobileNetV2:
    """CIFAR MobileNetV2 at CRD's default width 0.5 (RepDistiller's ``mobile_half``)."""
    return MobileNetV2(num_classes, width_mult, expansion)
