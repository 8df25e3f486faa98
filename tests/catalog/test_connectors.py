"""Built-in connectors: catalog declarations against implementations, value constraints, shapes,
parameter counts, gradient flow, and the method-specific behaviour of ofd_margin,
paraphraser/translator and mgd_generator."""

from __future__ import annotations

import inspect
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kdsl.catalog import connectors as catalog
from kdsl.catalog import method_connectors as method_catalog
from kdsl.components import connectors as modules
from kdsl.components.connectors import ConnectorConfigError
from kdsl.catalog.binding import bind, instantiate

REPO = Path(__file__).resolve().parents[2]
ALL = catalog.COMPONENTS + method_catalog.COMPONENTS
BY_NAME = {c.name: c for c in ALL}
METHOD_NAMES = {"ofd_margin", "paraphraser", "translator", "crd_embed", "mgd_generator"}

EXPECTED_NAMES = {"conv_bn", "conv1x1", "linear", "mlp", "norm", "ofd_margin", "paraphraser",
                  "translator", "crd_embed", "mgd_generator", "pool", "interpolate", "flatten",
                  "torch_nn"}


def build(name, **options):
    """Build a connector the way the compiler does: through the catalog, which checks the
    options' declared types and ranges, then imports the implementation."""
    return instantiate(BY_NAME[name], **options)


# Parameter counts from the layer formulas, independent of the implementations.
def conv_params(cin, cout, k, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def linear_params(fin, fout, bias=True):
    return fin * fout + (fout if bias else 0)


def norm_params(c):
    return 2 * c


def count(module):
    return sum(p.numel() for p in module.parameters())


def teacher_bn(gammas, betas, dtype=torch.float32):
    bn = nn.BatchNorm2d(len(gammas)).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gammas, dtype=dtype))
        bn.bias.copy_(torch.tensor(betas, dtype=dtype))
    return bn


# --------------------------------------------------------------------------------------------
# Catalog declarations
# --------------------------------------------------------------------------------------------
def test_catalog_declares_exactly_the_contracted_connectors():
    names = [c.name for c in ALL]
    assert set(names) == EXPECTED_NAMES
    assert len(names) == len(set(names))
    assert all(c.kind == "connector" for c in ALL)


def test_catalog_modules_mirror_the_implementation_modules():
    # each declaration lives in the catalog module named like its implementation's module
    for module in (catalog, method_catalog):
        suffix = module.__name__.rsplit(".", 1)[1]
        for c in module.COMPONENTS:
            assert c.impl.split(":")[0] == f"kdsl.components.{suffix}", c.name
    assert {c.name for c in method_catalog.COMPONENTS} == METHOD_NAMES


