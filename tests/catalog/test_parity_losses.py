"""The losses and options added for parity with torchdistill and MMRazor, each against its
formula written out here (independent of the reference vectors), in float64: values and
gradients, plus the catalog's declarations against the implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdsl.catalog.adaptive_losses import COMPONENTS as ADAPTIVE
from kdsl.catalog.binding import instantiate
from kdsl.catalog.composite_losses import COMPONENTS as COMPOSITE
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.shapes import TensorInfo, check_rules
from tests.catalog.reference import assert_implements, assert_imports_without_torch
from tests.catalog.reference import assert_same_value_and_grads

F64 = torch.float64


def build(name, **options):
    return instantiate(REGISTRY.get("loss", name), **options)


def rand(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64).requires_grad_()


def same(loss, formula, inputs):
    """Value and gradients of ``loss`` and ``formula`` agree on ``inputs``."""
    assert_same_value_and_grads(loss(*inputs), formula(*inputs), [x for x in inputs if x.requires_grad])


def kl_rows(p_t, log_p_s):
    return sum(sum(p_t[i, c] * (math.log(p_t[i, c]) - log_p_s[i, c])
                   for c in range(p_t.shape[1])) for i in range(p_t.shape[0]))


# ---- logit losses ----------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["paper", "torchdistill"])
@pytest.mark.parametrize("alpha,with_labels", [(0.3, True), (0.0, True), (0.5, False)])
def test_kd_with_targets(form, alpha, with_labels):
    s, t = rand(5, 6, seed=1), rand(5, 6, seed=2)
    y = torch.tensor([0, 3, 5, 1, 2])
    tau, beta, ls = 3.0, 2.0, 0.1

    def formula(s, t, *labels):
        p_t = torch.softmax(t / tau, 1)
        kl = (p_t * (p_t.log() - torch.log_softmax(s / tau, 1))).sum() / s.shape[0]
        if form == "torchdistill" and (alpha == 0 or not labels):
            return kl
        soft = beta * tau ** 2 * kl
        if not labels:
            return soft
        log_p = torch.log_softmax(s, 1)
        ce = -((1 - ls) * log_p.gather(1, labels[0].view(-1, 1)).squeeze(1)
               + ls * log_p.mean(1)).mean()
        return alpha * ce + soft

    loss = build("kd", tau=tau, alpha=alpha, beta=beta, label_smoothing=ls, form=form,
                 detach_teacher=False)
    same(loss, formula, (s, t, y) if with_labels else (s, t))


def test_kd_beta_defaults_to_one_minus_alpha():
    s, t, y = rand(4, 5, seed=3), rand(4, 5, seed=4), torch.tensor([1, 0, 4, 2])
    a = build("kd", alpha=0.25)(s, t, y)
    b = build("kd", alpha=0.25, beta=0.75)(s, t, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_logit_std_kd_torchdistill_form():
    s, t = rand(4, 7, seed=5), rand(4, 7, seed=6)
    tau, eps = 2.0, 1e-3

    def z(x):
        return (x - x.mean(1, keepdim=True)) / (eps + x.std(1, keepdim=True))

    def formula(s, t):
        p_t = torch.softmax(z(t) / tau, 1)
        return tau ** 2 * (p_t * (p_t.log() - torch.log_softmax(z(s) / tau, 1))).sum() / 4

    same(build("logit_std_kd", tau=tau, form="torchdistill", eps=eps, detach_teacher=False),
         formula, (s, t))


def test_dist_torchdistill_form_clamps_the_norms():
    s, t = rand(6, 5, seed=7), rand(6, 5, seed=8)

    def rho(a, b):
        a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1).clamp_min(1e-8) * b.norm(dim=1).clamp_min(1e-8))

    def formula(s, t):
        ys, yt = torch.softmax(s, 1), torch.softmax(t, 1)
        return 2 * (1 - rho(ys, yt).mean()) + 0.5 * (1 - rho(ys.t(), yt.t()).mean())

    same(build("dist", inter_weight=2.0, intra_weight=0.5, form="torchdistill",
               detach_teacher=False), formula, (s, t))


def test_dkd_mmrazor_form_equals_the_default_value_with_nan_teacher_gradients():
    s, t, y = rand(5, 6, seed=9), rand(5, 6, seed=10), torch.tensor([0, 1, 2, 3, 4])
    mm = build("dkd", form="mmrazor", detach_teacher=False)(s, t, y)
    ours = build("dkd", detach_teacher=False)(s, t, y)
    torch.testing.assert_close(mm, ours, rtol=1e-9, atol=0)
    torch.testing.assert_close(torch.autograd.grad(mm, s, retain_graph=True)[0],
                               torch.autograd.grad(ours, s, retain_graph=True)[0], rtol=1e-7,
                               atol=1e-12)
    assert torch.autograd.grad(mm, t)[0].isnan().any()
    assert torch.autograd.grad(ours, t)[0].isfinite().all()


# ---- feature and relation options --------------------------------------------------------------
def test_at_paper_form():
    s, t = rand(3, 4, 5, 5, seed=11), rand(3, 6, 5, 5, seed=12)

    def a(x):
        q = x.pow(2).sum(1).flatten(1)
        return q / q.norm(dim=1, keepdim=True)

    same(build("at", form="paper"), lambda s, t: (a(s) - a(t)).norm(dim=1).mean(), (s, t))


def test_ab_sum_reduction_and_ft_distance():
    s, t = rand(3, 4, 2, 2, seed=13), rand(3, 4, 2, 2, seed=14)
    batchmean = build("ab")(s, t)
    torch.testing.assert_close(build("ab", reduction="sum")(s, t), 3 * batchmean)

    def f(x):
        x = x.flatten(1)
        return x / x.norm(dim=1, keepdim=True)

    same(build("ft", p=2, distance="norm"), lambda s, t: (f(s) - f(t)).norm(dim=1).mean(), (s, t))
    same(build("ft", p=2, distance="norm", reduction="sum"),
         lambda s, t: (f(s) - f(t)).norm(dim=1).sum(), (s, t))
    same(build("ft", reduction="sum"), lambda s, t: (f(s) - f(t)).abs().sum(), (s, t))


def test_fsp_column_norm_and_max_pooling_within_a_network():
    sf, ss = rand(2, 3, 4, 4, seed=15), rand(2, 5, 2, 2, seed=16)
    tf, ts = rand(2, 3, 4, 4, seed=17), rand(2, 5, 2, 2, seed=18)

    def g(a, b):
        a = F.max_pool2d(a, 2).flatten(2)
        return a @ b.flatten(2).transpose(1, 2) / 4

    def formula(sf, ss, tf, ts):
        d = g(sf, ss) - g(tf, ts)
        return sum(d[n, :, j].norm() for n in range(2) for j in range(5)) / 2

    same(build("fsp", norm="column"), formula, (sf, ss, tf, ts))


def test_ickd_mean_n2_and_cc_sp_options():
    s, t = rand(3, 4, 2, 2, seed=19), rand(3, 4, 2, 2, seed=20)
    torch.testing.assert_close(build("ickd", reduction="mean_n2")(s, t), build("ickd")(s, t) / 3)
    x, y = rand(4, 6, seed=21), rand(4, 6, seed=22)
    same(build("cc", kernel="bilinear", normalize=False, distance="unsquared"),
         lambda x, y: (x @ x.t() - y @ y.t()).norm() / 16, (x, y))
    same(build("cc", kernel="bilinear", normalize=False, reduction="sum"),
         lambda x, y: (x @ x.t() - y @ y.t()).pow(2).sum(), (x, y))

    def l1_rows(z):
        g = z @ z.t()
        return g / g.abs().sum(1, keepdim=True)

    same(build("sp", normalize="l1"), lambda x, y: (l1_rows(x) - l1_rows(y)).pow(2).mean(), (x, y))
    same(build("sp", reduction="sum"),
         lambda x, y: (F.normalize(x @ x.t()) - F.normalize(y @ y.t())).pow(2).sum(), (x, y))


def test_rkd_sum_reduction_and_pkt_torchdistill_form():
    x, y = rand(5, 6, seed=23), rand(5, 4, seed=24)
    for name in ("rkd_distance", "rkd_angle"):
        mean = build(name)(x, y)
        n = 25 if name == "rkd_distance" else 125
        torch.testing.assert_close(build(name, reduction="sum")(x, y), n * mean)
    eps = 1e-3

    def p(z):
        z = z / (z.norm(dim=1, keepdim=True) + eps)
        k = (z @ z.t() + 1) / 2
        return k / k.sum(1, keepdim=True)

    same(build("pkt", form="torchdistill", eps=eps),
         lambda x, y: (p(y) * torch.log((p(y) + eps) / (p(x) + eps))).mean(), (x, y))


def test_vid_nll_and_identity_regressor():
    mu, t = rand(2, 3, 2, 2, seed=25), rand(2, 3, 2, 2, seed=26)
    var = (rand(1, 3, 1, 1, seed=27).detach().exp()).requires_grad_()
    same(build("vid_nll"), lambda m, t, v: (0.5 * ((m - t) ** 2 / v + v.log())).mean(), (mu, t, var))
    vid = build("vid", in_channels=3, out_channels=3, regressor="none", init_pred_var=2.0).double()
    v = F.softplus(vid.log_scale) + vid.eps
    torch.testing.assert_close(vid(mu, t), build("vid_nll")(mu, t, v.view(1, 3, 1, 1)))
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        build("vid", in_channels=3, out_channels=4, regressor="none")


# ---- composite losses --------------------------------------------------------------------------
def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum() / ((a.pow(2).sum() * b.pow(2).sum()).sqrt() + 1e-8)


@pytest.mark.parametrize("form", ["paper", "torchdistill"])
def test_dist_plus(form):
    s, t = rand(4, 3, 2, 2, seed=28), rand(4, 3, 2, 2, seed=29)

    def formula(s, t):
        channel = torch.stack([pearson(s[n, :, h, w], t[n, :, h, w]) for n in range(4)
                               for h in range(2) for w in range(2)]).mean()
        a, b = s.sum(1), t.sum(1)
        spatial = torch.stack([F.cosine_similarity(a[:, h, w] - a[:, h, w].mean(),
                                                   b[:, h, w] - b[:, h, w].mean(), dim=0)
                               for h in range(2) for w in range(2)]).mean()
        c = channel if form == "torchdistill" else 1 - channel
        return 0.5 * c + 2.0 * (1 - spatial)

    same(build("dist_plus", channel_weight=0.5, spatial_weight=2.0, form=form), formula, (s, t))


def test_srd_and_skd_instance():
    s, t = rand(4, 6, seed=30), rand(4, 6, seed=31)
    same(build("srd", exponent=3.0), lambda s, t: 2 * torch.log((s - t).abs().pow(3).sum()), (s, t))

    def instance(s, t):
        p_t = torch.softmax(t / 2, 1)
        return (p_t * (p_t.log() - torch.log_softmax(s / 2, 1))).sum() / 4

    same(build("skd_instance", tau=2.0, detach_teacher=False), instance, (s, t))


def test_skd_direction():
    s, t = rand(5, 4, seed=32), rand(5, 6, seed=33)

    def formula(s, t):
        def g(x):
            x = x / x.norm(dim=1, keepdim=True)
            return x @ x.t()

        d = g(s) - g(t)
        centred = d - d.mean(0, keepdim=True)
        cov = centred.t() @ centred / 4 + 0.5 * torch.eye(5, dtype=F64)
        inv = torch.linalg.inv(cov)
        return torch.stack([(d[i] @ inv @ d[i]).sqrt() for i in range(5)]).mean()

    same(build("skd_direction", tikhonov=0.5, detach_teacher=False), formula, (s, t))


def rotation_similarities(z):
    normal = [z[i] for i in range(0, z.shape[0], 4)]
    aug = [z[i] for i in range(z.shape[0]) if i % 4]
    return torch.stack([torch.stack([F.cosine_similarity(a, n, dim=0) for n in normal])
                        for a in aug])


def test_sskd_aux():
    z = rand(8, 5, seed=34)

    def formula(z):
        sims = rotation_similarities(z)
        return F.cross_entropy(sims, torch.tensor([0, 0, 0, 1, 1, 1]), reduction="sum")

    same(build("sskd_aux", reduction="sum"), formula, (z,))


def test_sskd_with_every_row_kept():
    s, t = rand(8, 5, seed=35), rand(8, 5, seed=36)
    ss_s, ss_t = rand(8, 4, seed=37), rand(8, 4, seed=38)
    y = torch.tensor([1, 3])

    def kd(a, b, tau):
        p = torch.softmax(b / tau, 1)
        return tau ** 2 * (p * (p.log() - torch.log_softmax(a / tau, 1))).sum() / a.shape[0]

    def formula(s, t, ss_s, ss_t):
        normal, aug = [0, 4], [1, 2, 3, 5, 6, 7]
        return (F.cross_entropy(s[normal], y) + 0.9 * kd(s[normal], t[normal], 4.0)
                + 10 * kd(rotation_similarities(ss_s), rotation_similarities(ss_t).detach(), 0.5)
                + 2.7 * kd(s[aug], t[aug], 4.0))

    loss = build("sskd", ss_ratio=1.0, tf_ratio=1.0, detach_teacher=False)
    same(lambda *x: loss(*x, y), formula, (s, t, ss_s, ss_t))


def test_sskd_ranking_drops_the_worst_rows():
    # the teacher ranks the label first for every rotation but the last, which is dropped
    s = rand(4, 3, seed=39).detach()
    t = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0, 0], [5.0, 0, 0], [0, 5.0, 0]], dtype=F64)
    ss = rand(4, 2, seed=40).detach()
    y = torch.tensor([0])
    zero = dict(ce_weight=0.0, kl_weight=0.0, ss_weight=0.0, tf_weight=1.0)
    dropped = build("sskd", tf_ratio=0.0, **zero)(s, t, ss, ss, y)
    p = torch.softmax(t[1:3] / 4, 1)
    want = 16 * (p * (p.log() - torch.log_softmax(s[1:3] / 4, 1))).sum() / 2
    torch.testing.assert_close(dropped, want)


# ---- adaptive losses ---------------------------------------------------------------------------
def test_hcl():
    s, t = rand(2, 3, 4, 4, seed=41), rand(2, 3, 4, 4, seed=42)

    def formula(s, t):
        # k = 4 is the map's own size and skipped; 2 and 1 get weights 1/2 and 1/4
        levels = [F.mse_loss(s, t), 0.5 * F.mse_loss(F.avg_pool2d(s, 2), F.avg_pool2d(t, 2)),
                  0.25 * F.mse_loss(s.mean((2, 3)), t.mean((2, 3)))]
        return sum(levels) / 1.75

    same(build("hcl"), formula, (s, t))


@pytest.mark.parametrize("p,q,reduction", [(1, 2.0, "mean"), (2, 2.0, "sum"), (3, 1.0, "mean")])
def test_kta(p, q, reduction):
    s, t = rand(3, 2, 2, 2, seed=43), rand(3, 2, 2, 2, seed=44)

    def formula(s, t):
        def f(x):
            x = x.flatten(1)
            return x / x.norm(p=q, dim=1, keepdim=True)

        d = f(s) - f(t)
        values = d.abs() if p == 1 else d.abs().pow(p).sum(1).pow(1 / p)
        return values.sum() if reduction == "sum" else values.mean()

    same(build("kta", p=p, q=q, reduction=reduction), formula, (s, t))


def test_affinity():
    s, t = rand(2, 3, 2, 3, seed=45), rand(2, 3, 2, 3, seed=46)

    def formula(s, t):
        total = 0
        for n in range(2):
            for c in range(3):
                a = F.normalize(s[n, c].flatten(), dim=0)
                b = F.normalize(t[n, c].flatten(), dim=0)
                total = total + ((torch.outer(a, a) - torch.outer(b, b)) / 6).norm()
        return total / 2

    same(build("affinity"), formula, (s, t))


def test_pad_l2_and_regularization():
    s, t, v = rand(3, 4, seed=47), rand(3, 4, seed=48), rand(3, 4, seed=49)
    same(build("pad_l2", reduction="sum"),
         lambda s, t, v: ((t - s) ** 2 / (1e-6 + v.exp()) + v).mean(1).sum(), (s, t, v))
    same(build("regularization", p=3.0), lambda x: x.abs().pow(3).sum().pow(1 / 3), (s,))


# ---- the catalog ---------------------------------------------------------------------------------
@pytest.mark.parametrize("component", COMPOSITE + ADAPTIVE, ids=lambda c: c.name)
def test_catalog_entry_matches_its_implementation(component):
    assert_implements(component)
    for option in component.options:
        if option.type.name in ("float", "int"):
            assert option.constraint is not None, (component.name, option.name)


def test_shape_rules():
    def infos(**shapes):
        return {k: TensorInfo(v) for k, v in shapes.items()}

    hcl = REGISTRY.get("loss", "hcl").rules
    assert check_rules(hcl, infos(preds_S=(2, 3, 8, 8), preds_T=(2, 3, 8, 8))) == []
    assert check_rules(hcl, infos(preds_S=(2, 3, 8, 8), preds_T=(2, 3, 4, 4)))
    sskd = REGISTRY.get("loss", "sskd").rules
    assert check_rules(sskd, infos(preds_S=(8, 5), preds_T=(8, 5), ss_S=(8, 4), ss_T=(8, 6),
                                   gt_labels=(2,))) == []
    assert check_rules(sskd, infos(preds_S=(8, 5), preds_T=(8, 5), ss_S=(4, 4), ss_T=(8, 6),
                                   gt_labels=(2,)))


@pytest.mark.parametrize("module", ["kdsl.catalog.composite_losses", "kdsl.catalog.adaptive_losses"])
def test_catalog_does_not_import_torch(module):
    assert_imports_without_torch(module)
