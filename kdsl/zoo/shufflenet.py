"""ShuffleNet V1 (Zhang et al., 2018) and V2 (Ma et al., 2018) in their CIFAR forms.

These are the small-input variants CRD benchmarks as "ShuffleNetV1" and "ShuffleNetV2": the
ImageNet stem (stride-2 convolution + max-pool) is replaced by a stride-1 convolution so that a
32x32 input reaches 4x4 after the three stride-2 stages.

* V1: 1x1 stem convolution to 24 channels; stages of 4/8/4 bottlenecks with 240/480/960 output
  channels and 3 groups. The first bottleneck of a stage concatenates an average-pooled shortcut,
  so its residual branch produces ``out - in`` channels; the very first 1x1 convolution (on the
  24-channel stem) is not grouped, as in the paper.
* V2 (1x): 3x3 stem convolution to 24 channels; stages of one down-sampling unit followed by
  3/7/3 basic units with 116/232/464 channels, then a 1x1 convolution to 1024 channels.

Names: ``conv1``/``bn1``/``relu`` (stem), ``layer1``..``layer3``, (V2 only: ``conv2``/``bn2``),
``avgpool``, ``fc``. Every unit owns a single in-place ``relu``; V1 units name their average-pool
shortcut ``downsample`` (``None`` for identity shortcuts).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from kdsl.zoo._classifier import StagedClassifier

__all__ = [
    "ChannelShuffle",
    "ShuffleV1Unit",
    "ShuffleNetV1",
    "ShuffleV2DownUnit",
    "ShuffleV2Unit",
    "ShuffleNetV2",
    "shufflenetv1",
    "shufflenetv2",
]


class ChannelShuffle(nn.Module):
    """Interleave ``groups`` channel groups so grouped convolutions exchange information."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleV1Unit(nn.Module):
    """ShuffleNet V1 bottleneck: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1.

    With ``stride == 2`` the shortcut is a 3x3 average pool (``downsample``) and the two branches
    are concatenated; otherwise they are added.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int,
                 first_groups: Optional[int] = None) -> None:
        super().__init__()
        mid = out_channels // 4
        pointwise_groups = groups if first_groups is None else first_groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=pointwise_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(pointwise_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Module] = None
        if stride == 2:
            self.downsample = nn.AvgPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(self.relu(self.bn1(self.conv1(x))))
        # The paper drops the ReLU after the depthwise convolution; the CIFAR reference keeps
        # it, and since it has no parameters we follow the reference so features match.
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            out = torch.cat([out, self.downsample(x)], dim=1)
        else:
            out = out + x
        return self.relu(out)


class ShuffleNetV1(StagedClassifier):
    """CIFAR ShuffleNet V1.

    Args:
        num_classes: size of the output layer.
        stage_channels: output channels of the three stages.
        stage_blocks: units per stage.
        groups: groups of the 1x1 convolutions.
    """

    def __init__(self, num_classes: int = 100, stage_channels: Sequence[int] = (240, 480, 960),
                 stage_blocks: Sequence[int] = (4, 8, 4), groups: int = 3) -> None:
        super().__init__()
        stem = channels = self._add_stem(nn.Conv2d(3, 24, 1, bias=False))
        for out_channels, blocks in zip(stage_channels, stage_blocks):
            units: List[nn.Module] = []
            for block in range(blocks):
                if block == 0:
                    # The concatenated shortcut supplies ``channels`` of the stage's output.
                    units.append(ShuffleV1Unit(channels, out_channels - channels, 2, groups,
                                               first_groups=1 if channels == stem else None))
                else:
                    units.append(ShuffleV1Unit(out_channels, out_channels, 1, groups))
            channels = out_channels
            self._add_stage(nn.Sequential(*units))
        self._add_classifier(channels, num_classes)


def _add_branch(unit: nn.Module, first: int, in_channels: int, channels: int, stride: int) -> None:
    """Register ShuffleNet V2's convolution branch on ``unit``: 1x1, depthwise 3x3 with ``stride``,
    1x1, as ``conv{first}``/``bn{first}`` onwards (the CIFAR reference's names, so its state-dict
    keys). Both V2 units run it the same way: ReLU after the 1x1 convolutions only."""
    layers = ((in_channels, 1, 1, 1), (channels, 3, stride, channels), (channels, 1, 1, 1))
    for index, (inputs, kernel, step, groups) in enumerate(layers, start=first):
        unit.add_module(f"conv{index}", nn.Conv2d(inputs, channels, kernel, stride=step, padding=kernel // 2,
                                                  groups=groups, bias=False))
        unit.add_module(f"bn{index}", nn.BatchNorm2d(channels))


class ShuffleV2DownUnit(nn.Module):
    """ShuffleNet V2 spatial down-sampling unit: two stride-2 branches, concatenated and shuffled.

    Left branch: ``conv1``/``bn1`` (depthwise, stride 2), ``conv2``/``bn2`` (1x1). Right branch:
    ``conv3``/``bn3`` (1x1), ``conv4``/``bn4`` (depthwise, stride 2), ``conv5``/``bn5`` (1x1).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        _add_branch(self, 3, in_channels, mid, stride=2)
        self.relu = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.relu(self.bn3(self.conv3(x)))
        right = self.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], dim=1))


