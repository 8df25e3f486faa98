"""Weight initialisation shared by the zoo's architectures."""

from __future__ import annotations

from torch import nn


def init_weights(model: nn.Module) -> None:
    """Initialise ``model`` in place the way the CIFAR distillation benchmarks do.

    Convolutions get He-normal weights in fan-out mode (the ResNet paper's choice, which the
    RepDistiller models share), normalisation layers start as the identity, and biases start
    at zero. Linear layers keep PyTorch's default, since the reference implementations disagree
    among themselves there.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
