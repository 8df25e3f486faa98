"""CIFAR ResNets (He et al., 2016) as benchmarked in the distillation literature.

The depth-``6n+2`` family (resnet8 ... resnet110) uses stage widths 16/32/64 after a 16-channel
stem; the ``x4`` variants (resnet8x4, resnet32x4) widen the stem to 32 and the stages to
64/128/256, which is the configuration of CRD (Tian et al., ICLR 2020) and its RepDistiller code.
Projection shortcuts (1x1 convolution + batch norm) are used whenever the shape changes, as in
CRD's models and the parameter counts quoted for them; He et al.'s own CIFAR ResNets used
parameter-free zero-padding shortcuts instead, so their table is about 2.8k parameters lower.

Module names follow torchvision so that a spec can point at ``layer2``, ``layer3.4.bn2`` or ``fc``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

from kdsl.zoo._classifier import StagedClassifier

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (post-activation).

    Submodules: ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``relu`` (one in-place ReLU applied twice,
    after ``bn1`` and after the residual sum) and ``downsample`` (``None`` when the shortcut is
    the identity).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class CifarResNet(StagedClassifier):
    """A three-stage ResNet for 32x32 inputs.

    Args:
        depth: total number of weighted layers; must be ``6n + 2`` (``n`` blocks per stage).
        widths: four channel counts: the stem, then the three stages.
        num_classes: size of the output layer.

    The stem is a single 3x3 convolution (``conv1``/``bn1``/``relu``) at full resolution, stages
    ``layer1``..``layer3`` run at 32, 16 and 8 pixels, then ``avgpool`` and ``fc``.
    """

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"a CIFAR ResNet needs depth 6n+2 with n >= 1, got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths must list the stem and three stages, got {list(widths)}")
        blocks = (depth - 2) // 6
        self._in_channels = self._add_stem(_conv3x3(3, widths[0]))
        for channels, stride in zip(widths[1:], (1, 2, 2)):
            self._add_stage(self._make_layer(channels, blocks, stride))
        self._add_classifier(self._in_channels, num_classes)

    def _make_layer(self, channels: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_channels = channels * BasicBlock.expansion
        if stride != 1 or self._in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers: List[nn.Module] = [BasicBlock(self._in_channels, channels, stride, downsample)]
        self._in_channels = out_channels
        layers.extend(BasicBlock(out_channels, channels) for _ in range(1, blocks))
        return nn.Sequential(*layers)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


def _factory(name: str, depth: int, widths: Sequence[int], doc: str) -> Callable[..., CifarResNet]:
    """The public factory ``name``: a ResNet of ``depth`` and ``widths`` for ``num_classes``."""

    def factory(num_classes: int = 100) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


def _narrow(depth: int) -> Callable[..., CifarResNet]:
    blocks = (depth - 2) // 6
    doc = f"ResNet-{depth} for CIFAR ({blocks} block{'s' if blocks > 1 else ''} per stage, widths 16/32/64)."
    return _factory(f"resnet{depth}", depth, _NARROW, doc)


def _wide(depth: int) -> Callable[..., CifarResNet]:
    doc = f"ResNet-{depth}x4 (CRD): ResNet-{depth} with a 32-channel stem and stages 64/128/256."
    return _factory(f"resnet{depth}x4", depth, _WIDE, doc)


resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110 = map(_narrow, (8, 14, 20, 32, 44, 56, 110))
resnet8x4, resnet32x4 = _wide(8), _wide(32)
