"""Adversarial terms of data-free distillation: torch implementations of
:mod:`kdsl.catalog.adversarial_losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdsl.components._common import Declared, upcast

__all__ = ["ZSKTAdversarial"]


class ZSKTAdversarial(Declared):
    """-KL(softmax(T / tau) || softmax(S / tau)), batch mean: the generator maximises the
    student-teacher divergence."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        log_p_s = F.log_softmax(s / self.tau, dim=1)
        log_p_t = F.log_softmax(t / self.tau, dim=1)
        divergence = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True) / s.shape[0]
        return -divergence
