"""FBKD (loss and connectors), ZSKT's attention and adversarial terms, knowledge review's ABF,
BYOT's gated classifier and CRD's class-aware negatives, each against its formula written out
here, in float64: values and gradients, plus the catalog's declarations."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from kdsl.catalog.adversarial_losses import COMPONENTS as ADVERSARIAL
from kdsl.catalog.binding import instantiate
from kdsl.catalog.paper_connectors import COMPONENTS as PAPER_CONNECTORS
from kdsl.catalog.paper_losses import COMPONENTS as PAPER_LOSSES
from kdsl.catalog.registry import REGISTRY
from kdsl.components.connectors import ConnectorConfigError
from tests.catalog.reference import assert_implements, assert_imports_without_torch
from tests.catalog.reference import assert_same_value_and_grads, seeded

F64 = torch.float64


def loss(name, **options):
    return instantiate(REGISTRY.get("loss", name), **options)


def connector(name, **options):
    return instantiate(REGISTRY.get("connector", name), **options).double().eval()


def rand(*shape, seed, grad=True):
    return seeded(*shape, seed=seed, grad=grad)


same = assert_same_value_and_grads


def bn_eval(x, bn):
    """Batch norm in eval mode, written out: (x - running mean) / sqrt(var + eps) * w + b."""
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


# ---- FBKD --------------------------------------------------------------------------------------
def spatial_mask(x, tau):
    n, c, h, w = x.shape
    a = x.abs().sum(1) / c                                  # [N, H, W]
    e = torch.exp(a / tau)
    return (h * w * e / e.sum((1, 2), keepdim=True)).unsqueeze(1)


def channel_mask(x, tau):
    n, c, h, w = x.shape
    a = x.abs().sum((2, 3)) / (h * w)                       # [N, C]
    e = torch.exp(a / tau)
    return (c * e / e.sum(1, keepdim=True)).view(n, c, 1, 1)


def non_local(x, block):
    """x + BN(W_z (f(theta x, phi x) g x)), f the dot product over the number of positions."""
    n, c, h, w = x.shape
    p = h * w

    def conv1x1(conv, v):
        out = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], v)
        return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)

    theta = conv1x1(block.theta, x).reshape(n, -1, p)
    phi = conv1x1(block.phi, x).reshape(n, -1, p)
    g = conv1x1(block.g, x).reshape(n, -1, p)
    pairwise = torch.einsum("nci,ncj->nij", theta, phi) / p
    y = torch.einsum("nij,ncj->nci", pairwise, g).reshape(n, -1, h, w)
    return x + bn_eval(conv1x1(block.conv_out, y), block.norm)


def test_fbkd_connectors_compute_the_masks_pools_and_non_local_relations():
    x = rand(2, 4, 3, 5, seed=1, grad=False)
    student = connector("fbkd_student", in_channels=4, zeros_init=False)
    teacher = connector("fbkd_teacher", in_channels=4, spatial_tau=0.7, channel_tau=0.3)
    s = student(x)
    assert len(s) == 6
    torch.testing.assert_close(s[0], spatial_mask(x, 0.5))
    torch.testing.assert_close(s[1], channel_mask(x, 0.5))
    lin = student.channel_adaptation
    torch.testing.assert_close(s[2], x.mean((2, 3)) @ lin.weight.t() + lin.bias)
    conv = student.spatial_adaptation
    torch.testing.assert_close(s[3], F.conv2d(x.mean(1, keepdim=True), conv.weight, conv.bias,
                                              padding=1))
    rel = student.relation_adaptation
    torch.testing.assert_close(s[4], F.conv2d(non_local(x, student.non_local), rel.weight, rel.bias))
    feat = student.feature_adaptation
    torch.testing.assert_close(s[5], F.conv2d(x, feat.weight, feat.bias))
    t = teacher(x)
    assert len(t) == 5
    torch.testing.assert_close(t[0], spatial_mask(x, 0.7))
    torch.testing.assert_close(t[1], channel_mask(x, 0.3))
    torch.testing.assert_close(t[2], x.mean(1, keepdim=True))
    # zeros_init: the teacher's non-local block starts as the identity
    torch.testing.assert_close(t[3], x)
    torch.testing.assert_close(t[4], x)


def test_fbkd_loss_value_and_gradients():
    n, c, h, w = 2, 3, 4, 4
    s = (rand(n, 1, h, w, seed=2).exp(), rand(n, c, 1, 1, seed=3), rand(n, c, seed=4),
         rand(n, 1, h, w, seed=5), rand(n, c, h, w, seed=6), rand(n, c, h, w, seed=7))
    t = (rand(n, 1, h, w, seed=8).exp(), rand(n, c, 1, 1, seed=9), rand(n, 1, h, w, seed=10),
         rand(n, c, h, w, seed=11), rand(n, c, h, w, seed=12))
    weights = dict(mask_l2_weight=0.5, channel_weight=0.25, spatial_weight=2.0,
                   nonlocal_weight=3.0)

    def formula():
        mask = ((s[0] + t[0]) / 2).detach()
        feature = torch.sqrt(((t[4] - s[5]) ** 2 * mask).sum())
        channel = torch.sqrt(((t[4].mean((2, 3)) - s[2]) ** 2).sum())
        spatial = torch.sqrt(((t[2] - s[3]) ** 2).sum())
        relation = torch.sqrt(((t[3] - s[4]) ** 2).sum())
        return 0.5 * feature + 0.25 * channel + 2.0 * spatial + 3.0 * relation

    same(loss("fbkd", **weights)(s, t), formula(), list(s) + list(t))


def test_fbkd_loss_refuses_what_is_not_a_connector_tuple():
    with pytest.raises(ValueError, match="fbkd_student connector"):
        loss("fbkd")(rand(2, 3, seed=13), tuple(rand(2, 3, seed=14) for _ in range(5)))


# ---- ZSKT ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["paper", "code"])
def test_zskt_attention(form):
    s, t = rand(3, 4, 2, 3, seed=15), rand(3, 6, 2, 3, seed=16)

    def attention(a):
        f = (a ** 2).sum(1).flatten(1) / a.shape[1]
        return f / torch.sqrt((f ** 2).sum(1, keepdim=True))

    d = attention(t) - attention(s)
    want = torch.sqrt((d ** 2).sum(1)).mean() if form == "paper" else (d ** 2).mean()
    same(loss("zskt_attention", form=form)(s, t), want, [s, t])


def test_zskt_adversarial_is_minus_the_kl_and_reaches_both_networks():
    s, t = rand(4, 5, seed=17), rand(4, 5, seed=18)
    total = 0
    for i in range(4):
        p = torch.softmax(t[i] / 2.0, 0)
        q = torch.softmax(s[i] / 2.0, 0)
        total = total + (p * (p.log() - q.log())).sum()
    same(loss("zskt_adversarial", tau=2.0)(s, t), -total / 4, [s, t])
    grads = torch.autograd.grad(loss("zskt_adversarial")(s, t), [s, t])
    assert all(g.abs().sum() > 0 for g in grads)


# ---- knowledge review's ABF --------------------------------------------------------------------
def test_abf_fuses_the_residual_and_returns_output_and_residual():
    abf = connector("abf", in_channels=3, mid_channels=4, out_channels=5, out_size=6)
    x, r = rand(2, 3, 4, 4, seed=19), rand(2, 4, 2, 2, seed=20)
    out, residual = abf(x, r)

    def formula(x, r):
        m = bn_eval(F.conv2d(x, abf.conv1[0].weight), abf.conv1[1])
        r_up = r.repeat_interleave(2, 2).repeat_interleave(2, 3)   # nearest, 2x2 -> 4x4
        att = torch.sigmoid(F.conv2d(torch.cat([m, r_up], 1), abf.att_conv[0].weight,
                                     abf.att_conv[0].bias))
        fused = m * att[:, :1] + r_up * att[:, 1:]
        idx = torch.tensor([0, 0, 1, 2, 2, 3])                      # nearest, 4 -> 6
        fused = fused[:, :, idx][:, :, :, idx]
        y = bn_eval(F.conv2d(fused, abf.conv2[0].weight, padding=1), abf.conv2[1])
        return y, fused

    want_out, want_residual = formula(x, r)
    torch.testing.assert_close(residual, want_residual)
    same(out.square().sum(), want_out.square().sum(), [x, r])


def test_abf_without_fusion_and_misuse():
    deepest = connector("abf", in_channels=3, mid_channels=4, out_channels=5, fuse=False)
    x = rand(2, 3, 4, 4, seed=21, grad=False)
    out, residual = deepest(x)
    assert out.shape == (2, 5, 4, 4) and residual.shape == (2, 4, 4, 4)
    with pytest.raises(ConnectorConfigError, match="fuse=false"):
        deepest(x, residual)
    with pytest.raises(ConnectorConfigError, match="needs the deeper ABF's residual"):
        connector("abf", in_channels=3, mid_channels=4, out_channels=5)(x)


# ---- BYOT ----------------------------------------------------------------------------------
def sep_conv(x, seq):
    relu1, dw1, pw1, bn1, relu2, dw2, pw2, bn2 = seq
    x = F.conv2d(F.relu(x), dw1.weight, stride=dw1.stride, padding=dw1.padding,
                 groups=dw1.groups)
    x = bn_eval(F.conv2d(x, pw1.weight), bn1)
    x = F.conv2d(F.relu(x), dw2.weight, padding=dw2.padding, groups=dw2.groups)
    return bn_eval(F.conv2d(x, pw2.weight), bn2)


def test_byot_gates_the_feature_and_returns_features_and_logits():
    byot = connector("byot", in_channels=2, out_channels=8, num_classes=3)
    x = rand(2, 2, 8, 8, seed=22)
    features, logits = byot(x)
    assert features.shape == (2, 8) and logits.shape == (2, 3)

    def formula(x):
        sep, bn = byot.gate[0], byot.gate[1]
        down = F.relu(bn_eval(sep_conv(x, sep), bn))
        gate = torch.sigmoid(F.interpolate(down, scale_factor=2, mode="bilinear"))
        y = gate * x
        for stage in list(byot.scala)[:-1]:
            y = sep_conv(y, stage)
        f = y.mean((2, 3))
        return f, f @ byot.fc.weight.t() + byot.fc.bias

    want_f, want_logits = formula(x)
    torch.testing.assert_close(features, want_f)
    same(logits.sum() + features.square().sum(), want_logits.sum() + want_f.square().sum(), [x])


def test_byot_refuses_channels_that_are_not_a_power_of_two_apart():
    with pytest.raises(ConnectorConfigError, match="power of 2"):
        connector("byot", in_channels=3, out_channels=8, num_classes=3)
    with pytest.raises(ValueError, match="even height and width"):
        connector("byot", in_channels=2, out_channels=4, num_classes=3)(rand(1, 2, 5, 5, seed=23))


# ---- CRD with class-aware negatives --------------------------------------------------------------
def test_crd_exact_negatives_come_from_other_classes():
    torch.manual_seed(0)
    crd = loss("crd", num_data=12, feat_dim=4, nce_k=20, negatives="exact").double()
    classes = torch.arange(12) % 3
    for start in (0, 4, 8):  # one epoch: every sample's class is known afterwards
        idx = torch.arange(start, start + 4)
        crd(F.normalize(rand(4, 4, seed=start), dim=1), F.normalize(rand(4, 4, seed=start + 1),
                                                                   dim=1), idx, None, classes[idx])
    assert crd.labels.tolist() == classes.tolist()
    idx = torch.tensor([0, 4, 7, 11])
    contrast = crd.sample_exact(idx, classes[idx])
    assert contrast[:, 0].tolist() == idx.tolist()
    assert (classes[contrast[:, 1:]] != classes[idx].view(-1, 1)).all()


def test_crd_exact_value_is_the_nce_of_its_sampled_contrast():
    s, t = F.normalize(rand(4, 4, seed=30), dim=1), F.normalize(rand(4, 4, seed=31), dim=1)
    idx, target = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1])
    exact = loss("crd", num_data=8, feat_dim=4, nce_k=5, negatives="exact").double().eval()
    plain = loss("crd", num_data=8, feat_dim=4, nce_k=5).double().eval()
    plain.load_state_dict({k: v for k, v in exact.state_dict().items() if k != "labels"})
    sampler = loss("crd", num_data=8, feat_dim=4, nce_k=5, negatives="exact")
    torch.manual_seed(1)
    ours = exact(s, t, idx, None, target)
    torch.manual_seed(1)
    contrast = sampler.sample_exact(idx, target)
    torch.testing.assert_close(ours, plain(s, t, idx, contrast))
    # the first batch knows only its own classes: samples 0, 1 contrast with 2, 3 and back
    assert set(contrast[:2, 1:].flatten().tolist()) <= {2, 3}
    assert set(contrast[2:, 1:].flatten().tolist()) <= {0, 1}


def test_crd_exact_without_target_says_what_to_pass():
    crd = loss("crd", num_data=8, feat_dim=4, nce_k=5, negatives="exact")
    with pytest.raises(ValueError, match="target=batch.target"):
        crd(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]))


def test_crd_uniform_has_no_label_buffer():
    assert "labels" not in loss("crd", num_data=8, feat_dim=4).state_dict()


# ---- the catalog ---------------------------------------------------------------------------------
@pytest.mark.parametrize("component", PAPER_LOSSES + ADVERSARIAL, ids=lambda c: c.name)
def test_loss_entries_match_their_implementations(component):
    assert_implements(component)
    assert component.paper
    for option in component.options:
        if option.type.name in ("float", "int"):
            assert option.constraint is not None, (component.name, option.name)


@pytest.mark.parametrize("component", PAPER_CONNECTORS, ids=lambda c: c.name)
def test_connector_entries_declare_what_their_classes_take(component):
    assert_implements(component)
    assert component.paper and component.doc
    for option in component.options:
        if option.type.name in ("float", "int"):
            assert option.constraint is not None, (component.name, option.name)


@pytest.mark.parametrize("module", ["kdsl.catalog.paper_losses", "kdsl.catalog.adversarial_losses",
                                    "kdsl.catalog.paper_connectors"])
def test_catalog_does_not_import_torch(module):
    assert_imports_without_torch(module)


def test_new_entries_are_listed_in_their_groups():
    from kdsl.catalog.builtin import group_of

    groups = {c.name: group_of(c) for c in REGISTRY.all()}
    assert groups["fbkd"] == "features" and groups["zskt_attention"] == "features"
    assert groups["zskt_adversarial"] == "data-free"
    assert groups["token_kl"] == "language models" and groups["minilm"] == "language models"
    assert {groups[n] for n in ("abf", "byot", "fbkd_student", "fbkd_teacher")} == {
        "method connectors"}
