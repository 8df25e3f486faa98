"""Logit losses: each against its formula written out here, its invariances, MMRazor's reference
vectors, and the catalog's declarations against the implementations."""

from __future__ import annotations

import math

import pytest
import torch

from kdsl.catalog.binding import instantiate
from kdsl.catalog.logit_losses import COMPONENTS
from kdsl.catalog.shapes import TensorInfo, check_rules
from tests.catalog.reference import (assert_implements, assert_imports_without_torch,
                                     reference_cases, to_tensor)

F64 = torch.float64
ENTRIES = {c.name: c for c in COMPONENTS}


def build(name, **options):
    """Build a loss as the compiler does: options checked against the catalog, then constructed."""
    return instantiate(ENTRIES[name], **options)


def logits(*shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).requires_grad_()


def labels(n, classes, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def assert_same(loss_a, loss_b, wrt, rtol=1e-10, atol=1e-12):
    """Equal values and equal gradients with respect to every tensor of ``wrt``."""
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=atol)
    ga = torch.autograd.grad(loss_a.sum(), wrt, retain_graph=True)
    gb = torch.autograd.grad(loss_b.sum(), wrt, retain_graph=True)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ---- formulas, written out with plain operations -------------------------------------------
def class_last(x):
    return x.movedim(1, -1)


def softmax(z):
    e = torch.exp(z)
    return e / e.sum(-1, keepdim=True)


def log_softmax(z):
    return z - torch.log(torch.exp(z).sum(-1, keepdim=True))


def reduce(terms, reduction, n):
    return {"none": terms, "sum": terms.sum(), "mean": terms.mean(),
            "batchmean": terms.sum() / n}[reduction]


def kd_formula(s, t, tau, reduction):
    """tau^2 * sum p_T (log p_T - log p_S), class dimension 1, reduced."""
    p_t = softmax(class_last(t) / tau)
    terms = p_t * (torch.log(p_t) - log_softmax(class_last(s) / tau)) * tau ** 2
    return reduce(terms.movedim(-1, 1), reduction, s.shape[0])


def entropy_terms(t, tau):
    p_t = softmax(class_last(t) / tau)
    return -(p_t * torch.log(p_t)).sum(-1)