def test_catalog_module_does_not_import_torch():
    code = ("import sys\n"
            "import kdsl.catalog.connectors as m, kdsl.catalog.method_connectors as mm\n"
            "assert len(m.COMPONENTS) > 0 and len(mm.COMPONENTS) > 0\n"
            "print(sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.')))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_only_open_connectors_take_any_option(name):
    component = BY_NAME[name]
    params = inspect.signature(component.load().__init__).parameters.values()
    assert not any(p.kind is p.VAR_POSITIONAL for p in params)
    assert any(p.kind is p.VAR_KEYWORD for p in params) == component.open_options


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_declarations_are_well_formed(name):
    component = BY_NAME[name]
    assert component.summary and "\n" not in component.summary
    assert component.doc and "\n\n" not in component.doc
    assert all(p.type.name == "tensor" for p in component.inputs)
    for p in component.options:
        if not p.required:
            assert p.type.accepts(p.default), (p.name, p.default)
    for inf in component.infer:
        option = component.option(inf.option)
        assert option is not None and option.required, inf.option
        assert inf.source in ("input", "target")


def test_inferable_options_are_the_channel_counts():
    inferred = {c.name: {(i.option, i.source, i.dim, i.flat) for i in c.infer}
                for c in ALL}
    assert inferred["conv_bn"] == {("in_channels", "input", 1, False),
                                   ("out_channels", "target", 1, False)}
    assert inferred["conv1x1"] == inferred["conv_bn"]
    assert inferred["linear"] == {("in_features", "input", -1, False),
                                  ("out_features", "target", -1, False)}
    assert inferred["mlp"] == inferred["linear"]
    assert inferred["norm"] == {("num_features", "input", 1, False)}
    assert inferred["paraphraser"] == {("in_channels", "input", 1, False)}
    assert inferred["translator"] == {("in_channels", "input", 1, False),
                                      ("factor_channels", "target", 1, False)}
    assert inferred["crd_embed"] == {("in_features", "input", 1, True)}
    assert inferred["mgd_generator"] == {("student_channels", "input", 1, False),
                                         ("teacher_channels", "target", 1, False)}
    for name in ("ofd_margin", "pool", "interpolate", "flatten", "torch_nn"):
        assert inferred[name] == set()


def test_catalog_choices_match_the_implementations():
    assert set(catalog.ACT_CHOICES) == set(modules.ACTIVATIONS)
    assert catalog.CONV_NORM_CHOICES == modules.CONV_NORMS
    assert catalog.MLP_NORM_CHOICES == modules.MLP_NORMS
    assert catalog.NORM_KIND_CHOICES == modules.NORM_KINDS
    assert catalog.POOL_MODE_CHOICES == modules.POOL_MODES
    assert catalog.INTERPOLATE_MODE_CHOICES == modules.INTERPOLATE_MODES


def test_binding_leaves_inferable_options_to_the_compiler():
    problems = bind(BY_NAME["conv_bn"], [], [("kernel_size", 3)], inputs=False).problems
    assert problems == []
    problems = bind(BY_NAME["ofd_margin"], [], [], inputs=False).problems
    assert [p.code for p in problems] == ["KD308"] and "'bn'" in problems[0].message
    problems = bind(BY_NAME["torch_nn"], [], [("type", "Conv2d"), ("in_channels", 3)],
                    inputs=False).problems
    assert problems == []
    problems = bind(BY_NAME["linear"], [], [("out_feature", 3)], inputs=False).problems
    assert [p.code for p in problems] == ["KD305"] and "out_features" in problems[0].hint


# --------------------------------------------------------------------------------------------
# Shapes, parameter counts and gradients of every connector
# --------------------------------------------------------------------------------------------
def _mlp_count(fin, widths, fout, norm):
    total, prev = 0, fin
    for w in widths:
        total += linear_params(prev, w) + (norm_params(w) if norm != "none" else 0)
        prev = w
    return total + linear_params(prev, fout)


CASES = [
    # (name, options, input shape, output shape, parameter count)
    ("conv_bn", dict(in_channels=8, out_channels=16), (2, 8, 5, 5), (2, 16, 5, 5),
     conv_params(8, 16, 1, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, kernel_size=3), (2, 8, 5, 5),
     (2, 16, 5, 5), conv_params(8, 16, 3, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, kernel_size=3, stride=2), (2, 8, 9, 9),
     (2, 16, 5, 5), conv_params(8, 16, 3, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, kernel_size=3, padding=0), (2, 8, 9, 9),
     (2, 16, 7, 7), conv_params(8, 16, 3, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, kernel_size=2), (2, 8, 9, 9),
     (2, 16, 8, 8), conv_params(8, 16, 2, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, kernel_size=3, norm="none", act="relu"),
     (2, 8, 5, 5), (2, 16, 5, 5), conv_params(8, 16, 3, bias=True)),
    ("conv_bn", dict(in_channels=8, out_channels=16, norm="gn", num_groups=4, act="gelu"),
     (2, 8, 5, 5), (2, 16, 5, 5), conv_params(8, 16, 1, bias=False) + norm_params(16)),
    ("conv_bn", dict(in_channels=8, out_channels=16, norm="ln", bias=True), (2, 8, 5, 5),
     (2, 16, 5, 5), conv_params(8, 16, 1, bias=True) + norm_params(16)),
    ("conv1x1", dict(in_channels=8, out_channels=16), (2, 8, 5, 5), (2, 16, 5, 5),
     conv_params(8, 16, 1, bias=True)),
    ("conv1x1", dict(in_channels=8, out_channels=16, bn=True), (2, 8, 5, 5), (2, 16, 5, 5),
     conv_params(8, 16, 1, bias=False) + norm_params(16)),
    ("linear", dict(in_features=6, out_features=4), (3, 6), (3, 4), linear_params(6, 4)),
    ("linear", dict(in_features=6, out_features=4, bias=False), (3, 5, 6), (3, 5, 4),
     linear_params(6, 4, bias=False)),
    ("mlp", dict(in_features=6, out_features=4), (3, 6), (3, 4), _mlp_count(6, [4], 4, "none")),
    ("mlp", dict(in_features=6, out_features=4, hidden=[5, 7], norm="bn"), (3, 2, 6), (3, 2, 4),
     _mlp_count(6, [5, 7], 4, "bn")),
    ("mlp", dict(in_features=6, out_features=4, hidden=[9], norm="ln", act="silu"), (3, 6),
     (3, 4), _mlp_count(6, [9], 4, "ln")),
    ("mlp", dict(in_features=6, out_features=4, hidden=[]), (3, 6), (3, 4), linear_params(6, 4)),
    ("norm", dict(num_features=8), (4, 8, 3, 3), (4, 8, 3, 3), norm_params(8)),
    ("norm", dict(num_features=8), (4, 8), (4, 8), norm_params(8)),
    ("norm", dict(num_features=8, kind="ln"), (4, 8, 3), (4, 8, 3), norm_params(8)),
    ("norm", dict(num_features=8, kind="bn", affine=False), (4, 8, 2, 2, 2), (4, 8, 2, 2, 2), 0),
    ("paraphraser", dict(in_channels=8), (2, 8, 4, 4), (2, 4, 4, 4),
     conv_params(8, 8, 3) + conv_params(8, 4, 3) + conv_params(4, 4, 3)
     + conv_params(4, 4, 3) + conv_params(4, 8, 3) + conv_params(8, 8, 3)),
    ("paraphraser", dict(in_channels=8, factor_channels=6, use_bn=True), (2, 8, 4, 4),
     (2, 6, 4, 4),
     conv_params(8, 8, 3, False) + conv_params(8, 6, 3, False) + conv_params(6, 6, 3, False)
     + conv_params(6, 6, 3, False) + conv_params(6, 8, 3, False) + conv_params(8, 8, 3, False)
     + norm_params(8 + 6 + 6) + norm_params(6 + 8 + 8)),
    ("translator", dict(in_channels=6, factor_channels=4), (2, 6, 4, 4), (2, 4, 4, 4),
     conv_params(6, 6, 3) + conv_params(6, 4, 3) + conv_params(4, 4, 3)),
    ("translator", dict(in_channels=6, factor_channels=4, use_bn=True), (2, 6, 4, 4),
     (2, 4, 4, 4), conv_params(6, 6, 3, False) + conv_params(6, 4, 3, False)
     + conv_params(4, 4, 3, False) + norm_params(6 + 4 + 4)),
    ("crd_embed", dict(in_features=8 * 3 * 3), (2, 8, 3, 3), (2, 128), linear_params(72, 128)),
    ("crd_embed", dict(in_features=10, feat_dim=16), (2, 10), (2, 16), linear_params(10, 16)),
    ("mgd_generator", dict(student_channels=4, teacher_channels=8), (2, 4, 5, 5), (2, 8, 5, 5),
     conv_params(4, 8, 1) + 2 * conv_params(8, 8, 3)),
    ("mgd_generator", dict(student_channels=8, teacher_channels=8), (2, 8, 5, 5), (2, 8, 5, 5),
     2 * conv_params(8, 8, 3)),
    ("pool", dict(), (2, 8, 5, 5), (2, 8, 1, 1), 0),
    ("pool", dict(output_size=[2, 3], mode="max"), (2, 8, 6, 7), (2, 8, 2, 3), 0),
    ("pool", dict(output_size=2), (2, 8, 7), (2, 8, 2), 0),
    ("pool", dict(output_size=2), (2, 8, 4, 4, 4), (2, 8, 2, 2, 2), 0),
    ("interpolate", dict(size=8), (2, 3, 4, 4), (2, 3, 8, 8), 0),
    ("interpolate", dict(size=[6, 10], mode="nearest"), (2, 3, 4, 4), (2, 3, 6, 10), 0),
    ("interpolate", dict(scale_factor=0.5, mode="bicubic", align_corners=True), (2, 3, 8, 8),
     (2, 3, 4, 4), 0),
    ("interpolate", dict(scale_factor=2, mode="linear"), (2, 3, 5), (2, 3, 10), 0),
    ("flatten", dict(), (2, 3, 4, 5), (2, 60), 0),
    ("flatten", dict(start_dim=2), (2, 3, 4, 5), (2, 3, 20), 0),
    ("torch_nn", dict(type="Conv2d", in_channels=3, out_channels=5, kernel_size=3, padding=1),
     (2, 3, 6, 6), (2, 5, 6, 6), conv_params(3, 5, 3)),
    ("torch_nn", dict(type="GroupNorm", num_groups=2, num_channels=4), (2, 4, 3, 3),
     (2, 4, 3, 3), norm_params(4)),
]

CASE_IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("name,options,in_shape,out_shape,n_params", CASES, ids=CASE_IDS)
def test_output_shape_and_parameter_count(name, options, in_shape, out_shape, n_params):
    torch.manual_seed(0)
    connector = build(name, **options)
    assert isinstance(connector, nn.Module)
    out = connector(torch.randn(*in_shape))
    assert tuple(out.shape) == out_shape
    assert count(connector) == n_params


@pytest.mark.parametrize("name,options,in_shape,out_shape,n_params", CASES, ids=CASE_IDS)
def test_backward_reaches_every_parameter_and_the_input(name, options, in_shape, out_shape,
                                                        n_params):
    torch.manual_seed(1)
    connector = build(name, **options)
    x = torch.randn(*in_shape, requires_grad=True)
    out = connector(x)
    # random weights: a plain sum of a normalised output has zero gradient by construction
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    trainable = [(n, p) for n, p in connector.named_parameters()
                 if not (name == "paraphraser" and n.startswith("decoder."))]
    for pname, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_the_paraphraser_decoder_is_trained_by_the_reconstruction_loss():
    torch.manual_seed(2)
    para = build("paraphraser", in_channels=8, use_bn=True)
    x = torch.randn(3, 8, 4, 4)
    para.reconstruction_loss(x).backward()
    for pname, p in para.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


# --------------------------------------------------------------------------------------------
# Generic connectors: behaviour
# --------------------------------------------------------------------------------------------
def test_conv_bn_normalises_and_activates():
    torch.manual_seed(3)
    x = torch.randn(4, 6, 5, 5)
    out = build("conv_bn", in_channels=6, out_channels=10, kernel_size=3, act="relu")(x)
    assert out.min() >= 0
    pre = build("conv_bn", in_channels=6, out_channels=10, kernel_size=3)(x)
    assert torch.allclose(pre.mean(dim=(0, 2, 3)), torch.zeros(10), atol=1e-5)
    assert torch.allclose(pre.var(dim=(0, 2, 3), unbiased=False), torch.ones(10), atol=1e-3)
    ln = build("conv_bn", in_channels=6, out_channels=10, norm="ln")(x)
    assert torch.allclose(ln.mean(dim=1), torch.zeros(4, 5, 5), atol=1e-5)


def test_conv_bn_auto_bias_follows_the_norm():
    assert build("conv_bn", in_channels=2, out_channels=3).conv.bias is None
    assert build("conv_bn", in_channels=2, out_channels=3, norm="none").conv.bias is not None
    assert build("conv_bn", in_channels=2, out_channels=3, bias=False, norm="none").conv.bias \
        is None


@pytest.mark.parametrize("options,words", [
    (dict(norm="batch"), "'norm'"),
    (dict(act="rleu"), "did you mean 'relu'"),
    (dict(norm="gn", num_groups=5), "num_groups=4 would work"),
    (dict(bias="yes"), "'bias'"),
    (dict(kernel_size=0), "'kernel_size'"),
])
def test_conv_bn_rejects_bad_options(options, words):
    # choices and ranges are the catalog's (a ValueError); divisibility the implementation's
    with pytest.raises(ValueError, match=".") as info:
        build("conv_bn", in_channels=4, out_channels=8, **options)
    assert words in str(info.value)


def test_conv1x1_matches_a_pointwise_matrix_product():
    torch.manual_seed(4)
    reg = build("conv1x1", in_channels=5, out_channels=3)
    x = torch.randn(2, 5, 4, 4)
    w = reg.conv.weight[:, :, 0, 0]
    expected = torch.einsum("oc,nchw->nohw", w, x) + reg.conv.bias.view(1, 3, 1, 1)
    assert torch.allclose(reg(x), expected, atol=1e-6)


def test_linear_and_mlp_act_on_the_last_dimension():
    torch.manual_seed(5)
    lin = build("linear", in_features=6, out_features=4)
    x = torch.randn(2, 3, 6)
    assert torch.allclose(lin(x), x @ lin.weight.T + lin.bias, atol=1e-6)
    mlp = build("mlp", in_features=6, out_features=4, hidden=[5], norm="bn")
    flat = mlp(x.reshape(6, 6)).reshape(2, 3, 4)
    assert torch.allclose(mlp(x), flat, atol=1e-5)  # tokens are batch-norm samples too
    with pytest.raises(ValueError, match="'act'"):
        build("mlp", in_features=6, out_features=4, hidden=[], act="relux")
    with pytest.raises(ValueError, match="'hidden'"):
        build("mlp", in_features=6, out_features=4, hidden=5)


def test_norm_kinds_normalise_over_dimension_one():
    torch.manual_seed(6)
    x = 3 + 2 * torch.randn(16, 5, 4, 4)
    bn = build("norm", num_features=5)(x)
    assert torch.allclose(bn.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-5)
    assert torch.allclose(bn.var(dim=(0, 2, 3), unbiased=False), torch.ones(5), atol=1e-3)
    ln = build("norm", num_features=5, kind="ln")(x)
    assert torch.allclose(ln.mean(dim=1), torch.zeros(16, 4, 4), atol=1e-5)
    assert torch.allclose(ln.var(dim=1, unbiased=False), torch.ones(16, 4, 4), atol=1e-3)
    with pytest.raises(ValueError, match="'kind'"):
        build("norm", num_features=5, kind="gn")


def test_pool_and_interpolate_values():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 6)
    assert torch.allclose(build("pool")(x)[..., 0, 0], x.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(build("pool", mode="max")(x)[..., 0, 0], x.amax(dim=(2, 3)))
    near = build("interpolate", scale_factor=2, mode="nearest")(x)
    assert torch.equal(near, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    with pytest.raises(ValueError, match="spatial"):
        build("pool", output_size=[2, 2])(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="'bilinear'"):
        build("interpolate", size=4)(torch.randn(2, 3, 8))


@pytest.mark.parametrize("options,words", [
    (dict(), "exactly one"),
    (dict(size=4, scale_factor=2.0), "exactly one"),
    (dict(size=4, mode="nearest", align_corners=True), "align_corners"),
    (dict(size=4, mode="bilinaer"), "did you mean 'bilinear'"),
    (dict(scale_factor=-1.0), "must be > 0"),
    (dict(size=[4, 0]), "every item >= 1, got 0 (item 2)"),
])
def test_interpolate_rejects_bad_options(options, words):
    with pytest.raises(ValueError) as info:
        build("interpolate", **options)
    assert words in str(info.value)


def test_flatten_is_a_reshape():
    x = torch.randn(2, 3, 4, 5)
    assert torch.equal(build("flatten")(x), x.reshape(2, -1))
    assert torch.equal(build("flatten", start_dim=0, end_dim=1)(x), x.reshape(6, 4, 5))


# --------------------------------------------------------------------------------------------
# torch_nn
# --------------------------------------------------------------------------------------------
def test_torch_nn_builds_the_named_class_with_its_options():
    torch.manual_seed(8)
    conn = build("torch_nn", type="Conv2d", in_channels=3, out_channels=4, kernel_size=[3, 1])
    assert isinstance(conn.module, nn.Conv2d) and conn.module.kernel_size == (3, 1)
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(conn(x), conn.module(x))
    lazy = build("torch_nn", type="LazyLinear", out_features=5)
    assert lazy(torch.randn(2, 7)).shape == (2, 5)
    assert lazy.module.in_features == 7


@pytest.mark.parametrize("options,words", [
    (dict(type="Conv2D"), "did you mean 'Conv2d'"),
    (dict(type="batchnorm2d", num_features=3), "did you mean 'BatchNorm2d'"),
    (dict(type="Conv2d", in_channels=3, out_channels=4, kernal_size=3),
     "did you mean 'kernel_size'"),
    (dict(type="Conv2d", in_channels=3), "'out_channels', 'kernel_size'"),
    (dict(type="Linear", in_features=3, out_features=2, bias=True, colour=1),
     "has no option 'colour'"),
    (dict(type="MSELoss"), "is a loss"),
    (dict(type="Sequential"), "container"),
    (dict(type="MultiheadAttention", embed_dim=4, num_heads=2), "takes 3 inputs"),
    (dict(type="functional"), "not a module class"),
    (dict(type="_ConvNd"), "does not exist"),
    (dict(type="Linear", in_features=-3, out_features=2), "torch.nn.Linear(in_features=-3"),
])
def test_torch_nn_reports_bad_types_and_options(options, words):
    with pytest.raises(ConnectorConfigError) as info:
        build("torch_nn", **options)
    assert words in str(info.value)


def test_torch_nn_candidates_are_single_input_layers():
    names = modules.torch_nn_module_names()
    assert {"Conv2d", "Linear", "BatchNorm2d", "Upsample", "LazyConv2d"} <= set(names)
    assert not {"Module", "Sequential", "MSELoss", "CrossEntropyLoss"} & set(names)


# --------------------------------------------------------------------------------------------
# ofd_margin
# --------------------------------------------------------------------------------------------
def reference_margin(gamma: float, beta: float) -> float:
    """E[x | x < 0] for x ~ N(beta, gamma^2), with OFD's fallback below 0.1% negative mass."""
    s = abs(gamma)
    if s == 0.0:
        return min(beta, 0.0)
    z = beta / s
    negative_mass = 0.5 * (1.0 + math.erf(-z / math.sqrt(2.0)))
    if negative_mass <= 1e-3:
        return -3.0 * s
    density = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return beta - s * density / negative_mass


MARGIN_CASES = [
    (1.0, 0.0), (2.0, 0.0), (0.5, 0.3), (1.5, -0.7), (-1.0, 0.4), (-0.8, -1.2),
    (1.0, 3.0),            # negative mass 0.00135: still the formula
    (1.0, 3.2),            # negative mass 0.00069: the -3|gamma| fallback
    (-2.0, 7.0),           # fallback with a negative gamma
    (1.0, 50.0),           # far beyond the threshold
    (1.0, -50.0),          # almost all mass negative: margin ~ beta
    (1e-8, -1.0), (1e-8, 1.0),
    (1e3, 0.0), (1e3, -2e3),
    (0.0, -0.6), (0.0, 0.0), (0.0, 0.9),
]


def test_ofd_margin_matches_the_closed_form():
    gammas = [g for g, _ in MARGIN_CASES]
    betas = [b for _, b in MARGIN_CASES]
    conn = build("ofd_margin", bn=teacher_bn(gammas, betas, dtype=torch.float64))
    expected = torch.tensor([reference_margin(g, b) for g, b in MARGIN_CASES],
                            dtype=torch.float64)
    assert conn.margin.dtype == torch.float64
    assert torch.isfinite(conn.margin).all()
    torch.testing.assert_close(conn.margin, expected, rtol=1e-9, atol=1e-12)
    assert (conn.margin <= 0).all()
    assert conn.margin[MARGIN_CASES.index((1.0, 3.2))] == -3.0
    assert conn.margin[MARGIN_CASES.index((-2.0, 7.0))] == -6.0
    assert conn.margin[MARGIN_CASES.index((0.0, -0.6))] == -0.6


def test_ofd_margin_closed_form_is_the_conditional_mean():
    # numerical integration of x p(x) over x < 0: checks the formula itself, not just the code
    for gamma, beta in [(1.0, 0.0), (0.7, 0.9), (-1.3, -0.4), (2.0, 4.5)]:
        s = abs(gamma)
        xs = np.linspace(min(beta, 0.0) - 14 * s, 0.0, 400_001)
        pdf = np.exp(-0.5 * ((xs - beta) / s) ** 2)
        numeric = np.trapezoid(xs * pdf, xs) / np.trapezoid(pdf, xs)
        conn = build("ofd_margin", bn=teacher_bn([gamma], [beta], dtype=torch.float64))
        assert abs(conn.margin.item() - numeric) < 1e-6, (gamma, beta)


def test_ofd_margin_ignores_the_sign_of_gamma():
    betas = [-1.0, 0.0, 0.5, 2.0]
    pos = build("ofd_margin", bn=teacher_bn([0.3, 1.0, 1.7, 0.9], betas)).margin
    neg = build("ofd_margin", bn=teacher_bn([-0.3, -1.0, -1.7, -0.9], betas)).margin
    assert torch.equal(pos, neg)


def test_ofd_margin_output_is_max_with_the_channel_margin():
    torch.manual_seed(9)
    gammas, betas = [1.0, -0.5, 2.0], [0.2, -0.4, 5.0]
    conn = build("ofd_margin", bn=teacher_bn(gammas, betas))
    margins = [reference_margin(g, b) for g, b in zip(gammas, betas)]
    x = (2 * torch.randn(4, 3, 5, 5)).requires_grad_()
    out = conn(x)
    for c, m in enumerate(margins):
        expected = torch.clamp(x[:, c].detach(), min=m)
        torch.testing.assert_close(out[:, c].detach(), expected, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    above = (x.detach() > conn.margin.view(1, 3, 1, 1)).float()
    assert torch.equal(x.grad, above)
    flat = torch.randn(6, 3)
    assert torch.equal(conn(flat), torch.maximum(flat, conn.margin.view(1, 3)))


def test_ofd_margin_has_no_trainable_parameters():
    bn = teacher_bn([1.0, 2.0], [0.0, -1.0])
    conn = build("ofd_margin", bn=bn)
    assert list(conn.parameters()) == []
    assert set(conn.state_dict()) == {"margin"}
    assert conn.margin.requires_grad is False
    # the teacher's BN is read, not adopted as a submodule
    assert list(conn.modules()) == [conn]


def test_ofd_margin_recomputes_after_the_teacher_changes():
    bn = teacher_bn([1.0, 1.0], [0.0, 0.0])
    conn = build("ofd_margin", bn=bn)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -3.0]))
        bn.bias.copy_(torch.tensor([1.0, -2.0]))
    conn.recompute_margin()
    expected = torch.tensor([reference_margin(0.5, 1.0), reference_margin(-3.0, -2.0)])
    torch.testing.assert_close(conn.margin, expected, rtol=1e-6, atol=1e-7)


