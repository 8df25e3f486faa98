"""Relational losses: each against its formula written out here, its invariances, MMRazor's
reference vectors, CRD's memory banks and training, and the catalog against the
implementations."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kdsl.catalog.binding import instantiate
from kdsl.catalog.relation_losses import COMPONENTS
from kdsl.catalog.shapes import TensorInfo, check_rules
from tests.catalog.reference import (assert_implements, assert_imports_without_torch,
                                     reference_cases, to_tensor)

F64 = torch.float64
ENTRIES = {c.name: c for c in COMPONENTS}


def build(name, **options):
    """Build a loss as the compiler does: options checked against the catalog, then constructed."""
    return instantiate(ENTRIES[name], **options)


def features(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=F64) * scale).requires_grad_()


def assert_same(loss_a, loss_b, wrt, rtol=1e-10, atol=1e-13):
    """Equal values and equal gradients with respect to every tensor of ``wrt``."""
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=atol)
    ga = torch.autograd.grad(loss_a, wrt, retain_graph=True)
    gb = torch.autograd.grad(loss_b, wrt, retain_graph=True)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


# ---- formulas, written out with plain operations and loops ----------------------------------
def rows(x, l2_norm=False):
    """The flattened samples as a list of vectors."""
    out = [v.reshape(-1) for v in x]
    return [v / torch.sqrt((v * v).sum()) for v in out] if l2_norm else out


def huber(x):
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


def rkd_distance_formula(s, t, l2_norm):
    def psi(x):
        v = rows(x, l2_norm)
        n = len(v)
        d = torch.stack([torch.stack([torch.sqrt(((v[i] - v[j]) ** 2).sum()) if i != j
                                      else v[i].sum() * 0 for j in range(n)]) for i in range(n)])
        return d / (d.sum() / (n * (n - 1)))
    return huber(psi(s) - psi(t)).mean()


def rkd_angle_formula(s, t, l2_norm):
    def psi(x):
        v = rows(x, l2_norm)
        n = len(v)
        out = []
        for a, b, c in itertools.product(range(n), repeat=3):
            if b == a or c == a:
                out.append(v[a].sum() * 0)
                continue
            e_ab, e_ac = v[b] - v[a], v[c] - v[a]
            out.append((e_ab * e_ac).sum() / torch.sqrt((e_ab * e_ab).sum() * (e_ac * e_ac).sum()))
        return torch.stack(out)
    return huber(psi(s) - psi(t)).mean()


# ---- rkd_distance / rkd_angle ---------------------------------------------------------------
RKD = [("rkd_distance", rkd_distance_formula), ("rkd_angle", rkd_angle_formula)]


@pytest.mark.parametrize("name,formula", RKD)
@pytest.mark.parametrize("l2_norm", [True, False])
def test_rkd_formula(name, formula, l2_norm):
    # Different widths and ranks: only the batch is shared.
    s, t = features(5, 2, 3, 3, seed=1), features(5, 7, seed=2)
    loss = build(name, with_l2_norm=l2_norm)(s, t)
    assert_same(loss, formula(s, t, l2_norm), (s, t))


@pytest.mark.parametrize("name,formula", RKD)
def test_rkd_formula_in_the_linear_part_of_the_huber_loss(name, formula):
    s, t = features(5, 4, seed=3), features(5, 4, seed=4)
    with torch.no_grad():
        s[0] *= 40  # one far sample stretches the student's relations
    loss = build(name, with_l2_norm=False)(s, t)
    assert_same(loss, formula(s, t, False), (s, t))


@pytest.mark.parametrize("name", ["rkd_distance", "rkd_angle"])
def test_rkd_ignores_scaling_and_translation(name):
    s, t = features(6, 8, seed=5).detach(), features(6, 3, seed=6).detach()
    loss = build(name, with_l2_norm=False)
    expected = loss(s, t)
    torch.testing.assert_close(loss(3.7 * s, 0.25 * t), expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(loss(s + 5.0, t - torch.randn(3, dtype=F64)), expected,
                               rtol=1e-9, atol=0)
    normalized = build(name, with_l2_norm=True)
    torch.testing.assert_close(normalized(3.7 * s, 0.25 * t), normalized(s, t), rtol=1e-10,
                               atol=0)


@pytest.mark.parametrize("name", ["rkd_distance", "rkd_angle"])
def test_rkd_is_zero_for_the_same_relations(name):
    s = features(5, 6, seed=7)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, dtype=F64))
    # A rotated, scaled copy has the same distances (up to scale) and the same angles.
    loss = build(name, with_l2_norm=False)(s, 2.0 * s.detach() @ rotation)
    torch.testing.assert_close(loss, torch.zeros((), dtype=F64), rtol=0, atol=1e-13)


# ---- pkt ------------------------------------------------------------------------------------
def pkt_formula(s, t):
    eps = 1e-7

    def conditional(x):
        v = rows(x, l2_norm=True)
        n = len(v)
        kernel = [[((v[i] * v[j]).sum() + 1) / 2 for j in range(n)] for i in range(n)]
        return [[kernel[i][j] / sum(kernel[i][k] for k in range(n) if k != i)
                 for j in range(n)] for i in range(n)]
    p_t, p_s = conditional(t), conditional(s)
    n = s.shape[0]
    return sum(p_t[i][j] * torch.log((p_t[i][j] + eps) / (p_s[i][j] + eps))
               for i in range(n) for j in range(n) if j != i) / n


def test_pkt_formula():
    s, t = features(6, 3, 2, seed=8), features(6, 10, seed=9)
    assert_same(build("pkt")(s, t), pkt_formula(s, t), (s, t))


def test_pkt_is_zero_for_equal_inputs_and_ignores_scaling_each_sample():
    s, t = features(6, 5, seed=10).detach(), features(6, 5, seed=11).detach()
    loss = build("pkt")
    torch.testing.assert_close(loss(s, s.clone()), torch.zeros((), dtype=F64), rtol=0, atol=0)
    scale = torch.linspace(0.1, 30, 6, dtype=F64)[:, None]
    torch.testing.assert_close(loss(scale * s, scale.flip(0) * t), loss(s, t), rtol=1e-10,
                               atol=0)


# ---- sp -------------------------------------------------------------------------------------
def sp_formula(s, t):
    def gram(x):
        v = rows(x)
        g = torch.stack([torch.stack([(a * b).sum() for b in v]) for a in v])
        return g / torch.sqrt((g * g).sum(1, keepdim=True))
    n = s.shape[0]
    return ((gram(s) - gram(t)) ** 2).sum() / n ** 2


def test_sp_formula():
    s, t = features(5, 3, 4, 4, seed=12), features(5, 6, 2, 2, seed=13)
    assert_same(build("sp")(s, t), sp_formula(s, t), (s, t))


def test_sp_ignores_scaling_and_is_zero_for_equal_inputs():
    s, t = features(5, 8, seed=14).detach(), features(5, 4, seed=15).detach()
    loss = build("sp")
    torch.testing.assert_close(loss(0.01 * s, 50.0 * t), loss(s, t), rtol=1e-10, atol=0)
    torch.testing.assert_close(loss(s, s.clone()), torch.zeros((), dtype=F64), rtol=0, atol=0)


# ---- cc -------------------------------------------------------------------------------------
def cc_formula(s, t, gamma, p):
    def correlation(x):
        v = rows(x, l2_norm=True)
        return torch.stack([torch.stack([
            sum(math.exp(-2 * gamma) * (2 * gamma) ** q / math.factorial(q) * (a * b).sum() ** q
                for q in range(p + 1)) for b in v]) for a in v])
    n = s.shape[0]
    return ((correlation(s) - correlation(t)) ** 2).sum() / n ** 2


@pytest.mark.parametrize("gamma,p", [(0.4, 2), (0.4, 1), (1.5, 3)])
def test_cc_formula(gamma, p):
    s, t = features(6, 2, 3, seed=16), features(6, 9, seed=17)
    assert_same(build("cc", gamma=gamma, p=p)(s, t), cc_formula(s, t, gamma, p), (s, t))


def test_cc_approaches_the_gaussian_kernel():
    # For unit vectors the series converges to exp(-gamma ||a - b||^2).
    s, t, gamma = features(5, 4, seed=18).detach(), features(5, 7, seed=19).detach(), 0.7

    def rbf(x):
        x = x / x.norm(dim=1, keepdim=True)
        return torch.exp(-gamma * torch.cdist(x, x) ** 2)
    expected = ((rbf(s) - rbf(t)) ** 2).mean()
    torch.testing.assert_close(build("cc", gamma=gamma, p=25)(s, t), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(build("cc", p=0)(s, t), torch.zeros((), dtype=F64), rtol=0, atol=0)


# ---- crd ------------------------------------------------------------------------------------
def unit(*shape, seed):
    x = features(*shape, seed=seed).detach()
    return (x / x.norm(dim=1, keepdim=True)).requires_grad_()


def crd_module(num_data=12, feat_dim=4, nce_k=5, nce_t=0.5, nce_m=0.3, seed=0):
    torch.manual_seed(seed)
    return build("crd", num_data=num_data, feat_dim=feat_dim, nce_k=nce_k, nce_t=nce_t,
                 nce_m=nce_m).double()


def nce_formula(embeddings, memory, contrast, nce_t, num_data, z):
    """Tian et al.'s NCE loss of one side, with explicit loops; ``z`` the normalizer."""
    eps, total = 1e-7, 0.0
    n, width = contrast.shape
    noise = (width - 1) / num_data
    for i in range(n):
        for j in range(width):
            score = torch.exp((embeddings[i] * memory[contrast[i, j]]).sum() / nce_t) / z
            if j == 0:
                total = total + torch.log(score / (score + noise + eps))
            else:
                total = total + torch.log(noise / (score + noise + eps))
    return -total / n


