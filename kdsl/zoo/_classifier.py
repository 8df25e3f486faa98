"""The shape most of the zoo's CIFAR classifiers share, built and run in one place."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from kdsl.zoo._init import init_weights


class StagedClassifier(nn.Module):
    """A stem, numbered stages, an optional 1x1 head convolution, global pooling and a classifier.

    Names: ``conv1``/``bn1``/``relu`` (stem), ``layer1``..``layerN``, ``conv2``/``bn2`` (only with
    a head convolution, which reuses ``relu``), ``avgpool``, ``fc``. A subclass calls
    :meth:`_add_stem`, then :meth:`_add_stage` per stage, then :meth:`_add_classifier`: modules
    register in that order, which fixes the state-dict keys and, since building a layer draws
    random numbers, the initial weights of a seeded model.
    """

    def _add_stem(self, conv: nn.Conv2d) -> int:
        """Register the stem around ``conv``; returns its output channels."""
        self.conv1 = conv
        self.bn1 = nn.BatchNorm2d(conv.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self._stage_count = 0
        return conv.out_channels

    def _add_stage(self, stage: nn.Module) -> None:
        self._stage_count += 1
        self.add_module(f"layer{self._stage_count}", stage)

    def _add_classifier(self, channels: int, num_classes: int, head: Optional[int] = None) -> None:
        """Register the head (a 1x1 convolution to ``head`` channels, if given), the pooling and
        ``fc``, then initialise the whole model."""
        self._has_head = head is not None
        if head is not None:
            self.conv2 = nn.Conv2d(channels, head, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(head)
            channels = head
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for index in range(1, self._stage_count + 1):
            x = getattr(self, f"layer{index}")(x)
        if self._has_head:
            x = self.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)
