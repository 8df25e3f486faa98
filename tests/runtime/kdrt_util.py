"""Shared helpers of the runtime tests: exact comparison, hand-written features and losses.

Nothing here calls kdsl: these are the reference implementations the distiller is compared with."""

from __future__ import annotations

import copy
from typing import Dict, Iterable, Tuple

import torch
from torch import nn

ATOL = 1e-10


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    assert isinstance(actual, torch.Tensor), f"{what}: got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} vs {expected.dtype}"
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert torch.allclose(actual, expected, atol=ATOL, rtol=0), f"{what}: max abs diff {diff:.3e}"


def assert_grads_equal(pairs: Iterable[Tuple[str, nn.Parameter, nn.Parameter]]) -> int:
    """Every (name, kdsl-side parameter, reference parameter) has equal gradients; returns the count."""
    n = 0
    for name, p, q in pairs:
        assert q.grad is not None, f"reference {name} got no gradient"
        assert p.grad is not None, f"{name} got no gradient from the distiller's loss"
        assert_close(p.grad, q.grad, f"grad of {name}")
        n += 1
    return n


def named_pairs(a: nn.Module, b: nn.Module, prefix: str = "") -> list:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert list(pa) == list(pb)
    return [(prefix + k, pa[k], pb[k]) for k in pa]


def frozen_copy(model: nn.Module) -> nn.Module:
    """The hand-written side's teacher: a copy in eval mode without gradients."""
    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def randomize_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial affine parameters and running statistics for every BN layer."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen, dtype=m.bias.dtype) * 0.3)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen,
                                                 dtype=m.running_mean.dtype) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen,
                                               dtype=m.running_var.dtype) + 0.5)


# ----------------------------------------------------------------------------- features
def convnet_features(m: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """ConvNet's forward written out: the BN outputs before the ReLUs, and the logits."""
    b1 = m.bn1(m.conv1(x))
    h = torch.relu(b1)
    b2 = m.layer[1](m.layer[0](h))
    h = torch.relu(b2)
    logits = m.fc(torch.flatten(m.pool(h), 1))
    return {"b1": b1, "b2": b2, "logits": logits}


def headnet_logits(m: nn.Module, x: torch.Tensor):
    """HeadNet's forward written out, the head's normalize and gain as formulas: logits per head."""
    h = torch.relu(m.bn(m.conv(x)))
    f = m.proj(h.mean((2, 3)))
    f = f / (f.norm(dim=1, keepdim=True) + 1.0)
    return [head.fc(f) * 0.5 for head in m.heads]


# ----------------------------------------------------------------------------- losses
def kd_loss(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    log_p_s = torch.log_softmax(s / tau, 1)
    log_p_t = torch.log_softmax(t / tau, 1)
    return tau ** 2 * (log_p_t.exp() * (log_p_t - log_p_s)).sum() / s.shape[0]


def ce_loss(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(s, 1).gather(1, y[:, None]).mean()


def hint_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ((s - t) ** 2).sum() / s.shape[0]


def attention_map(f: torch.Tensor) -> torch.Tensor:
    q = (f * f).mean(1).flatten(1)
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


def at_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return ((attention_map(s) - attention_map(t)) ** 2).mean()
