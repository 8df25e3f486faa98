"""Connectors' named methods (``para.encode(t)``, ``para.reconstruct(t)``): the catalog declares
them, the classes implement them, and factor transfer's paraphraser and translator compute what
Kim et al. (NeurIPS 2018) describe, with ``forward`` unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY

F64 = torch.float64


def build(name, **options):
    return instantiate(REGISTRY.get("connector", name), **options).double()


def feature(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def ft_stack(x, convs, transposed=False):
    """Three 3x3 (transposed) convolutions, stride 1, padding 1, each followed by LeakyReLU(0.1)."""
    for conv in convs:
        op = F.conv_transpose2d if transposed else F.conv2d
        x = F.leaky_relu(op(x, conv.weight, conv.bias, stride=1, padding=1), 0.1)
    return x


def convs_of(sequential):
    return [m for m in sequential if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_declared_methods_exist_on_the_classes():
    declared = {c.name: c.methods for c in REGISTRY.all("connector") if c.methods}
    assert {n: [m for m, _ in ms] for n, ms in declared.items()} == {
        "paraphraser": ["encode", "reconstruct"], "translator": ["encode"]}
    for name, methods in declared.items():
        cls = REGISTRY.get("connector", name).load()
        for method, doc in methods:
            assert callable(getattr(cls, method)) and doc.strip()


@pytest.mark.parametrize("channels, options, factor", [(8, {}, 4), (6, {"rate": 1.0}, 6),
                                                       (8, {"factor_channels": 3}, 3)])
def test_paraphraser_encode_and_reconstruct(channels, options, factor):
    torch.manual_seed(0)
    para = build("paraphraser", in_channels=channels, **options)
    x = feature(2, channels, 5, 5)
    encoded, rebuilt = para.encode(x), para.reconstruct(x)
    assert encoded.shape == (2, factor, 5, 5)  # the factor's channels
    assert rebuilt.shape == x.shape  # compared with x in the pretraining loss
    # encode = the encoder (C -> C -> F -> F); reconstruct = the decoder (F -> F -> C -> C) after it
    by_hand = ft_stack(x, convs_of(para.encoder))
    torch.testing.assert_close(encoded, by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rebuilt, ft_stack(by_hand, convs_of(para.decoder), transposed=True),
                               rtol=1e-12, atol=1e-12)
    # forward is unchanged: it returns the factor, not the reconstruction
    torch.testing.assert_close(para(x), by_hand, rtol=0, atol=0)
    torch.testing.assert_close(para.reconstruction_loss(x), ((rebuilt - x) ** 2).mean(), rtol=1e-12, atol=1e-14)


def test_paraphraser_reconstruct_trains_encoder_and_decoder():
    torch.manual_seed(0)
    para = build("paraphraser", in_channels=4)
    F.mse_loss(para.reconstruct(feature(2, 4, 3, 3)), feature(2, 4, 3, 3, seed=1)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in para.parameters())


def test_translator_encode_is_its_forward():
    torch.manual_seed(0)
    trans = build("translator", in_channels=6, factor_channels=3)
    x = feature(2, 6, 4, 4)
    by_hand = ft_stack(x, convs_of(trans.layers))
    assert trans.encode(x).shape == (2, 3, 4, 4)
    torch.testing.assert_close(trans.encode(x), by_hand, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(trans(x), by_hand, rtol=0, atol=0)
