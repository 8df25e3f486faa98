"""A model whose aux_head is built but never called in forward (for never_runs.kd)."""

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