def test_ofd_margin_of_a_non_affine_batchnorm_is_the_standard_normal_one():
    conn = build("ofd_margin", bn=nn.BatchNorm2d(3, affine=False))
    torch.testing.assert_close(conn.margin, torch.full((3,), -math.sqrt(2 / math.pi)))


def test_ofd_margin_rejects_other_modules_and_wrong_channels():
    with pytest.raises(ConnectorConfigError, match="BatchNorm"):
        build("ofd_margin", bn=nn.Conv2d(3, 3, 1))
    with pytest.raises(ConnectorConfigError, match="BatchNorm"):
        build("ofd_margin", bn=nn.ReLU())
    conn = build("ofd_margin", bn=teacher_bn([1.0, 1.0], [0.0, 0.0]))
    with pytest.raises(ValueError, match="2 channels"):
        conn(torch.randn(2, 3, 4, 4))


# --------------------------------------------------------------------------------------------
# Factor Transfer
# --------------------------------------------------------------------------------------------
def test_translator_output_matches_the_paraphraser_factor():
    torch.manual_seed(10)
    para = build("paraphraser", in_channels=16, rate=0.25)
    assert para.factor_channels == 4
    trans = build("translator", in_channels=6, factor_channels=para.factor_channels)
    t_feat, s_feat = torch.randn(2, 16, 8, 8), torch.randn(2, 6, 8, 8)
    assert para(t_feat).shape == trans(s_feat).shape == (2, 4, 8, 8)
    assert para.reconstruct(t_feat).shape == t_feat.shape
    assert torch.equal(para(t_feat), para.encoder(t_feat))


