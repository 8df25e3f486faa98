"""Connectors of one paper that return several tensors: torch implementations of
:mod:`kdsl.catalog.paper_connectors` (FBKD's student and teacher modules, knowledge review's
ABF, BYOT's gated shallow classifier). Formulas and papers are documented on the catalog entries.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kdsl.components.connectors import ConnectorConfigError

__all__ = ["NonLocal2d", "FBKDStudent", "FBKDTeacher", "ABF", "BYOT", "SepConv"]


# --------------------------------------------------------------------------------------------
# FBKD
# --------------------------------------------------------------------------------------------
class NonLocal2d(nn.Module):
    """Non-local block x + BN(W_z(f(theta(x), phi(x)) g(x))), as mmcv's NonLocal2d."""

    def __init__(self, in_channels: int, reduction: int = 2, mode: str = "dot_product",
                 sub_sample: bool = False, maxpool_stride: int = 2, zeros_init: bool = True) -> None:
        super().__init__()
        self.inter = max(in_channels // reduction, 1)
        self.mode = mode
        self.g = nn.Conv2d(in_channels, self.inter, 1)
        self.theta = nn.Conv2d(in_channels, self.inter, 1)
        self.phi = nn.Conv2d(in_channels, self.inter, 1)
        self.conv_out = nn.Conv2d(self.inter, in_channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(in_channels)
        self.pool = nn.MaxPool2d(maxpool_stride) if sub_sample else nn.Identity()
        for conv in (self.g, self.theta, self.phi):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        if zeros_init:
            # a zero BN scale and shift make the block the identity until it has learnt something
            nn.init.zeros_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
        else:
            nn.init.normal_(self.conv_out.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = self.pool(self.g(x)).reshape(n, self.inter, -1).transpose(1, 2)   # [N, P', C']
        theta = self.theta(x).reshape(n, self.inter, -1).transpose(1, 2)      # [N, P, C']
        phi = self.pool(self.phi(x)).reshape(n, self.inter, -1)               # [N, C', P']
        pairwise = theta @ phi
        if self.mode == "dot_product":
            pairwise = pairwise / pairwise.shape[-1]
        else:
            pairwise = (pairwise / theta.shape[-1] ** 0.5).softmax(dim=-1)
        y = (pairwise @ g).transpose(1, 2).reshape(n, self.inter, *x.shape[2:])
        return x + self.norm(self.conv_out(y))


def attention_masks(x: torch.Tensor, spatial_tau: float,
                    channel_tau: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """FBKD's spatial mask [N, 1, H, W] and channel mask [N, C, 1, 1] of a feature map."""
    n, c, h, w = x.shape
    spatial = x.abs().mean(1).reshape(n, -1)
    spatial = (torch.softmax(spatial / spatial_tau, dim=1) * (h * w)).reshape(n, 1, h, w)
    channel = x.abs().mean((2, 3))
    channel = (torch.softmax(channel / channel_tau, dim=1) * c).reshape(n, c, 1, 1)
    return spatial, channel


class _FBKDSide(nn.Module):
    def __init__(self, in_channels: int, reduction: int, mode: str, sub_sample: bool,
                 maxpool_stride: int, zeros_init: bool, spatial_tau: float,
                 channel_tau: float) -> None:
        super().__init__()
        self.non_local = NonLocal2d(in_channels, reduction, mode, sub_sample, maxpool_stride,
                                    zeros_init)
        self.spatial_tau = float(spatial_tau)
        self.channel_tau = float(channel_tau)


class FBKDStudent(_FBKDSide):
    """(spatial mask, channel mask, channel-pool adaptation, spatial-pool adaptation, relation
    adaptation, feature adaptation) of a student feature map."""

    def __init__(self, in_channels: int, reduction: int = 2, mode: str = "dot_product",
                 sub_sample: bool = False, maxpool_stride: int = 2, zeros_init: bool = True,
                 spatial_tau: float = 0.5, channel_tau: float = 0.5) -> None:
        super().__init__(in_channels, reduction, mode, sub_sample, maxpool_stride, zeros_init,
                         spatial_tau, channel_tau)
        self.channel_adaptation = nn.Linear(in_channels, in_channels)
        self.spatial_adaptation = nn.Conv2d(1, 1, 3, padding=1)
        self.feature_adaptation = nn.Conv2d(in_channels, in_channels, 1)
        self.relation_adaptation = nn.Conv2d(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        spatial, channel = attention_masks(x, self.spatial_tau, self.channel_tau)
        channel_pool = self.channel_adaptation(x.mean((2, 3)))
        spatial_pool = self.spatial_adaptation(x.mean(1, keepdim=True))
        relation = self.relation_adaptation(self.non_local(x))
        return spatial, channel, channel_pool, spatial_pool, relation, self.feature_adaptation(x)


class FBKDTeacher(_FBKDSide):
    """(spatial mask, channel mask, spatial pool, relation, feature) of a teacher feature map."""

    def __init__(self, in_channels: int, reduction: int = 2, mode: str = "dot_product",
                 sub_sample: bool = False, maxpool_stride: int = 2, zeros_init: bool = True,
                 spatial_tau: float = 0.5, channel_tau: float = 0.5) -> None:
        super().__init__(in_channels, reduction, mode, sub_sample, maxpool_stride, zeros_init,
                         spatial_tau, channel_tau)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        spatial, channel = attention_masks(x, self.spatial_tau, self.channel_tau)
        return spatial, channel, x.mean(1, keepdim=True), self.non_local(x), x


# --------------------------------------------------------------------------------------------
# Knowledge review
# --------------------------------------------------------------------------------------------
class ABF(nn.Module):
    """Attention-based fusion: returns (output, residual for the next shallower ABF)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool = True,
                 out_size: Optional[int] = None) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(mid_channels * 2, 2, 1), nn.Sigmoid())
                         if fuse else None)
        self.out_size = out_size
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor,
                residual: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if (residual is None) == (self.att_conv is not None):
            raise ConnectorConfigError(
                "'abf' with fuse=true needs the deeper ABF's residual as its second input"
                if residual is None else
                "'abf' was given a residual but has fuse=false; set fuse=true to fuse it")
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            weights = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * weights[:, 0:1] + residual * weights[:, 1:2]
        if self.out_size is not None and tuple(x.shape[2:]) != (self.out_size, self.out_size):
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="nearest")
        return self.conv2(x), x


# --------------------------------------------------------------------------------------------
# BYOT
# --------------------------------------------------------------------------------------------
class SepConv(nn.Sequential):
    """DARTS separable convolution: two (ReLU, depthwise conv, pointwise conv, BN) halves, the
    first at ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 2) -> None:
        pad = kernel_size // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, pad, groups=in_channels,
                      bias=False),
            nn.Conv2d(in_channels, in_channels, 1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, kernel_size, 1, pad, groups=in_channels,
                      bias=False),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class BYOT(nn.Module):
    """BYOT's shallow classifier: gate * x, SepConv stages, pooling, linear; returns
    (features, logits)."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int,
                 kernel_size: int = 3, pool_size: Optional[int] = None) -> None:
        super().__init__()
        stages = math.log2(out_channels / in_channels)
        if stages < 0 or not stages.is_integer():
            raise ConnectorConfigError(
                f"'byot' needs out_channels ({out_channels}) to be in_channels ({in_channels}) "
                f"times a power of 2")
        self.gate = nn.Sequential(SepConv(in_channels, in_channels, kernel_size),
                                  nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Upsample(scale_factor=2, mode="bilinear"), nn.Sigmoid())
        layers = []
        channels = in_channels
        for _ in range(int(stages)):
            layers.append(SepConv(channels, channels * 2, kernel_size))
            channels *= 2
        layers.append(nn.AvgPool2d(pool_size) if pool_size else nn.AdaptiveAvgPool2d(1))
        self.scala = nn.Sequential(*layers)
        self.fc = nn.Linear(out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"'byot' needs an even height and width (its gate downsamples by 2 "
                             f"and upsamples back), got {list(x.shape)}")
        features = self.scala(self.gate(x) * x).flatten(1)
        return features, self.fc(features)
