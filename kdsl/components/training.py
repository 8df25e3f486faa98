"""Optimizers and learning-rate schedules named in the catalog (``kdsl/catalog/training.py``).

Learning-rate schedules are per-step ``LambdaLR``s: the factor is a function of fractional epochs,
so a resumed run continues exactly where it stopped (the scheduler's state is its step count).
"""

from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn


def _groups(params: Iterable, weight_decay: float, decay_norm_and_bias: bool, bias_lr_mult: float = 1.0,
            bias_decay_mult: float = 1.0, norm_decay_mult: float = 1.0) -> List[dict]:
    """Parameter groups by role, with mmengine's ``paramwise_cfg`` multipliers: a bias (a
    parameter named ``*.bias`` when names are given, ``(name, parameter)`` pairs) gets lr x
    bias_lr_mult and weight decay x bias_decay_mult; any other one-dimensional parameter is a norm
    layer's and gets weight decay x norm_decay_mult (x 0 when decay_norm_and_bias is false, biases
    too). Groups are weights, then biases, then norms, each left out when empty; their ``lr_mult``
    multiplies the optimizer's lr."""
    named = [item if isinstance(item, tuple) else ("", item) for item in params]
    named = [(n, p) for n, p in named if p.requires_grad]
    off = 0.0 if not decay_norm_and_bias else 1.0
    roles = {"weight": ([], 1.0, 1.0), "bias": ([], bias_lr_mult, bias_decay_mult * off),
             "norm": ([], 1.0, norm_decay_mult * off)}
    for name, p in named:
        role = "weight" if p.ndim > 1 else "bias" if name.endswith("bias") or (not name and not off) else "norm"
        roles[role][0].append(p)
    if all(lr_mult == 1.0 and (decay == 1.0 or not weight_decay) for _, lr_mult, decay in roles.values()):
        return [{"params": [p for _, p in named], "weight_decay": weight_decay, "lr_mult": 1.0}]
    return [{"params": ps, "weight_decay": weight_decay * decay, "lr_mult": lr_mult}
            for ps, lr_mult, decay in roles.values() if ps]


def _with_lr(groups: List[dict], lr: float) -> List[dict]:
    for g in groups:
        g["lr"] = lr * g.pop("lr_mult")
    return groups


def sgd(params, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        nesterov: bool = False, decay_norm_and_bias: bool = True, **paramwise) -> torch.optim.Optimizer:
    return torch.optim.SGD(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                           lr=lr, momentum=momentum, nesterov=nesterov)


def adam(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.0,
         decay_norm_and_bias: bool = True, **paramwise) -> torch.optim.Optimizer:
    return torch.optim.Adam(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                            lr=lr, betas=tuple(betas))


def adamw(params, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.01,
          decay_norm_and_bias: bool = False, **paramwise) -> torch.optim.Optimizer:
    return torch.optim.AdamW(_with_lr(_groups(params, weight_decay, decay_norm_and_bias, **paramwise), lr),
                             lr=lr, betas=tuple(betas))


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
