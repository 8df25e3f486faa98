"""Tensor functions (detach, argmax, softmax, log_softmax, flatten, noise): values and gradients in
float64 against formulas written out here, the catalog's declarations against the classes, and
``@kdsl.register_function``."""

from __future__ import annotations

import math
from typing import Annotated

import pytest
import torch

import kdsl
from kdsl.catalog.binding import instantiate
from kdsl.catalog.functions import COMPONENTS
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import POSITIVE, at_least
from kdsl.components.functions import FunctionContext
from tests.catalog.reference import assert_imports_without_torch, seeded

F64 = torch.float64
ENTRIES = {c.name: c for c in COMPONENTS}


def build(name, **options):
    """Build a function as the compiler does: options checked against the catalog, then constructed."""
    return instantiate(ENTRIES[name], **options)


def tensor(*shape, seed=0, scale=2.0):
    return seeded(*shape, seed=seed, scale=scale)


def grad_of(value, wrt, weights):
    """d/d wrt of sum(weights * value): a fixed, non-uniform upstream gradient."""
    return torch.autograd.grad((value * weights).sum(), wrt)[0]


# ---- the catalog --------------------------------------------------------------------------------
def test_catalog_names_and_kind():
    assert set(ENTRIES) == {"detach", "argmax", "softmax", "log_softmax", "flatten", "noise"}
    assert set(REGISTRY.names("function")) >= set(ENTRIES)
    for component in COMPONENTS:
        assert component.kind == "function"
        assert REGISTRY.get("function", component.name) is component
        assert component.summary and "\n" not in component.summary and component.doc


def test_declarations_do_not_import_torch():
    assert_imports_without_torch("kdsl.catalog.functions")


@pytest.mark.parametrize("name, options, text", [
    ("softmax", {"tau": 0.0}, "'tau' of 'softmax' must be > 0"),
    ("log_softmax", {"tau": -2.0}, "'tau' of 'log_softmax' must be > 0"),
    ("noise", {"dim": 0}, "'dim' of 'noise' must be >= 1"),
    ("noise", {"dim": 8, "batch_size": 0}, "'batch_size' of 'noise' must be >= 1"),
])
def test_option_constraints(name, options, text):
    with pytest.raises(ValueError, match=text):
        build(name, **options)


# ---- detach -------------------------------------------------------------------------------------
def test_detach_keeps_the_value_and_stops_the_gradient():
    x = tensor(4, 5)
    y = build("detach")(x)
    assert torch.equal(y, x) and not y.requires_grad
    # x * 3 + detach(x) ** 2: only the first term reaches x
    g = torch.autograd.grad((x * 3 + y ** 2).sum(), x)[0]
    assert torch.equal(g, torch.full_like(x, 3.0))


# ---- argmax -------------------------------------------------------------------------------------
def argmax_formula(x, dim):
    """Indices of the maxima, found by comparing every entry with the maximum along dim."""
    moved = x.detach().movedim(dim, -1)
    best = moved.max(-1, keepdim=True).values
    positions = torch.arange(moved.shape[-1]).expand_as(moved)
    first = torch.where(moved == best, positions, moved.shape[-1]).min(-1).values
    return first


@pytest.mark.parametrize("shape, dim", [((6, 10), 1), ((6, 10), 0), ((3, 4, 5), -1), ((3, 4, 5), 1)])
def test_argmax_value_and_dtype(shape, dim):
    x = tensor(*shape, seed=3)
    out = build("argmax", dim=dim)(x)
    assert out.dtype == torch.int64 and not out.requires_grad
    assert torch.equal(out, argmax_formula(x, dim))


def test_argmax_default_dim_is_the_class_dimension():
    x = torch.tensor([[0.0, 3.0, 1.0], [5.0, -1.0, 2.0]], dtype=F64)
    assert build("argmax")(x).tolist() == [1, 0]


# ---- softmax / log_softmax ----------------------------------------------------------------------
def softmax_formula(x, dim, tau):
    e = torch.exp(x / tau)
    return e / e.sum(dim, keepdim=True)


@pytest.mark.parametrize("dim", [1, 0, -1])
@pytest.mark.parametrize("tau", [1.0, 0.5, 4.0])
def test_softmax_value_and_gradient(dim, tau):
    x, w = tensor(5, 7, seed=1), tensor(5, 7, seed=2).detach()
    p = build("softmax", dim=dim, tau=tau)(x)
    ref = softmax_formula(x, dim, tau)
    torch.testing.assert_close(p, ref, rtol=1e-12, atol=1e-14)
    # d/dx sum(w * p) = p * (w - sum_dim(p * w)) / tau
    expected = ref * (w - (ref * w).sum(dim, keepdim=True)) / tau
    torch.testing.assert_close(grad_of(p, x, w), expected.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dim", [1, -1])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_log_softmax_value_and_gradient(dim, tau):
    x, w = tensor(5, 7, seed=4, scale=10.0), tensor(5, 7, seed=5).detach()
    out = build("log_softmax", dim=dim, tau=tau)(x)
    ref = x / tau - torch.log(torch.exp(x / tau).sum(dim, keepdim=True))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    # d/dx sum(w * log p) = (w - p * sum_dim(w)) / tau
    p = softmax_formula(x, dim, tau).detach()
    expected = (w - p * w.sum(dim, keepdim=True)) / tau
    torch.testing.assert_close(grad_of(out, x, w), expected, rtol=1e-10, atol=1e-12)


def test_log_softmax_is_stable_for_large_logits():
    x = torch.tensor([[1000.0, 0.0, -1000.0]], dtype=F64)
    out = build("log_softmax")(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[0.0, -1000.0, -2000.0]], dtype=F64))