def test_paraphraser_pretraining_reduces_the_reconstruction_error():
    torch.manual_seed(11)
    para = build("paraphraser", in_channels=8)
    # features of rank 3 per pixel, which the 4-channel factor can carry
    latent = torch.randn(8, 3, 6, 6)
    feats = torch.einsum("oc,nchw->nohw", torch.randn(8, 3), latent)
    opt = torch.optim.Adam(para.parameters(), lr=1e-2)
    first = para.reconstruction_loss(feats).item()
    for _ in range(100):
        opt.zero_grad()
        loss = para.reconstruction_loss(feats)
        loss.backward()
        opt.step()
    assert para.reconstruction_loss(feats).item() < 0.5 * first


def test_paraphraser_rejects_a_non_positive_rate():
    with pytest.raises(ValueError, match="'rate' of 'paraphraser' must be > 0"):
        build("paraphraser", in_channels=8, rate=0.0)


# --------------------------------------------------------------------------------------------
# mgd_generator
# --------------------------------------------------------------------------------------------
def test_mgd_default_mask_ratio_is_the_papers():
    assert BY_NAME["mgd_generator"].option("lambda_mgd").default == 0.65
    assert build("mgd_generator", student_channels=2, teacher_channels=2).lambda_mgd == 0.65


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.65, 0.9, 1.0])
def test_mgd_mask_ratio_is_respected_in_expectation(ratio):
    gen = build("mgd_generator", student_channels=3, teacher_channels=3, lambda_mgd=ratio)
    torch.manual_seed(12)
    mask = gen.keep_mask(torch.zeros(8, 3, 64, 64))
    assert mask.shape == (8, 1, 64, 64)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    masked = 1.0 - mask.mean().item()
    # 32768 Bernoulli draws: standard deviation <= 0.0028, so 0.015 is over 5 sigma
    assert abs(masked - ratio) < 0.015
    if ratio in (0.0, 1.0):
        assert masked == ratio