def z_formula(embeddings, memory, contrast, nce_t, num_data):
    scores = [torch.exp((embeddings[i] * memory[c]).sum() / nce_t)
              for i in range(contrast.shape[0]) for c in contrast[i]]
    return (sum(scores) / len(scores)).detach() * num_data


def test_crd_loss_is_the_nce_formula_with_fixed_indices():
    crd = crd_module()
    s, t = unit(3, 4, seed=20), unit(3, 4, seed=21)
    indices = torch.tensor([4, 0, 9])
    contrast = torch.tensor([[4, 1, 2, 3, 5, 6], [0, 11, 10, 9, 8, 7], [9, 2, 2, 5, 0, 1]])
    memory_s, memory_t = crd.memory_s.clone(), crd.memory_t.clone()
    loss = crd(s, t, indices, contrast)
    z_s = z_formula(s, memory_t, contrast, 0.5, 12)
    z_t = z_formula(t, memory_s, contrast, 0.5, 12)
    torch.testing.assert_close(crd.z_s, z_s)
    torch.testing.assert_close(crd.z_t, z_t)
    expected = (nce_formula(s, memory_t, contrast, 0.5, 12, z_s)
                + nce_formula(t, memory_s, contrast, 0.5, 12, z_t))
    assert_same(loss, expected, (s, t))

    # The normalizers stay fixed: a second batch uses those of the first.
    s2, t2 = unit(3, 4, seed=22), unit(3, 4, seed=23)
    memory_s, memory_t = crd.memory_s.clone(), crd.memory_t.clone()
    loss2 = crd(s2, t2, indices, contrast)
    expected2 = (nce_formula(s2, memory_t, contrast, 0.5, 12, z_s)
                 + nce_formula(t2, memory_s, contrast, 0.5, 12, z_t))
    assert_same(loss2, expected2, (s2, t2))


