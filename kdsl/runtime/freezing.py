"""Frozen teachers: eval mode (norm layers included) and no gradients while a distiller holds
them, restored exactly when the last distiller holding a model lets it go."""

from __future__ import annotations

import weakref
from typing import Callable

from torch import nn


class _FrozenState:
    def __init__(self, model: nn.Module) -> None:
        self.training = {name: m.training for name, m in model.named_modules()}
        self.requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
        self.count = 0


_FROZEN: "weakref.WeakKeyDictionary[nn.Module, _FrozenState]" = weakref.WeakKeyDictionary()


def freeze(model: nn.Module) -> None:
    """Eval mode (norm layers included) and no gradients; undone by the last :func:`unfreeze`."""
    state = _FROZEN.get(model)
    if state is None:
        state = _FROZEN[model] = _FrozenState(model)
    state.count += 1
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(model: nn.Module) -> None:
    state = _FROZEN.get(model)
    if state is None:
        return
    state.count -= 1
    if state.count > 0:
        return
    del _FROZEN[model]
    for name, m in model.named_modules():
        if name in state.training:
            m.training = state.training[name]
    for name, p in model.named_parameters():
        if name in state.requires_grad:
            p.requires_grad_(state.requires_grad[name])


def frozen_cleanup(model: nn.Module) -> Callable[[], None]:
    """Freeze ``model`` now; the returned function unfreezes it (once)."""
    freeze(model)
    return lambda: unfreeze(model)


def batch_stats_cleanup(model: nn.Module) -> Callable[[], None]:
    """A frozen teacher declared ``train_mode``: its norm layers normalize with each batch's
    statistics when it runs in train mode, but never update their running statistics (their
    ``track_running_stats`` is off while a distiller holds it: in eval mode they still normalize
    with the running statistics as loaded, so the teacher's evaluation is unchanged). The returned
    function restores the flags."""
    from torch.nn.modules.batchnorm import _NormBase

    norms = [m for m in model.modules() if isinstance(m, _NormBase) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    def restore() -> None:
        for m in norms:
            m.track_running_stats = True
    return restore
