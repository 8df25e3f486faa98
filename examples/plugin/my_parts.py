"""A plugin for plugin_demo.kd: a custom loss and a custom connector, registered by decorators.

`import "my_parts"` in a spec imports this module (the spec's own folder is searched first).
"""

import torch
from torch import nn

import kdsl
from kdsl.catalog.shapes import same_shape


# shape rules let `kdsl check` catch mismatches and let connectors infer their output channels
@kdsl.register_loss("scaled_l1", rules=[same_shape("preds_S", "preds_T")])
class ScaledL1(nn.Module):
    """Mean absolute difference, times a scale: L = scale * mean(|S - T|)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, preds_S, preds_T):
        return self.scale * (preds_S - preds_T).abs().mean()


@kdsl.register_connector("channel_gate", infer=[kdsl.Infer("channels")])
class ChannelGate(nn.Module):
    """A learned sigmoid gate per channel: y = x * sigmoid(g)."""

    def __init__(self, channels: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * torch.sigmoid(self.gate).view(1, -1, *([1] * (x.dim() - 2)))