def test_crd_memory_update_rule():
    crd = crd_module(nce_m=0.3).train()
    s, t = unit(3, 4, seed=24), unit(3, 4, seed=25)
    indices = torch.tensor([7, 2, 10])
    before_s, before_t = crd.memory_s.clone(), crd.memory_t.clone()
    crd(s, t, indices)
    for before, after, x in ((before_s, crd.memory_s, s), (before_t, crd.memory_t, t)):
        for row in range(12):
            if row in indices.tolist():
                moved = 0.3 * before[row] + 0.7 * x[indices.tolist().index(row)].detach()
                torch.testing.assert_close(after[row], moved / moved.norm())
            else:
                torch.testing.assert_close(after[row], before[row], rtol=0, atol=0)
    # Evaluation leaves the memories alone.
    crd.eval()
    frozen_s, frozen_t = crd.memory_s.clone(), crd.memory_t.clone()
    crd(unit(3, 4, seed=26), unit(3, 4, seed=27), indices)
    assert torch.equal(crd.memory_s, frozen_s) and torch.equal(crd.memory_t, frozen_t)


def test_crd_memories_start_near_unit_norm_and_are_buffers():
    crd = build("crd", num_data=2000, feat_dim=64)
    norms = crd.memory_s.norm(dim=1)
    assert abs(norms.mean().item() - 1.0) < 0.05
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(crd.state_dict())
    assert not list(crd.parameters())


