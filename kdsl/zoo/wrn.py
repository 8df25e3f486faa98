"""Wide residual networks (Zagoruyko & Komodakis, 2016) for CIFAR.

WRN-d-k has three stages of ``(d - 4) / 6`` pre-activation blocks with ``16k``, ``32k`` and ``64k``
channels after a 16-channel stem convolution. The shortcut is a bare 1x1 convolution (no batch
norm) whenever the channel count or resolution changes, and it reads the *pre-activated* input in
that case, as in the authors' code; the published parameter counts depend on both details.

Names follow torchvision where the architecture allows: ``conv1``, ``layer1``..``layer3``,
``bn1``, ``relu``, ``avgpool``, ``fc``. Being pre-activation, the network has no batch norm right
after the stem, so its only top-level ``bn1`` is the one that follows ``layer3`` (the name the
reference implementation gives it). Blocks hold ``bn1``, ``relu``, ``conv1``, ``bn2``,
``dropout``, ``conv2`` and ``downsample``.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from kdsl.zoo._init import init_weights

__all__ = ["PreActBlock", "WideResNet", "wrn_16_2", "wrn_40_1", "wrn_40_2"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv, BN-ReLU-dropout-conv, plus a shortcut.

    ``relu`` is a single in-place ReLU used for both activations; ``downsample`` is a 1x1
    convolution when the shape changes and ``None`` otherwise.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(p=drop_rate)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.downsample: Optional[nn.Conv2d] = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.dropout(self.relu(self.bn2(out)))
        out = self.conv2(out)
        # A projection must see the normalised input so both branches share one activation;
        # an identity shortcut carries the raw input, which is what keeps the block pre-activation.
        shortcut = x if self.downsample is None else self.downsample(pre)
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs.

    Args:
        depth: ``6n + 4``.
        widen_factor: channel multiplier ``k``.
        num_classes: size of the output layer.
        drop_rate: dropout probability between the two convolutions of every block.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100, drop_rate: float = 0.0) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"a wide ResNet needs depth 6n+4 with n >= 1, got {depth}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.layer1 = self._make_layer(widths[0], widths[1], blocks, 1, drop_rate)
        self.layer2 = self._make_layer(widths[1], widths[2], blocks, 2, drop_rate)
        self.layer3 = self._make_layer(widths[2], widths[3], blocks, 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @staticmethod
    def _make_layer(in_channels: int, channels: int, blocks: int, stride: int,
                    drop_rate: float) -> nn.Sequential:
        layers: List[nn.Module] = [PreActBlock(in_channels, channels, stride, drop_rate)]
        layers.extend(PreActBlock(channels, channels, 1, drop_rate) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.relu(self.bn1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def wrn_16_2(num_classes: int = 100, drop_rate: float = 0.0) -> WideResNet:
    """WRN-16-2: two blocks per stage, widths 32/64/128."""
    return WideResNet(16, 2, num_classes, drop_rate)


def wrn_40_1(num_classes: int = 100, drop_rate: float = 0.0) -> WideResNet:
    """WRN-40-1: six blocks per stage, widths 16/32/64."""
    return WideResNet(40, 1, num_classes, drop_rate)


def wrn_40_2(num_classes: int = 100, drop_rate: float = 0.0) -> WideResNet:
    """WRN-40-2: six blocks per stage, widths 32/64/128."""
    return WideResNet(40, 2, num_classes, drop_rate)