# ---- flatten ------------------------------------------------------------------------------------
@pytest.mark.parametrize("start_dim, shape", [(1, (2, 60)), (2, (2, 3, 20)), (0, (120,))])
def test_flatten_value_and_gradient(start_dim, shape):
    x = tensor(2, 3, 4, 5, seed=6)
    out = build("flatten", start_dim=start_dim)(x)
    assert out.shape == shape
    # row-major order: element (n, c, h, w) of x is at n, then c * 20 + h * 5 + w for start_dim 1
    if start_dim == 1:
        for n, c, h, w in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3)]:
            assert out[n, c * 20 + h * 5 + w] == x[n, c, h, w]
    w = tensor(*shape, seed=7).detach()
    torch.testing.assert_close(grad_of(out, x, w), w.reshape(2, 3, 4, 5), rtol=0, atol=0)


# ---- noise --------------------------------------------------------------------------------------
def context(batch_size=8, device="cpu", dtype=torch.float32):
    return FunctionContext(batch_size=batch_size, device=torch.device(device), dtype=dtype)


def test_noise_shape_dtype_device():
    out = build("noise", dim=100)(context(batch_size=16, dtype=F64))
    assert out.shape == (16, 100) and out.dtype == F64 and out.device.type == "cpu"
    assert not out.requires_grad
    own_rows = build("noise", dim=3, batch_size=5)(context(batch_size=16))
    assert own_rows.shape == (5, 3) and own_rows.dtype == torch.float32
    meta = build("noise", dim=4)(context(batch_size=2, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (2, 4)


def test_noise_follows_torchs_seed():
    noise = build("noise", dim=10)
    torch.manual_seed(1234)
    first, second = noise(context(batch_size=6, dtype=F64)), noise(context(batch_size=6, dtype=F64))
    torch.manual_seed(1234)
    expected = torch.randn(6, 10, dtype=F64)
    assert torch.equal(first, expected)
    assert not torch.equal(first, second)  # a fresh draw each time the step evaluates it
    torch.manual_seed(1234)
    assert torch.equal(noise(context(batch_size=6, dtype=F64)), first)


def test_noise_is_standard_normal():
    torch.manual_seed(0)
    sample = build("noise", dim=200)(context(batch_size=500, dtype=F64))
    # 100k draws: the mean is within 5 standard errors of 0 and the variance near 1
    assert abs(sample.mean().item()) < 5 / math.sqrt(sample.numel())
    assert abs(sample.var().item() - 1.0) < 0.02


# ---- @kdsl.register_function --------------------------------------------------------------------
def test_register_function_reads_the_signature():
    @kdsl.register_function("plugin_test_clamp", constraints={"bound": POSITIVE})
    class ClampTo(torch.nn.Module):
        """Clamp to [-bound, bound]."""

        def __init__(self, bound: float = 1.0, passes: Annotated[int, at_least(1)] = 1):
            super().__init__()
            self.bound = bound

        def forward(self, x, scale=None):
            y = x.clamp(-self.bound, self.bound)
            return y if scale is None else y * scale

    try:
        c = REGISTRY.get("function", "plugin_test_clamp")
        assert c.kind == "function" and c.impl is ClampTo and c.origin == __name__
        assert c.summary == "Clamp to [-bound, bound]."
        assert [(p.name, p.type.name, p.required) for p in c.inputs] == [("x", "tensor", True),
                                                                         ("scale", "tensor", False)]
        assert [(p.name, p.type.name, p.default) for p in c.options] == [("bound", "float", 1.0),
                                                                         ("passes", "int", 1)]
        assert c.option("bound").constraint == POSITIVE and c.option("passes").constraint == at_least(1)
        with pytest.raises(ValueError, match="'bound' of 'plugin_test_clamp' must be > 0"):
            instantiate(c, bound=-1.0)
        clamp = instantiate(c, bound=0.5)
        assert clamp(torch.tensor([-2.0, 0.25, 3.0])).tolist() == [-0.5, 0.25, 0.5]
        with pytest.raises(ValueError, match="already registered"):
            kdsl.register_function("plugin_test_clamp")(ClampTo)
        # a function cannot shadow a built-in by accident either
        with pytest.raises(ValueError, match="already registered"):
            kdsl.register_function("detach")(ClampTo)
    finally:
        REGISTRY.remove("function", "plugin_test_clamp")
    assert REGISTRY.get("function", "plugin_test_clamp") is None


def test_register_function_with_context():
    @kdsl.register_function("plugin_test_uniform")
    class Uniform(torch.nn.Module):
        """Uniform noise in [0, 1), one row per sample."""

        needs_context = True

        def __init__(self, dim: int):
            super().__init__()
            self.dim = dim

        def forward(self, context, shift=None):
            return torch.rand(context.batch_size, self.dim, dtype=context.dtype, device=context.device)

    try:
        c = REGISTRY.get("function", "plugin_test_uniform")
        # the step's context is not an input of the spec
        assert [p.name for p in c.inputs] == ["shift"]
        assert [(p.name, p.required) for p in c.options] == [("dim", True)]
        out = instantiate(c, dim=3)(context(batch_size=4, dtype=F64))
        assert out.shape == (4, 3) and out.dtype == F64
    finally:
        REGISTRY.remove("function", "plugin_test_uniform")


def test_register_function_is_public():
    assert "register_function" in kdsl.__all__
    from kdsl.catalog.registry import register_function

    assert kdsl.register_function is register_function
