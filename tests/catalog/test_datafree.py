"""DAFL's data-free losses (dafl_onehot, dafl_activation, dafl_entropy): values and gradients in
float64 against the formulas written out here, their defining properties, shape rules, and the
catalog's declarations against the implementations."""

from __future__ import annotations

import math

import pytest
import torch

from kdsl.catalog.binding import instantiate
from kdsl.catalog.datafree_losses import COMPONENTS
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.shapes import TensorInfo, check_rules
from tests.catalog.reference import assert_implements, assert_imports_without_torch, seeded

F64 = torch.float64
ENTRIES = {c.name: c for c in COMPONENTS}


def build(name, **options):
    """Build a loss as the compiler does: options checked against the catalog, then constructed."""
    return instantiate(ENTRIES[name], **options)


def tensor(*shape, seed=0, scale=2.0):
    return seeded(*shape, seed=seed, scale=scale)


def gradient(loss, x):
    return torch.autograd.grad(loss, x)[0]


def softmax_rows(y):
    e = torch.exp(y - y.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


# ---- the catalog --------------------------------------------------------------------------------
@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_declaration_matches_the_class(component):
    assert_implements(component)
    assert REGISTRY.get("loss", component.name) is component
    assert "Chen et al" in component.paper and "L_" in component.doc


def test_declarations_do_not_import_torch():
    assert_imports_without_torch("kdsl.catalog.datafree_losses")


def test_option_constraints():
    with pytest.raises(ValueError, match="'base' of 'dafl_entropy' must be > 1"):
        build("dafl_entropy", base=1.0)
    with pytest.raises(ValueError, match="reduction"):
        build("dafl_activation", reduction="sum")


@pytest.mark.parametrize("name, infos, text", [
    ("dafl_onehot", {"preds_T": TensorInfo((4, 10, 3, 3))}, "'preds_T' must have 2 dimensions"),
    ("dafl_entropy", {"preds_T": TensorInfo((10,))}, "'preds_T' must have 2 dimensions"),
    ("dafl_activation", {"feat_T": TensorInfo((64,))}, "'feat_T' must have 2 or 3 or 4 or 5 dimensions"),
])
def test_shape_rules_catch_misuse(name, infos, text):
    problems = check_rules(ENTRIES[name].rules, infos)
    assert len(problems) == 1 and text in problems[0]


@pytest.mark.parametrize("name, infos", [
    ("dafl_onehot", {"preds_T": TensorInfo((4, 10))}),
    ("dafl_entropy", {"preds_T": TensorInfo((4, 10))}),
    ("dafl_activation", {"feat_T": TensorInfo((4, 64))}),
    ("dafl_activation", {"feat_T": TensorInfo((4, 16, 2, 2))}),
])
def test_shape_rules_accept_proper_use(name, infos):
    assert check_rules(ENTRIES[name].rules, infos) == []


# ---- dafl_onehot ------------------------------------------------------------------------------
def test_onehot_value_and_gradient():
    y = tensor(6, 10, seed=1)
    loss = build("dafl_onehot")(y)
    t = y.detach().argmax(1)
    # mean_i ( log sum_c exp(y_ic) - y_i,t_i )
    ref = (torch.log(torch.exp(y.detach()).sum(1)) - y.detach()[torch.arange(6), t]).mean()
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-12, atol=1e-14)
    # d/dy_ic = (softmax(y_i)_c - [c = t_i]) / N: the pseudo-label itself carries no gradient
    expected = (softmax_rows(y.detach()) - torch.nn.functional.one_hot(t, 10).to(F64)) / 6
    torch.testing.assert_close(gradient(loss, y), expected, rtol=1e-10, atol=1e-12)


def test_onehot_is_small_for_confident_and_large_for_flat_logits():
    confident = torch.eye(5, dtype=F64) * 50
    flat = torch.zeros(5, 5, dtype=F64)
    assert build("dafl_onehot")(confident).item() < 1e-15
    torch.testing.assert_close(build("dafl_onehot")(flat), torch.tensor(math.log(5), dtype=F64))


# ---- dafl_activation --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 12), (3, 8, 2, 2), (2, 4, 3)])
def test_activation_mean_value_and_gradient(shape):
    f = tensor(*shape, seed=2)
    loss = build("dafl_activation")(f)
    count = f.numel()
    # -(1 / (N D)) sum |f|  (DAFL's code: -features.abs().mean())
    torch.testing.assert_close(loss.detach(), -f.detach().abs().sum() / count, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gradient(loss, f), -torch.sign(f.detach()) / count, rtol=1e-12, atol=1e-15)


