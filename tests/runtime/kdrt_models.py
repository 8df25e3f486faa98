"""Models for the runtime tests. Every class here is the tests' own.

The specs refer to these classes by ``method "kdrt_models:..."``; ``resize`` and ``scale`` are
imported by name on purpose (a second binding of a recorded function)."""

from __future__ import annotations

import torch
from torch import nn

from kdrt_ops import resize, scale


class ConvNet(nn.Module):
    """conv-BN-ReLU(inplace) twice, global pooling, a linear classifier. ``bn1`` and ``layer.1``
    are the recorded BN layers whose outputs the in-place ReLUs overwrite."""

    def __init__(self, width: int = 4, ncls: int = 5, in_ch: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.layer = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, ncls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.layer(x)
        return self.fc(torch.flatten(self.pool(x), 1))


# ----------------------------------------------------------------------------- heads
class BaseHead(nn.Module):
    """Methods that subclasses inherit (so patching ``Head.x`` adds an attribute to ``Head``)."""

    GAIN = 1.0

    def get_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """Label assignment: the class each sample is trained towards."""
        return logits.detach().argmax(1)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x / (x.norm(dim=1, keepdim=True) + 1.0)

    @classmethod
    def gain(cls, x: torch.Tensor) -> torch.Tensor:
        return x * cls.GAIN


class Head(BaseHead):
    GAIN = 0.5

    def __init__(self, cin: int, ncls: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cin, ncls)

    def assign(self, f: torch.Tensor) -> torch.Tensor:  # Head's own attribute
        return self.fc(f)

    def forward(self, f: torch.Tensor):
        logits = self.gain(self.assign(self.normalize(f)))
        return logits, self.get_targets(logits)


class HeadNet(nn.Module):
    """A stem (conv-BN-ReLU(inplace)) and two heads of different class counts: each head asks
    ``get_targets`` once per pass, head 0 first."""

    def __init__(self, width: int = 4, sizes=(5, 3)) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.proj = nn.Linear(width, 6)
        self.heads = nn.ModuleList(Head(6, n) for n in sizes)

    def forward(self, x: torch.Tensor):
        h = self.relu(self.bn(self.conv(x)))
        f = self.proj(h.mean((2, 3)))
        return [head(f) for head in self.heads]


# ----------------------------------------------------------------------------- everything
class MaskedBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor, mask=None, gain: float = 1.0) -> torch.Tensor:
        y = self.conv(x) * gain
        return y if mask is None else y * mask


class KitchenSink(nn.Module):
    """Uses every kind of thing a record can name: module outputs and inputs (a keyword input
    and one left at its default), a module called twice, methods of a head class (own, inherited,
    static, class), two module-level functions through their second binding, parameters.
    ``forward(x, fail=True)`` (or ``self.fail = True``) raises in the middle of the pass."""

    def __init__(self, width: int = 4, ncls: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.block = MaskedBlock(width)
        self.shared = nn.Conv2d(width, width, 1)
        self.head = Head(width, ncls)
        self.unused = nn.Linear(2, 2)  # built, never called in forward
        self.fail = False

    def forward(self, x: torch.Tensor, fail: bool = False):
        h = self.relu(self.bn(self.conv(x)))
        h = self.block(h, mask=(h[:, :1] > 0).to(h.dtype))
        h = self.shared(self.shared(h))
        h = resize(h, size=(4, 4))
        h = scale(h, 2.0)
        if fail or self.fail:
            raise RuntimeError("forward failed on purpose")
        return self.head(h.mean((2, 3)))


# ----------------------------------------------------------------------------- deliveries
class Proposer(nn.Module):
    """Calls ``propose`` ``n_calls`` times per pass; its results are the second output."""

    def __init__(self, n_calls: int = 3, offset: float = 0.0) -> None:
        super().__init__()
        self.n_calls = n_calls
        self.offset = offset
        self.lin = nn.Linear(4, 4)

    def propose(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return x.new_full((x.shape[0],), self.offset + i)

    def forward(self, x: torch.Tensor):
        props = [self.propose(x, i) for i in range(self.n_calls)]
        return self.lin(x), torch.stack(props, 1)


class Flaky(nn.Module):
    """A linear model that raises when ``fail`` is set (on the module or as a keyword)."""

    def __init__(self, cin: int = 4, cout: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(cin, cout)
        self.fail = False

    def forward(self, x: torch.Tensor, fail: bool = False) -> torch.Tensor:
        if fail or self.fail:
            raise RuntimeError("forward failed on purpose")
        return self.lin(x)


# ----------------------------------------------------------------------------- procedures
class TinyGenerator(nn.Module):
    """A data-free generator for the procedure tests: latent [N, latent] -> image [N, 3, hw, hw]
    (linear, batch norm in training mode, tanh)."""

    def __init__(self, latent: int = 8, hw: int = 6) -> None:
        super().__init__()
        self.hw = hw
        self.fc = nn.Linear(latent, 3 * hw * hw)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc(z).view(-1, 3, self.hw, self.hw)))


class CountingConvNet(ConvNet):
    """A ConvNet that counts its forward calls (a phase that does not use it must not call it)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)
