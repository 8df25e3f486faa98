"""DAFL's generator in the zoo: parameter counts from its layer table, output shapes (CIFAR and the
bundled 8x8 digits), module names, the output normalisation, and the resolver's path to it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kdsl.zoo as zoo
from kdsl.core.resolve import import_ref
from kdsl.zoo.dafl import DAFLGenerator, dafl_generator


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_count(latent_dim: int, img_size: int, channels: int) -> int:
    """Recount from DAFL's layer table: linear to 128 x (img_size/4)^2, BN(128), conv 128->128 +
    BN(128), conv 128->64 + BN(64), conv 64->channels, BN(channels) without affine parameters."""
    init = img_size // 4
    linear = latent_dim * 128 * init * init + 128 * init * init
    bn0 = 2 * 128
    conv1, bn1 = 9 * 128 * 128 + 128, 2 * 128
    conv2, bn2 = 9 * 128 * 64 + 64, 2 * 64
    conv3 = 9 * 64 * channels + channels
    return linear + bn0 + conv1 + bn1 + conv2 + bn2 + conv3


@pytest.mark.parametrize("latent_dim,img_size,channels", [(100, 32, 3), (100, 8, 1), (64, 16, 3), (10, 4, 2)])
def test_parameter_count_follows_the_layer_table(latent_dim, img_size, channels):
    assert count(dafl_generator(latent_dim, img_size, channels)) == expected_count(latent_dim, img_size, channels)


def test_exact_parameter_counts():
    # measured, pinned against regressions: the CIFAR defaults and the digits configuration
    assert count(dafl_generator()) == 1_051_139
    assert count(dafl_generator(latent_dim=100, img_size=8, channels=1)) == 274_305


@pytest.mark.parametrize("kwargs,shape", [({}, (5, 3, 32, 32)),
                                          ({"latent_dim": 100, "img_size": 8, "channels": 1}, (5, 1, 8, 8)),
                                          ({"latent_dim": 16, "img_size": 12, "channels": 2}, (5, 2, 12, 12))])
def test_output_shape(kwargs, shape):
    torch.manual_seed(0)
    gen = dafl_generator(**kwargs)
    z = torch.randn(5, gen.latent_dim)
    out = gen(z)
    assert out.shape == shape and out.dtype == torch.float32
    gen.eval()
    with torch.no_grad():
        assert gen(z).shape == shape


def test_gradients_reach_every_parameter_and_the_latent_code():
    torch.manual_seed(0)
    gen = dafl_generator(latent_dim=100, img_size=8, channels=1)
    z = torch.randn(6, 100, requires_grad=True)
    gen(z).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_training_output_is_standardised_per_channel():
    # the final affine-free BatchNorm gives every channel zero mean and variance v / (v + eps)
    # over the batch in training mode, v the variance of the tanh output and eps 1e-5
    torch.manual_seed(0)
    gen = dafl_generator(latent_dim=100, img_size=8, channels=2).double()
    before = []
    gen.tanh.register_forward_hook(lambda module, args, output: before.append(output.detach()))
    out = gen(torch.randn(32, 100, dtype=torch.float64))
    per_channel = out.transpose(0, 1).reshape(2, -1)
    v = before[0].transpose(0, 1).reshape(2, -1).var(1, unbiased=False)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(per_channel.var(1, unbiased=False), v / (v + 1e-5), atol=1e-10, rtol=0)


def test_module_names_and_layer_settings():
    gen = dafl_generator(latent_dim=100, img_size=8, channels=1)
    names = dict(gen.named_modules())
    expected = ["linear", "bn0", "up1", "conv1", "bn1", "relu1", "up2", "conv2", "bn2", "relu2",
                "conv3", "tanh", "bn3"]
    assert [n for n in names if n] == expected
    assert gen.linear.out_features == 128 * 2 * 2
    assert (gen.conv1.in_channels, gen.conv1.out_channels) == (128, 128)
    assert (gen.conv2.in_channels, gen.conv2.out_channels) == (128, 64)
    assert (gen.conv3.in_channels, gen.conv3.out_channels) == (64, 1)
    # DAFL's code: BatchNorm2d(C, 0.8) sets eps to 0.8 in the two inner blocks; LeakyReLU(0.2)
    assert gen.bn0.eps == 1e-5 and gen.bn1.eps == 0.8 and gen.bn2.eps == 0.8
    assert gen.relu1.negative_slope == 0.2 and gen.relu2.negative_slope == 0.2
    assert gen.bn3.weight is None and gen.bn3.bias is None and not gen.bn3.affine
    assert gen.up1.scale_factor == 2 and gen.up1.mode == "nearest"


def test_forward_order_matches_the_layer_table():
    """The forward pass equals the layers applied one after another by hand."""
    torch.manual_seed(0)
    gen = dafl_generator(latent_dim=7, img_size=8, channels=3).double()
    z = torch.randn(4, 7, dtype=torch.float64)
    x = gen.linear(z).view(4, 128, 2, 2)
    x = nn.functional.interpolate(gen.bn0(x), scale_factor=2)
    x = nn.functional.leaky_relu(gen.bn1(gen.conv1(x)), 0.2)
    x = nn.functional.interpolate(x, scale_factor=2)
    x = nn.functional.leaky_relu(gen.bn2(gen.conv2(x)), 0.2)
    x = gen.bn3(torch.tanh(gen.conv3(x)))
    torch.testing.assert_close(gen(z), x, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs,text", [({"img_size": 10}, "multiple of 4"),
                                         ({"img_size": 0}, "img_size must be a positive integer"),
                                         ({"channels": 0}, "channels must be a positive integer"),
                                         ({"latent_dim": 2.5}, "latent_dim must be a positive integer")])
def test_bad_options(kwargs, text):
    with pytest.raises(ValueError, match=text):
        dafl_generator(**kwargs)


def test_wrong_latent_shape_is_reported():
    gen = dafl_generator(latent_dim=100, img_size=8, channels=1)
    with pytest.raises(ValueError, match=r"latent codes \[N, 100\], got \[3, 64\]"):
        gen(torch.randn(3, 64))


def test_reachable_from_a_spec_reference():
    factory = import_ref("kdsl.zoo:dafl_generator", "model")
    assert factory is zoo.dafl_generator is zoo.MODELS["dafl_generator"]
    assert isinstance(factory(latent_dim=100, img_size=8, channels=1), DAFLGenerator)