def test_crd_negatives_are_drawn_from_the_other_samples_with_torchs_rng():
    crd = crd_module(num_data=6, nce_k=200)
    indices = torch.tensor([0, 3, 5])
    torch.manual_seed(3)
    contrast = crd.sample_contrast(indices)
    assert contrast.shape == (3, 201)
    assert torch.equal(contrast[:, 0], indices)
    for i, own in enumerate(indices.tolist()):
        drawn = set(contrast[i, 1:].tolist())
        assert drawn == set(range(6)) - {own}  # every other sample, never itself
    torch.manual_seed(3)
    assert torch.equal(crd.sample_contrast(indices), contrast)

    # Without contrast_idx the loss draws exactly those indices.
    s, t = unit(3, 4, seed=28), unit(3, 4, seed=29)
    twin = crd_module(num_data=6, nce_k=200).eval()
    crd.eval()
    torch.manual_seed(3)
    drawn = crd(s, t, indices)
    torch.testing.assert_close(drawn, twin(s, t, indices, contrast))


def test_crd_trains_a_student_embedding():
    torch.manual_seed(0)
    num_data, width, feat_dim = 32, 10, 8
    inputs = torch.randn(num_data, width)
    teacher = torch.nn.functional.normalize(inputs @ torch.randn(width, feat_dim), dim=1)
    student = torch.nn.Linear(width, feat_dim)
    crd = build("crd", num_data=num_data, feat_dim=feat_dim, nce_k=16).train()
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    indices = torch.arange(num_data)

    def alignment():
        # How often each sample's student embedding is nearest to its own teacher embedding.
        with torch.no_grad():
            s = torch.nn.functional.normalize(student(inputs), dim=1)
            return ((s @ teacher.t()).argmax(1) == indices).float().mean().item()

    before, losses = alignment(), []
    for _ in range(60):
        s = torch.nn.functional.normalize(student(inputs), dim=1)
        loss = crd(s, teacher, indices)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert alignment() > max(before, 0.5)