def test_activation_batchmean_is_the_papers_formula():
    f = tensor(5, 4, 3, 3, seed=3)
    loss = build("dafl_activation", reduction="batchmean")(f)
    # -(1 / N) sum_i ||f_i||_1
    l1_norms = torch.stack([f.detach()[i].abs().sum() for i in range(5)])
    torch.testing.assert_close(loss.detach(), -l1_norms.mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gradient(loss, f), -torch.sign(f.detach()) / 5, rtol=1e-12, atol=1e-15)
    # D times the default reduction
    mean = build("dafl_activation")(f.detach())
    torch.testing.assert_close(loss.detach(), mean * 36, rtol=1e-12, atol=1e-14)


# ---- dafl_entropy -----------------------------------------------------------------------------
def entropy_formula(y, base):
    """sum_c p_c log_b p_c with p the batch mean of the softmax, and its gradient written out:
    d/dy_ik = (1/N) s_ik (g_k - sum_c s_ic g_c), g_c = (ln p_c + 1) / ln b."""
    s = softmax_rows(y)
    p = s.mean(0)
    value = (p * torch.log(p)).sum() / math.log(base)
    g = (torch.log(p) + 1) / math.log(base)
    grad = s * (g - (s * g).sum(1, keepdim=True)) / y.shape[0]
    return value, grad


@pytest.mark.parametrize("base", [10.0, math.e, 2.0])
@pytest.mark.parametrize("shape", [(8, 10), (3, 4), (1, 6)])
def test_entropy_value_and_gradient(base, shape):
    y = tensor(*shape, seed=4, scale=3.0)
    loss = build("dafl_entropy", base=base)(y)
    value, grad = entropy_formula(y.detach(), base)
    torch.testing.assert_close(loss.detach(), value, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gradient(loss, y), grad, rtol=1e-10, atol=1e-13)


def test_entropy_default_base_is_dafls_log10():
    y = tensor(8, 10, seed=5)
    p = torch.softmax(y.detach(), 1).mean(0)
    # DAFL's code: (softmax(outputs_T).mean(0) * log10(...)).sum()
    torch.testing.assert_close(build("dafl_entropy")(y).detach(), (p * torch.log10(p)).sum(),
                               rtol=1e-12, atol=1e-14)
    nats = build("dafl_entropy", base=math.e)(y).detach()
    torch.testing.assert_close(nats, build("dafl_entropy")(y).detach() * math.log(10), rtol=1e-12, atol=1e-14)


def test_entropy_is_lowest_for_a_balanced_batch():
    # every sample confidently a different class: p uniform, loss = -log_b C, its minimum
    balanced = torch.eye(10, dtype=F64) * 40
    torch.testing.assert_close(build("dafl_entropy")(balanced), torch.tensor(-1.0, dtype=F64),
                               rtol=0, atol=1e-12)
    # every sample confidently the same class: p one-hot, loss 0, its maximum
    collapsed = torch.zeros(10, 10, dtype=F64)
    collapsed[:, 3] = 40
    assert abs(build("dafl_entropy")(collapsed).item()) < 1e-12
    partial = tensor(10, 10, seed=6).detach()
    assert -1.0 < build("dafl_entropy")(partial).item() < 0.0


def test_entropy_is_finite_when_a_class_is_never_predicted():
    y = tensor(4, 5, seed=7)
    y_far = y.detach().clone()
    y_far[:, 2] = -1e4  # softmax of class 2 underflows to exactly 0 in every sample
    y_far.requires_grad_()
    loss = build("dafl_entropy")(y_far)
    assert torch.isfinite(loss)
    g = gradient(loss, y_far)
    assert torch.isfinite(g).all()
    # the class that is absent contributes 0 (p log p -> 0): same value as without it
    rest = y.detach()[:, [0, 1, 3, 4]]
    torch.testing.assert_close(loss.detach(), entropy_formula(rest, 10.0)[0], rtol=1e-12, atol=1e-14)


# ---- all three ----------------------------------------------------------------------------------
def test_gradients_pass_through_a_frozen_teacher_to_its_input():
    """The losses do not detach the teacher: a generator upstream of it receives gradients."""
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4).double().requires_grad_(False)
    images = tensor(5, 6, seed=8)
    logits = teacher(images)
    for loss in (build("dafl_onehot")(logits), build("dafl_entropy")(logits),
                 build("dafl_activation")(logits)):
        g = torch.autograd.grad(loss, images, retain_graph=True)[0]
        assert g.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name, shape", [("dafl_onehot", (4, 10)), ("dafl_entropy", (4, 10)),
                                         ("dafl_activation", (4, 8, 2, 2))])
def test_half_precision_inputs_compute_in_float32(name, shape):
    x = torch.randn(*shape).half()
    out = build(name)(x)
    assert out.dtype == torch.float32 and out.dim() == 0 and torch.isfinite(out)
    torch.testing.assert_close(out, build(name)(x.float()), rtol=1e-6, atol=1e-6)
