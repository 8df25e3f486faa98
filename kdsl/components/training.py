"""Optimizers and learning-rate schedules named in the catalog (``kdsl/catalog/training.py``).

Learning-rate schedules are per-step ``LambdaLR``s: the factor is a function of fractional epochs,
so a resumed run continues exactly where it stopped (the scheduler's state is its step count).
"""

from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn


def _groups(params: Iterable[nn.Parameter], weight_decay: float,
            decay_norm_and_bias: bool) -> List[dict]:
    params = [p for p in params if p.requires_grad]
    if decay_norm_and_bias or not weight_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    # one-dimensional parameters are biases and norm scales/shifts
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def sgd(params, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        nesterov: bool = False, decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    return torch.optim.SGD(_groups(params, weight_decay, decay_norm_and_bias), lr=lr,
                           momentum=momentum, nesterov=nesterov)


def adam(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.0,
         decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    return torch.optim.Adam(_groups(params, weight_decay, decay_norm_and_bias), lr=lr,
                            betas=tuple(betas))


def adamw(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.01,
          decay_norm_and_bias: bool = False) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_groups(params, weight_decay, decay_norm_and_bias), lr=lr,
                             betas=tuple(betas))


def _per_step(optimizer, steps_per_epoch: int, warmup_epochs: float, factor):
    steps_per_epoch = max(1, int(steps_per_epoch))

    def fn(step: int) -> float:
        epoch = step / steps_per_epoch
        scale = factor(epoch)
        if warmup_epochs > 0 and epoch < warmup_epochs:
            scale *= (step + 1) / (warmup_epochs * steps_per_epoch)
        return scale

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def constant_lr(optimizer, *, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0):
    return _per_step(optimizer, steps_per_epoch, warmup_epochs, lambda e: 1.0)


def cosine_lr(optimizer, *, epochs: int, steps_per_epoch: int, min_lr: float = 0.0,
              warmup_epochs: float = 0.0):
    base = optimizer.param_groups[0]["lr"]
    floor = min_lr / base if base else 0.0

    def factor(e: float) -> float:
        t = min(max(e / max(epochs, 1e-12), 0.0), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return _per_step(optimizer, steps_per_epoch, warmup_epochs, factor)


def step_lr(optimizer, *, epochs: int, steps_per_epoch: int, milestones=(150, 180, 210),
            gamma: float = 0.1, warmup_epochs: float = 0.0):
    ms = sorted(milestones)
    return _per_step(optimizer, steps_per_epoch, warmup_epochs,
                     lambda e: gamma ** sum(1 for m in ms if e >= m - 1e-9))
