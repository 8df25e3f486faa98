"""Models for `kdsl train` tests, referenced as ``train_models:NAME`` (this folder is on sys.path)."""

from __future__ import annotations

from torch import nn

import kdsl.zoo


class DropoutCNN(nn.Module):
    """digits_cnn with dropout before the classifier: training draws from torch's global RNG,
    so only a run that restores the RNG state resumes to the same weights."""

    def __init__(self, p: float = 0.3) -> None:
        super().__init__()
        self.body = kdsl.zoo.digits_cnn(width=4)
        self.drop = nn.Dropout(p)
        self.body.fc = nn.Sequential(self.drop, self.body.fc)

    def forward(self, x):
        return self.body(x)


def dropout_cnn(p: float = 0.3) -> DropoutCNN:
    return DropoutCNN(p)