def test_crd_low_precision_and_bad_options():
    crd = build("crd", num_data=10, feat_dim=4, nce_k=3)
    s = unit(2, 4, seed=30).detach().to(torch.bfloat16).requires_grad_()
    loss = crd(s, unit(2, 4, seed=31).detach().to(torch.bfloat16), torch.tensor([1, 2]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
    for bad in ({"num_data": 1}, {"nce_k": 0}, {"nce_t": 0.0}, {"nce_m": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            build("crd", **{"num_data": 10, "feat_dim": 4, **bad})


# ---- every loss in low precision ------------------------------------------------------------
PAIRWISE = ["rkd_distance", "rkd_angle", "pkt", "sp", "cc"]


@pytest.mark.parametrize("name", PAIRWISE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(name, dtype):
    s = features(8, 4, 3, seed=32).detach().to(dtype).requires_grad_()
    t = features(8, 6, seed=33).detach().to(dtype)
    loss = build(name)(s, t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, s)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()
    exact = build(name)(s.detach().double(), t.double())
    torch.testing.assert_close(loss.double(), exact, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", PAIRWISE + ["crd"])
def test_autocast_does_not_lower_the_precision(name):
    s, t = unit(8, 6, seed=34).detach().float(), unit(8, 6, seed=35).detach().float()
    if name == "crd":
        torch.manual_seed(0)
        loss = build(name, num_data=20, feat_dim=6, nce_k=7).eval()
        extra = (torch.arange(8), torch.randint(0, 20, (8, 8)))
    else:
        loss, extra = build(name), ()
    exact = loss(s, t, *extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = loss(s, t, *extra)
    assert autocast.dtype == torch.float32
    torch.testing.assert_close(autocast, exact, rtol=1e-6, atol=1e-7)


# ---- MMRazor's reference vectors ------------------------------------------------------------
@pytest.mark.parametrize("reference_class,name,weight", [
    # MMRazor's default loss_weight is part of its value; in kdsl it is the spec's weight.
    ("DistanceWiseRKD", "rkd_distance", 25.0),
    ("AngleWiseRKD", "rkd_angle", 50.0),
])
def test_reference_rkd(reference_class, name, weight):
    for case in reference_cases(reference_class):
        s = to_tensor(case["inputs"]["preds_S"]).requires_grad_()
        t = to_tensor(case["inputs"]["preds_T"]).requires_grad_()
        loss = weight * build(name, **case["kwargs"])(s, t)
        torch.testing.assert_close(loss, torch.tensor(case["value"], dtype=F64), rtol=1e-9,
                                   atol=0, msg=lambda m: f"{case['id']}: value: {m}")
        assert set(case["grads"]) == {"preds_S", "preds_T"}
        for key, got in zip(("preds_S", "preds_T"), torch.autograd.grad(loss, (s, t))):
            torch.testing.assert_close(got, to_tensor(case["grads"][key]), rtol=1e-9,
                                       atol=1e-15, msg=lambda m: f"{case['id']}: {key}: {m}")


# ---- the catalog ----------------------------------------------------------------------------
@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_catalog_entry_matches_its_implementation(component):
    assert_implements(component)


def rule_problems(name, **shapes):
    return check_rules(ENTRIES[name].rules, {k: TensorInfo(v) for k, v in shapes.items()})


def test_catalog_shape_rules():
    for name in PAIRWISE:
        assert not rule_problems(name, preds_S=(8, 64, 4, 4), preds_T=(8, 256))
        assert rule_problems(name, preds_S=(8, 64), preds_T=(7, 64))
    embedded = dict(preds_S=(8, 128), preds_T=(8, 128))
    assert not rule_problems("crd", **embedded, indices=(8,))
    assert not rule_problems("crd", **embedded, indices=(8,), contrast_idx=(8, 17))
    assert rule_problems("crd", **embedded, indices=(7,))
    assert rule_problems("crd", **embedded, indices=(8,), contrast_idx=(8,))
    assert rule_problems("crd", preds_S=(8, 128), preds_T=(8, 64), indices=(8,))


def test_catalog_names_and_crd_inference():
    assert set(ENTRIES) == set(PAIRWISE) | {"crd"}
    crd = ENTRIES["crd"]
    assert crd.inferable("feat_dim").source == "preds_S" and crd.inferable("feat_dim").dim == 1
    assert [p.name for p in crd.inputs] == ["preds_S", "preds_T", "indices", "contrast_idx",
                                            "target"]
    assert not crd.input("contrast_idx").required


def test_catalog_does_not_import_torch():
    assert_imports_without_torch("kdsl.catalog.relation_losses")
