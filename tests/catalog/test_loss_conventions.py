"""Loss conventions of real configs (issue #20, item 13): dkd with MMRazor's legacy batch-sum
reduction, against the formula and against torch's own legacy kl_div rule; mse and l2 whose inputs
broadcast as torch broadcasts them (BYOT), against torch, checked, and shown by `kdsl explain`."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

import kdsl
from kdsl.zoo import digits_cnn, digits_teacher
from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY
from kdsl.convert.losses import MMRAZOR
from kdsl.core.diagnostics import KdslError
from tests.catalog.test_logit_losses import assert_same, dkd_formula, labels, logits


def build(name, **options):
    return instantiate(REGISTRY.get("loss", name), **options)


def mmrazor_legacy_dkd(s, t, y, alpha, beta, tau, reduction):
    """DKD computed as MMRazor's DKDLoss does: masks, then torch's kl_div with size_average=False
    beside ``reduction`` (torch's legacy rule decides what that reduces to)."""
    gt = torch.zeros_like(s).scatter_(1, y.view(-1, 1), 1.0)

    def kl(log_q, p):
        with warnings.catch_warnings():  # size_average is deprecated: that is the point here
            warnings.simplefilter("ignore")
            return F.kl_div(log_q, p, size_average=False, reduction=reduction) * tau ** 2

    def binary(p):
        return torch.cat([(p * gt).sum(1, keepdim=True), (p * (1 - gt)).sum(1, keepdim=True)], 1)

    tckd = kl(torch.log(binary(F.softmax(s / tau, 1))), binary(F.softmax(t / tau, 1)))
    nckd = kl(F.log_softmax(s / tau - 1000.0 * gt, 1), F.softmax(t / tau - 1000.0 * gt, 1))
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("form", ["log_space", "mmrazor"])
@pytest.mark.parametrize("alpha, beta, tau", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_summed_over_the_batch_is_the_formula_times_n_and_mmrazors_legacy_sum(form, alpha, beta, tau):
    n = 7
    s, t, y = logits(n, 6, seed=21), logits(n, 6, seed=22), labels(n, 6, seed=4)
    loss = build("dkd", alpha=alpha, beta=beta, tau=tau, form=form, reduction="sum")(s, t, y)
    assert_same(loss, n * dkd_formula(s, t, y, alpha, beta, tau), (s,))
    for mmrazor_reduction in ("sum", "mean", "none"):  # all three sum under size_average=False
        assert_same(loss, mmrazor_legacy_dkd(s, t, y, alpha, beta, tau, mmrazor_reduction), (s,))
    batchmean = build("dkd", alpha=alpha, beta=beta, tau=tau, form=form)(s, t, y)
    assert_same(batchmean, mmrazor_legacy_dkd(s, t, y, alpha, beta, tau, "batchmean"), (s,))


def test_converting_mmrazors_dkd_keeps_its_reduction():
    form = MMRAZOR["DKDLoss"]
    assert form.options({"tau": 4.0, "reduction": "mean"}) == ({"tau": 4.0, "reduction": "sum", "form": "mmrazor"}, [])
    assert form.options({"reduction": "batchmean"})[0]["reduction"] == "batchmean"


@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean"])
def test_mse_broadcasts_as_torch_does(reduction):
    s = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    loss = build("mse", reduction=reduction, broadcast=True)(s, t)
    with warnings.catch_warnings():  # torch warns that the sizes differ, then broadcasts
        warnings.simplefilter("ignore")
        want = F.mse_loss(s, t, reduction="sum" if reduction == "batchmean" else reduction)
    assert_same(loss, want / (4 if reduction == "batchmean" else 1), (s, t))
    same = torch.randn(4, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(build("mse", broadcast=True)(s, same), F.mse_loss(s, same), rtol=0, atol=0)


def test_l2_broadcasts_each_sample_normalized_over_its_own_elements():
    s = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 6, dtype=torch.float64, requires_grad=True)  # one prototype for every sample
    loss = build("l2", broadcast=True, mult=2.0)(s, t)
    want = ((2 * s / s.norm(dim=1, keepdim=True) - 2 * t / t.norm(dim=1, keepdim=True)) ** 2).sum() / 5
    assert_same(loss, want, (s, t))
    plain = torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(build("l2", broadcast=True)(s, plain), build("l2")(s, plain), rtol=0, atol=0)


SPEC = """
student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher")
record s = output of student.layer2
record t = output of teacher.avgpool
connector proj = conv1x1(out_channels=64)
loss feat = mse(proj(s), t{options})
"""


def test_broadcasting_inputs_are_checked_and_explain_shows_their_shapes():
    from kdsl.reports.explain import losses_table

    student, teacher = digits_cnn(), digits_teacher()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(KdslError) as refused:  # [2, 64, 4, 4] against [2, 64, 1, 1]
        kdsl.compile(kdsl.loads(SPEC.format(options="")), example_input=x, student=student, teacher=teacher)
    assert "KD505" in str(refused.value) and "or set broadcast=true: they broadcast" in str(refused.value)
    spec = kdsl.loads(SPEC.format(options=", broadcast=true"))
    with kdsl.compile(spec, example_input=x, student=student, teacher=teacher) as distiller:
        console = Console(file=io.StringIO(), width=400, no_color=True)
        console.print(losses_table(distiller.plan))
        result = distiller.step(x)
    assert "preds_S and preds_T broadcast (torch's rules): [2, 64, 4, 4] with [2, 64, 1, 1] -> [2, 64, 4, 4]" \
        in console.file.getvalue()
    assert torch.isfinite(result.loss)