# ---- kl_div ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7), (2, 5, 3, 3)])
@pytest.mark.parametrize("tau", [1.0, 2.5, 4.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_kl_div_formula(shape, tau, reduction):
    s, t = logits(*shape, seed=1), logits(*shape, seed=2)
    loss = build("kl_div", tau=tau, reduction=reduction, detach_teacher=False)(s, t)
    assert loss.shape == (shape if reduction == "none" else ())
    assert_same(loss, kd_formula(s, t, tau, reduction), (s, t))


def test_kl_div_detaches_the_teacher_by_default():
    s, t = logits(4, 6, seed=1), logits(4, 6, seed=2)
    loss = build("kl_div", tau=2.0)(s, t)
    grad_s, grad_t = torch.autograd.grad(loss, (s, t), allow_unused=True)
    assert grad_t is None
    torch.testing.assert_close(grad_s, torch.autograd.grad(kd_formula(s, t, 2.0, "batchmean"),
                                                           s)[0])


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_kl_div_is_zero_for_equal_logits(reduction):
    s = logits(3, 5, 4, 4, seed=3)
    loss = build("kl_div", tau=3.0, reduction=reduction)(s, s.detach().clone())
    torch.testing.assert_close(loss, torch.zeros_like(loss), rtol=0, atol=1e-13)
    (grad,) = torch.autograd.grad(loss.sum(), s)
    torch.testing.assert_close(grad, torch.zeros_like(grad), rtol=0, atol=1e-13)


def test_kl_div_ignores_a_shift_of_each_logit_vector():
    s, t = logits(6, 9, seed=4), logits(6, 9, seed=5)
    shift = torch.randn(6, 1, dtype=F64) * 10
    loss = build("kl_div", tau=2.0)
    torch.testing.assert_close(loss(s + shift, t - 3 * shift), loss(s, t), rtol=1e-11, atol=0)


def test_kl_div_survives_a_teacher_probability_that_underflows():
    t = torch.tensor([[800.0, 0.0, -800.0]], dtype=F64, requires_grad=True)
    s = logits(1, 3, seed=6)
    loss = build("kl_div", detach_teacher=False)(s, t)
    grads = torch.autograd.grad(loss, (s, t))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


# ---- soft_cross_entropy ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7), (2, 5, 3, 3)])
@pytest.mark.parametrize("tau", [1.0, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_soft_cross_entropy_formula(shape, tau, reduction):
    s, t = logits(*shape, seed=7), logits(*shape, seed=8)
    loss = build("soft_cross_entropy", tau=tau, reduction=reduction, detach_teacher=False)(s, t)
    terms = -(softmax(class_last(t) / tau) * log_softmax(class_last(s) / tau)).sum(-1) * tau ** 2
    expected = {"none": terms, "sum": terms.sum(), "mean": terms.mean()}[reduction]
    assert_same(loss, expected, (s, t))


def test_soft_cross_entropy_is_kl_div_plus_the_teacher_entropy():
    s, t = logits(3, 4, 2, 2, seed=9), logits(3, 4, 2, 2, seed=10)
    tau = 2.0
    ce = build("soft_cross_entropy", tau=tau, reduction="sum")(s, t)
    kl = build("kl_div", tau=tau, reduction="sum")(s, t)
    torch.testing.assert_close(ce - kl, tau ** 2 * entropy_terms(t, tau).sum())
    (grad_ce,), (grad_kl,) = torch.autograd.grad(ce, s), torch.autograd.grad(kl, s)
    torch.testing.assert_close(grad_ce, grad_kl)


# ---- cross_entropy --------------------------------------------------------------------------
def cross_entropy_formula(s, y, smoothing, ignore, reduction):
    z = class_last(s).reshape(-1, s.shape[1])
    y = y.reshape(-1)
    per, counted = [], 0
    for row, label in zip(z, y):
        if label == ignore:
            per.append(row.sum() * 0)
            continue
        counted += 1
        logp = log_softmax(row)
        per.append(-(1 - smoothing) * logp[label] - smoothing * logp.mean())
    per = torch.stack(per)
    if reduction == "none":
        return per.reshape((s.shape[0],) + tuple(s.shape[2:]))
    return per.sum() if reduction == "sum" else per.sum() / counted


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_formula(dense, smoothing, reduction):
    shape = (3, 5, 2, 3) if dense else (8, 5)
    s = logits(*shape, seed=11)
    y = torch.randint(0, 5, (shape[0],) + shape[2:], generator=torch.Generator().manual_seed(1))
    y.view(-1)[::3] = 7  # some positions ignored
    loss = build("cross_entropy", label_smoothing=smoothing, ignore_index=7,
                 reduction=reduction)(s, y)
    assert_same(loss, cross_entropy_formula(s, y, smoothing, 7, reduction), (s,))


# ---- dkd ------------------------------------------------------------------------------------
def dkd_formula(s, t, y, alpha, beta, tau):
    tckd, nckd = [], []
    for zs, zt, label in zip(s / tau, t / tau, y):
        others = [c for c in range(s.shape[1]) if c != label]
        p_s, p_t = softmax(zs), softmax(zt)
        b_s = torch.stack([p_s[label], p_s[others].sum()])
        b_t = torch.stack([p_t[label], p_t[others].sum()])
        tckd.append((b_t * torch.log(b_t / b_s)).sum())
        q_s, q_t = softmax(zs[others]), softmax(zt[others])
        nckd.append((q_t * torch.log(q_t / q_s)).sum())
    return tau ** 2 * (alpha * torch.stack(tckd).mean() + beta * torch.stack(nckd).mean())


@pytest.mark.parametrize("alpha,beta,tau", [(1.0, 1.0, 1.0), (1.0, 8.0, 4.0), (0.5, 2.0, 2.0)])
def test_dkd_formula(alpha, beta, tau):
    s, t, y = logits(7, 6, seed=12), logits(7, 6, seed=13), labels(7, 6, seed=2)
    loss = build("dkd", alpha=alpha, beta=beta, tau=tau, detach_teacher=False)(s, t, y)
    assert_same(loss, dkd_formula(s, t, y, alpha, beta, tau), (s, t))


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_dkd_recombines_into_kd(tau):
    # The paper's decomposition: KD = TCKD + (1 - p^T_target) * NCKD, for one sample.
    s, t, y = logits(1, 5, seed=14), logits(1, 5, seed=15), labels(1, 5, seed=3)
    p_target = torch.softmax(t.detach() / tau, dim=1)[0, y[0]].item()
    dkd = build("dkd", alpha=1.0, beta=1.0 - p_target, tau=tau)(s, t, y)
    assert_same(dkd, build("kl_div", tau=tau)(s, t), (s,))


def test_dkd_is_finite_for_a_certain_teacher():
    s, y = logits(2, 4, seed=16), torch.tensor([1, 3])
    t = torch.tensor([[0.0, 900.0, 0.0, 0.0], [0.0, 0.0, 0.0, 900.0]], dtype=F64,
                     requires_grad=True)
    loss = build("dkd", detach_teacher=False)(s, t, y)
    grads = torch.autograd.grad(loss, (s, t))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


# ---- dist -----------------------------------------------------------------------------------
def pearson(a, b):
    """Pearson's correlation with the authors' 1e-8 added to the denominator."""
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / (torch.sqrt((a * a).sum() * (b * b).sum()) + 1e-8)


def dist_formula(s, t, tau, inter_weight, intra_weight):
    y_s, y_t = softmax(s / tau), softmax(t / tau)
    inter = 1 - torch.stack([pearson(y_s[i], y_t[i]) for i in range(s.shape[0])]).mean()
    intra = 1 - torch.stack([pearson(y_s[:, c], y_t[:, c]) for c in range(s.shape[1])]).mean()
    return tau ** 2 * (inter_weight * inter + intra_weight * intra)


@pytest.mark.parametrize("tau", [1.0, 4.0])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 2.0), (0.5, 0.0)])
def test_dist_formula(tau, weights):
    s, t = logits(8, 7, seed=17), logits(8, 7, seed=18)
    loss = build("dist", tau=tau, inter_weight=weights[0], intra_weight=weights[1],
                 detach_teacher=False)(s, t)
    assert_same(loss, dist_formula(s, t, tau, *weights), (s, t))


def teacher_with_probabilities(probabilities, tau):
    # softmax(tau * log(y) / tau) = y for any y summing to 1.
    return tau * torch.log(probabilities)


# The authors' 1e-8 in the denominator of rho keeps these from being exactly 0: for unit-scale
# logits it contributes about 1e-8 / (||y_s - mean|| * ||y_t - mean||) < 1e-6 per correlation.
AFFINE_ATOL = 1e-5


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_dist_is_zero_for_a_positive_affine_map_of_the_probabilities(tau):
    s = logits(6, 5, seed=19).detach()
    y_s = torch.softmax(s / tau, dim=1)
    # a * y + (1 - a) / C is affine in every row and every column and still sums to 1.
    t = teacher_with_probabilities(0.3 * y_s + 0.7 / 5, tau)
    loss = build("dist", tau=tau, inter_weight=1.0, intra_weight=1.0)
    assert 0 <= loss(s, t) < AFFINE_ATOL
    assert loss(s, logits(6, 5, seed=32).detach()) > 0.1


def test_dist_inter_term_ignores_an_affine_map_per_sample():
    tau = 1.0
    s = logits(6, 5, seed=20).detach()
    y_s = torch.softmax(s / tau, dim=1)
    a = torch.linspace(0.3, 0.9, 6, dtype=F64)[:, None]
    t = teacher_with_probabilities(a * y_s + (1 - a) / 5, tau)
    assert 0 <= build("dist", tau=tau, inter_weight=1.0, intra_weight=0.0)(s, t) < AFFINE_ATOL
    # The columns are not affine images of each other, so the intra-class term still sees it.
    assert build("dist", tau=tau, inter_weight=0.0, intra_weight=1.0)(s, t) > 1e-3


# ---- wsld -----------------------------------------------------------------------------------
def wsld_formula(s, t, y, tau):
    terms = []
    for zs, zt, label in zip(s, t, y):
        ce_s = -log_softmax(zs.detach())[label]
        ce_t = -log_softmax(zt.detach())[label]
        weight = 1 - torch.exp(-ce_s / (ce_t + 1e-7))
        terms.append(weight * -(softmax(zt / tau) * log_softmax(zs / tau)).sum())
    return tau ** 2 * torch.stack(terms).mean()


@pytest.mark.parametrize("tau", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("classes", [3, 11])
def test_wsld_formula(tau, classes):
    s, t, y = logits(6, classes, seed=21), logits(6, classes, seed=22), labels(6, classes, 4)
    loss = build("wsld", tau=tau, detach_teacher=False)(s, t, y)
    assert_same(loss, wsld_formula(s, t, y, tau), (s, t))


def test_wsld_weighs_samples_the_student_gets_wrong_more():
    t, y = torch.tensor([[1.0, 0.0, 0.0]], dtype=F64), torch.tensor([0])
    right = torch.tensor([[2.0, 0.0, 0.0]], dtype=F64)
    wrong = torch.tensor([[0.0, 1.0, 0.0]], dtype=F64)
    loss = build("wsld", tau=1.0)
    weights = [loss(x, t, y) / -(torch.softmax(t, 1) * torch.log_softmax(x, 1)).sum()
               for x in (right, wrong)]
    assert 0 < weights[0] < weights[1] < 1


# ---- logit_std_kd ---------------------------------------------------------------------------
def zscore(x):
    x = class_last(x)
    centered = x - x.mean(-1, keepdim=True)
    return (centered / torch.sqrt((centered ** 2).mean(-1, keepdim=True))).movedim(-1, 1)


@pytest.mark.parametrize("shape", [(5, 7), (2, 6, 2, 3)])
@pytest.mark.parametrize("tau", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
def test_logit_std_kd_formula(shape, tau, reduction):
    s, t = logits(*shape, seed=23), logits(*shape, seed=24, scale=6.0)
    loss = build("logit_std_kd", tau=tau, reduction=reduction, detach_teacher=False)(s, t)
    assert_same(loss, kd_formula(zscore(s), zscore(t), tau, reduction), (s, t))


def test_logit_std_kd_ignores_shifting_and_scaling_each_row():
    s, t = logits(6, 10, seed=25).detach(), logits(6, 10, seed=26).detach()
    g = torch.Generator().manual_seed(5)
    scale = lambda: torch.rand(6, 1, generator=g, dtype=F64) * 20 + 0.05  # noqa: E731
    shift = lambda: torch.randn(6, 1, generator=g, dtype=F64) * 50  # noqa: E731
    loss = build("logit_std_kd", tau=2.0)
    torch.testing.assert_close(loss(scale() * s + shift(), scale() * t + shift()), loss(s, t),
                               rtol=1e-10, atol=0)


def test_logit_std_kd_relation_to_the_authors_code():
    # The authors divide by the unbiased std plus 1e-7 (documented on the catalog entry).
    c, temperature = 10, 2.0
    s, t = logits(6, c, seed=27).detach(), logits(6, c, seed=28).detach()

    def authors(x):
        return (x - x.mean(1, keepdim=True)) / (1e-7 + x.std(1, keepdim=True))

    theirs = kd_formula(authors(s), authors(t), temperature, "batchmean")
    ours = build("logit_std_kd", tau=temperature * math.sqrt(c / (c - 1)))(s, t)
    torch.testing.assert_close(theirs, (c - 1) / c * ours, rtol=1e-6, atol=0)


def test_logit_std_kd_is_finite_for_a_constant_row():
    s = torch.zeros(2, 5, dtype=F64, requires_grad=True)
    t = logits(2, 5, seed=29)
    loss = build("logit_std_kd", detach_teacher=False)(s, t)
    grads = torch.autograd.grad(loss, (s, t))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


# ---- every loss in low precision ------------------------------------------------------------
CALLS = {
    "kl_div": lambda s, t, y: (s, t),
    "soft_cross_entropy": lambda s, t, y: (s, t),
    "cross_entropy": lambda s, t, y: (s, y),
    "kd": lambda s, t, y: (s, t, y),
    "dkd": lambda s, t, y: (s, t, y),
    "dist": lambda s, t, y: (s, t),
    "wsld": lambda s, t, y: (s, t, y),
    "logit_std_kd": lambda s, t, y: (s, t),
}


def test_every_entry_is_exercised_in_low_precision():
    assert set(CALLS) == set(ENTRIES)


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(name, dtype):
    s, t = logits(8, 10, seed=30).detach(), logits(8, 10, seed=31).detach()
    y = labels(8, 10, seed=6)
    s_low = s.to(dtype).requires_grad_()
    loss = build(name)(*CALLS[name](s_low, t.to(dtype), y))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, s_low)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()
    # Against float64 on the same (rounded) inputs: only the arithmetic differs.
    exact = build(name)(*CALLS[name](s_low.detach().double(), t.to(dtype).double(), y))
    torch.testing.assert_close(loss.double(), exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_autocast_does_not_lower_the_precision(name):
    s, t = logits(8, 10, seed=30).detach().float(), logits(8, 10, seed=31).detach().float()
    inputs = CALLS[name](s, t, labels(8, 10, seed=6))
    exact = build(name)(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = build(name)(*inputs)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, exact, rtol=1e-6, atol=1e-7)


# ---- options are checked when a loss is built -----------------------------------------------
@pytest.mark.parametrize("name,options", [
    ("kl_div", {"tau": 0.0}), ("kl_div", {"reduction": "avg"}),
    ("soft_cross_entropy", {"reduction": "batchmean"}), ("cross_entropy", {"label_smoothing": 2}),
    ("dkd", {"tau": -1.0}), ("dist", {"tau": 0}), ("wsld", {"tau": 0.0}),
    ("logit_std_kd", {"reduction": "max"}),
])
def test_bad_options_are_refused(name, options):
    with pytest.raises(ValueError, match=next(iter(options))):
        build(name, **options)


# ---- MMRazor's reference vectors ------------------------------------------------------------
def reference_check(case, name, options, inputs, grads, scale=1.0):
    """Our loss (times ``scale``) against a reference case. ``inputs`` maps our input names to
    the case's, ``grads`` lists the case's gradients that must match."""
    tensors = {ours: to_tensor(case["inputs"][theirs]) for ours, theirs in inputs.items()}
    floats = {k: v.requires_grad_() for k, v in tensors.items() if v.is_floating_point()}
    order = [p.name for p in ENTRIES[name].inputs if p.name in tensors]
    loss = scale * build(name, **options)(*(tensors[k] for k in order))
    torch.testing.assert_close(loss, torch.tensor(case["value"], dtype=F64), rtol=1e-9,
                               atol=0, msg=lambda m: f"{case['id']}: value: {m}")
    ours_by_theirs = {theirs: ours for ours, theirs in inputs.items()}
    wrt = [floats[ours_by_theirs[theirs]] for theirs in grads]
    for theirs, got in zip(grads, torch.autograd.grad(loss, wrt, retain_graph=True)):
        torch.testing.assert_close(got, to_tensor(case["grads"][theirs]), rtol=1e-9, atol=1e-15,
                                   msg=lambda m: f"{case['id']}: grad of {theirs}: {m}")
    return floats, loss


def test_reference_kl_divergence():
    for case in reference_cases("KLDivergence"):
        assert set(case["grads"]) == {"preds_S"}  # MMRazor detaches the teacher too
        reference_check(case, "kl_div", dict(case["kwargs"]),
                        {"preds_S": "preds_S", "preds_T": "preds_T"}, ["preds_S"])


def test_reference_dkd():
    for case in reference_cases("DKDLoss"):
        kw = case["kwargs"]
        options = dict(alpha=kw["alpha"], beta=kw["beta"], tau=kw["tau"], detach_teacher=False)
        inputs = {"preds_S": "preds_S", "preds_T": "preds_T", "gt_labels": "gt_labels"}
        floats, loss = reference_check(case, "dkd", options, inputs, ["preds_S"])
        # MMRazor's teacher gradient is NaN (see the catalog entry); kdsl's is the formula's.
        assert to_tensor(case["grads"]["preds_T"]).isnan().all()
        s, t = floats["preds_S"], floats["preds_T"]
        expected = dkd_formula(s, t, to_tensor(case["inputs"]["gt_labels"]), kw["alpha"],
                               kw["beta"], kw["tau"])
        torch.testing.assert_close(torch.autograd.grad(loss, t)[0],
                                   torch.autograd.grad(expected, t)[0], rtol=1e-9, atol=1e-15)


def test_reference_dist():
    for case in reference_cases("DISTLoss"):
        kw = case["kwargs"]
        options = dict(tau=kw["tau"], inter_weight=kw["inter_loss_weight"],
                       intra_weight=kw["intra_loss_weight"])
        reference_check(case, "dist", options, {"preds_S": "logits_S", "preds_T": "logits_T"},
                        ["logits_S"])


def test_reference_wsld():
    for case in reference_cases("WSLD"):
        kw = case["kwargs"]
        # num_classes is read from the logits in kdsl.
        assert kw["num_classes"] == case["inputs"]["student"]["shape"][1]
        reference_check(case, "wsld", dict(tau=kw["tau"], detach_teacher=False),
                        {"preds_S": "student", "preds_T": "teacher", "gt_labels": "gt_labels"},
                        sorted(case["grads"]))


# ---- the catalog ----------------------------------------------------------------------------
@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_catalog_entry_matches_its_implementation(component):
    assert_implements(component)


def rule_problems(name, **shapes):
    infos = {k: TensorInfo(v[0], v[1]) if isinstance(v[1], str) else TensorInfo(v)
             for k, v in shapes.items()}
    return check_rules(ENTRIES[name].rules, infos)


def test_catalog_shape_rules():
    assert not rule_problems("kl_div", preds_S=(8, 10), preds_T=(8, 10))
    assert not rule_problems("kl_div", preds_S=(2, 5, 3, 3), preds_T=(2, 5, 3, 3))
    assert rule_problems("kl_div", preds_S=(8, 10), preds_T=(8, 11))
    assert rule_problems("kl_div", preds_S=(8, 7, 10), preds_T=(8, 7, 10))  # class dim unclear
    assert rule_problems("dist", preds_S=(2, 5, 3, 3), preds_T=(2, 5, 3, 3))
    labelled = dict(preds_S=(8, 10), preds_T=(8, 10))
    assert not rule_problems("dkd", **labelled, gt_labels=((8,), "int64"))
    assert rule_problems("dkd", **labelled, gt_labels=((7,), "int64"))
    assert rule_problems("wsld", **labelled, gt_labels=((8,), "float32"))
    assert not rule_problems("cross_entropy", preds_S=(2, 5, 3, 3), gt_labels=((2, 3, 3), "int64"))


def test_catalog_names():
    assert set(ENTRIES) == {"kl_div", "soft_cross_entropy", "cross_entropy", "kd", "dkd", "dist",
                            "wsld", "logit_std_kd"}


def test_catalog_does_not_import_torch():
    assert_imports_without_torch("kdsl.catalog.logit_losses")
