"""A model whose aux_head is built but never called in forward (for never_runs.kd)."""

import torch
from torch import nn


class WithUnusedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)
        self.aux_head = nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3)))


def with_unused_head():
    return WithUnusedHead()


class TableBlock(nn.Module):
    """A block that adds a slice of its own positional table: ``positions`` returns a view of
    the parameter (for fsdp_param_view.kd)."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(8, 4))
        self.fc = nn.Linear(4, 4)

    def positions(self, n):
        return self.pos[:n]

    def forward(self, x):
        return self.fc(x + self.positions(x.shape[1]))


class Tabled(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([TableBlock(), TableBlock()])
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


def tabled():
    return Tabled()