def test_mgd_forward_masks_whole_positions_before_generation():
    gen = build("mgd_generator", student_channels=4, teacher_channels=4, lambda_mgd=0.5)
    seen = {}
    gen.generation.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0].detach()))
    torch.manual_seed(13)
    x = torch.randn(4, 4, 32, 32) + 10.0  # never zero, so zeros can only come from the mask
    gen.train()
    gen(x)
    masked = seen["x"] == 0
    assert torch.equal(masked, masked[:, :1].expand_as(masked))  # same mask for every channel
    assert torch.equal(seen["x"][~masked], x[~masked])
    assert abs(masked[:, 0].float().mean().item() - 0.5) < 0.03


def test_mgd_forward_uses_torchs_rng_reproducibly():
    gen = build("mgd_generator", student_channels=4, teacher_channels=6)
    x = torch.randn(2, 4, 8, 8)
    torch.manual_seed(14)
    aligned = gen.align(x)
    expected = gen.generation(aligned * gen.keep_mask(aligned))
    torch.manual_seed(14)
    random.seed(1)
    np.random.seed(1)
    first = gen(x)
    torch.manual_seed(14)
    random.seed(2)
    np.random.seed(2)
    second = gen(x)
    assert torch.equal(first, expected)
    assert torch.equal(first, second)
    torch.manual_seed(15)
    assert not torch.equal(gen(x), first)


def test_mgd_eval_mode_uses_no_mask_and_no_randomness():
    gen = build("mgd_generator", student_channels=4, teacher_channels=6).eval()
    x = torch.randn(2, 4, 8, 8)
    state = torch.get_rng_state()
    out = gen(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(out, gen.generation(gen.align(x)))
    assert torch.equal(gen(x), out)


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_mgd_rejects_a_ratio_outside_the_unit_interval(ratio):
    with pytest.raises(ValueError, match=r"'lambda_mgd' of 'mgd_generator' must be in \[0, 1\]"):
        build("mgd_generator", student_channels=4, teacher_channels=4, lambda_mgd=ratio)


def test_crd_embed_is_unit_norm():
    torch.manual_seed(16)
    emb = build("crd_embed", in_features=5 * 2 * 2, feat_dim=7)
    out = emb(torch.randn(3, 5, 2, 2))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