class ShuffleV2Unit(nn.Module):
    """ShuffleNet V2 basic unit: half the channels pass through, the other half go through
    ``conv1``/``bn1`` (1x1), ``conv2``/``bn2`` (depthwise), ``conv3``/``bn3`` (1x1); the halves are
    concatenated and shuffled."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.split = (channels - half, half)
        _add_branch(self, 1, half, half, stride=1)
        self.relu = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = torch.split(x, self.split, dim=1)
        branch = self.relu(self.bn1(self.conv1(branch)))
        branch = self.bn2(self.conv2(branch))
        branch = self.relu(self.bn3(self.conv3(branch)))
        return self.shuffle(torch.cat([kept, branch], dim=1))


# Stage widths, head width, and basic units per stage, by ShuffleNet V2 size (Ma et al., Table 5).
_V2_SIZES = {
    0.5: ((48, 96, 192), 1024, (3, 7, 3)),
    1.0: ((116, 232, 464), 1024, (3, 7, 3)),
    1.5: ((176, 352, 704), 1024, (3, 7, 3)),
    2.0: ((244, 488, 976), 2048, (3, 7, 3)),
}


class ShuffleNetV2(StagedClassifier):
    """CIFAR ShuffleNet V2.

    Args:
        num_classes: size of the output layer.
        net_size: one of 0.5, 1.0, 1.5, 2.0 (the paper's width settings).
    """

    def __init__(self, num_classes: int = 100, net_size: float = 1.0) -> None:
        super().__init__()
        if net_size not in _V2_SIZES:
            raise ValueError(f"net_size must be one of {sorted(_V2_SIZES)}, got {net_size}")
        stage_channels, head, stage_blocks = _V2_SIZES[net_size]
        channels = self._add_stem(nn.Conv2d(3, 24, 3, padding=1, bias=False))
        for out_channels, blocks in zip(stage_channels, stage_blocks):
            units: List[nn.Module] = [ShuffleV2DownUnit(channels, out_channels)]
            units.extend(ShuffleV2Unit(out_channels) for _ in range(blocks))
            channels = out_channels
            self._add_stage(nn.Sequential(*units))
        self._add_classifier(channels, num_classes, head)


def shufflenetv1(num_classes: int = 100) -> ShuffleNetV1:
    """CIFAR ShuffleNet V1 with 3 groups (stages 240/480/960), CRD's "ShuffleNetV1"."""
    return ShuffleNetV1(num_classes)


def shufflenetv2(num_classes: int = 100, net_size: float = 1.0) -> ShuffleNetV2:
    """CIFAR ShuffleNet V2 (1x by default), CRD's "ShuffleNetV2"."""
    return ShuffleNetV2(num_classes, net_size)
