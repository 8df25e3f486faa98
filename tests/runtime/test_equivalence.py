"""A distiller's step equals the same step written out by hand in PyTorch (float64, atol 1e-10):
loss values, and gradients of every student and connector parameter.

The hand-written side runs on copies of the models, computes the features by calling their
submodules (out-of-place ReLU, so it sees the BN outputs the in-place ReLUs of the real forward
overwrite) and the losses from torch primitives. Each case runs with an example input (the dry run
calibrates) and without (the first step does)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import kdsl
from kdrt_models import ConvNet, HeadNet
from kdrt_util import (assert_close, assert_grads_equal, at_loss, ce_loss, convnet_features,
                       frozen_copy, headnet_logits, hint_loss, kd_loss, named_pairs, randomize_bn)

DT = torch.float64


def models(seed: int = 0, s_width: int = 4, t_width: int = 8, cls=ConvNet, **kw):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    student = cls(s_width, **kw).to(DT)
    teacher = cls(t_width, **kw).to(DT)
    randomize_bn(student, gen)
    randomize_bn(teacher, gen)
    return student, teacher


def batch(seed: int, n: int = 6, ncls: int = 5, hw: int = 6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, hw, hw, generator=gen, dtype=DT)
    y = torch.randint(0, ncls, (n,), generator=gen)
    return x, y


def compile_with(text: str, student, teacher, example, x):
    spec = kdsl.loads(text, "t.kd")
    return kdsl.compile(spec, student=student, teacher=teacher,
                        example_input=x if example else None)


EXAMPLE = pytest.mark.parametrize("example", [True, False], ids=["example_input", "first_step"])


# ----------------------------------------------------------------------------- (a) KD + CE
@EXAMPLE
def test_kd_on_logits_with_cross_entropy(example):
    student, teacher = models(1)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x, y = batch(2)
    text = """
student
teacher
record s_out = output of student
record t_out = output of teacher
loss kd = kl_div(s_out, t_out, tau=4) * 0.9
loss ce = cross_entropy(s_out, batch.target) * 0.1
"""
    with compile_with(text, student, teacher, example, x) as d:
        r = d.step(x, target=y)
        r.loss.backward()

    with torch.no_grad():
        t_logits = convnet_features(ref_t, x)["logits"]
    s_logits = convnet_features(ref_s, x)["logits"]
    kd = kd_loss(s_logits, t_logits, 4.0)
    ce = ce_loss(s_logits, y)
    total = 0.9 * kd + 0.1 * ce
    total.backward()

    assert_close(r.unweighted["kd"], kd, "kd")
    assert_close(r.unweighted["ce"], ce, "ce")
    assert_close(r.losses["kd"], 0.9 * kd, "weighted kd")
    assert_close(r.losses["ce"], 0.1 * ce, "weighted ce")
    assert_close(r.loss, total, "total")
    assert r.weights == {"kd": 0.9, "ce": 0.1}
    assert_close(r.student_output, s_logits, "student output")
    assert_close(r.teacher_outputs["teacher"], t_logits, "teacher output")
    assert assert_grads_equal(named_pairs(student, ref_s)) == 8
    assert all(p.grad is None for p in teacher.parameters())


# ----------------------------------------------------------------------------- (b) FitNets
@EXAMPLE
def test_fitnets_hint_with_conv1x1_connector(example):
    student, teacher = models(3)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x, y = batch(4)
    channels = "" if example else "in_channels=4, out_channels=8"
    text = f"""
student
teacher
record s_f = output of student.layer.1
record t_f = output of teacher.layer.1
record s_out = output of student
connector p = conv1x1({channels})
loss hint = l2(p(s_f), t_f, normalize=false) * 0.5
loss ce = cross_entropy(s_out, batch.target)
"""
    with compile_with(text, student, teacher, example, x) as d:
        connector = d.connectors["p"]
        reg = nn.Conv2d(4, 8, 1).to(DT)
        with torch.no_grad():  # the hand-written regressor starts where the connector starts
            reg.weight.copy_(connector.conv.weight)
            reg.bias.copy_(connector.conv.bias)
        r = d.step(x, target=y)
        r.loss.backward()
        # the BN output the hint reads is overwritten by the in-place ReLU: only it is copied
        assert d.recorders["s_f"].copy and d.recorders["t_f"].copy
        assert not d.recorders["s_out"].copy

    with torch.no_grad():
        t_f = convnet_features(ref_t, x)["b2"]
    fs = convnet_features(ref_s, x)
    hint = hint_loss(reg(fs["b2"]), t_f)
    ce = ce_loss(fs["logits"], y)
    total = 0.5 * hint + ce
    total.backward()

    assert_close(r.unweighted["hint"], hint, "hint")
    assert_close(r.unweighted["ce"], ce, "ce")
    assert_close(r.loss, total, "total")
    assert_grads_equal(named_pairs(student, ref_s))
    assert assert_grads_equal([("p.conv.weight", connector.conv.weight, reg.weight),
                               ("p.conv.bias", connector.conv.bias, reg.bias)]) == 2


# ----------------------------------------------------------------------------- (c) AT
@EXAMPLE
def test_attention_transfer_on_two_layers(example):
    student, teacher = models(5)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x, y = batch(6)
    text = """
student
teacher
record s_b1 = output of student.bn1
record t_b1 = output of teacher.bn1
record s_b2 = output of student.layer.1
record t_b2 = output of teacher.layer.1
record s_out = output of student
loss at1 = at(s_b1, t_b1) * 250
loss at2 = at(s_b2, t_b2) * 250
loss ce = cross_entropy(s_out, batch.target)
"""
    with compile_with(text, student, teacher, example, x) as d:
        r = d.step(x, target=y)
        r.loss.backward()

    with torch.no_grad():
        tf = convnet_features(ref_t, x)
    sf = convnet_features(ref_s, x)
    at1 = at_loss(sf["b1"], tf["b1"])
    at2 = at_loss(sf["b2"], tf["b2"])
    ce = ce_loss(sf["logits"], y)
    total = 250 * at1 + 250 * at2 + ce
    total.backward()

    # post-ReLU maps would give a different value: the check below is about the pre-ReLU ones
    assert not torch.allclose(at_loss(torch.relu(sf["b1"]), torch.relu(tf["b1"])), at1)
    assert_close(r.unweighted["at1"], at1, "at1")
    assert_close(r.unweighted["at2"], at2, "at2")
    assert_close(r.loss, total, "total")
    assert assert_grads_equal(named_pairs(student, ref_s)) == 8


# ----------------------------------------------------------------------------- (d) delivery
@EXAMPLE
def test_delivered_label_assignment(example):
    student, teacher = models(7, cls=HeadNet)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x, _ = batch(8, n=8)
    text = """
student
teacher
deliver output of method "kdrt_models:Head.get_targets" from teacher to student keep 4
record s_h0 = output of student.heads.0
record s_h1 = output of student.heads.1
record t_h0 = output of teacher.heads.0
loss a0 = cross_entropy(s_h0[0], s_h0[1])
loss a1 = cross_entropy(s_h1[0], s_h1[1]) * 0.5
loss kd = kl_div(s_h0[0], t_h0[0], tau=2) * 0.3
"""
    with compile_with(text, student, teacher, example, x) as d:
        r = d.step(x)
        r.loss.backward()

    with torch.no_grad():
        t0, t1 = headnet_logits(ref_t, x)
    s0, s1 = headnet_logits(ref_s, x)
    labels0, labels1 = t0.argmax(1), t1.argmax(1)
    # the delivery matters: the student's own assignment differs from the teacher's
    assert not torch.equal(s0.argmax(1), labels0) and not torch.equal(s1.argmax(1), labels1)
    # the student's pass got the teacher's labels, head 0's first
    assert torch.equal(r.student_output[0][1], labels0)
    assert torch.equal(r.student_output[1][1], labels1)
    a0, a1 = ce_loss(s0, labels0), ce_loss(s1, labels1)
    kd = kd_loss(s0, t0, 2.0)
    total = a0 + 0.5 * a1 + 0.3 * kd
    total.backward()

    assert_close(r.unweighted["a0"], a0, "a0")
    assert_close(r.unweighted["a1"], a1, "a1")
    assert_close(r.unweighted["kd"], kd, "kd")
    assert_close(r.loss, total, "total")
    assert_grads_equal(named_pairs(student, ref_s))


# ----------------------------------------------------------------------------- several steps
@EXAMPLE
def test_three_sgd_steps_with_schedule_and_negative_weight(example):
    student, teacher = models(9)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    channels = "" if example else "in_channels=4, out_channels=8"
    text = f"""
student
teacher
record s_out = output of student
record t_out = output of teacher
record s_b1 = output of student.bn1
record t_b1 = output of teacher.bn1
record s_b2 = output of student.layer.1
record t_b2 = output of teacher.layer.1
connector p = conv1x1({channels})
loss kd = kl_div(s_out, t_out, tau=3) * 0.7
loss hint = l2(p(s_b2), t_b2, normalize=false) * linear(0.2, 1.0, epochs=4)
loss at1 = at(s_b1, t_b1) * -2.5
loss ce = cross_entropy(s_out, batch.target)
"""
    x0, _ = batch(10)
    with compile_with(text, student, teacher, example, x0) as d:
        connector = d.connectors["p"]
        reg = nn.Conv2d(4, 8, 1).to(DT)
        with torch.no_grad():
            reg.weight.copy_(connector.conv.weight)
            reg.bias.copy_(connector.conv.bias)
        opt = torch.optim.SGD(d.parameters(), lr=0.05, momentum=0.9)
        ref_opt = torch.optim.SGD(list(ref_s.parameters()) + list(reg.parameters()), lr=0.05,
                                  momentum=0.9)
        for i in range(3):
            x, y = batch(20 + i)
            d.set_progress(epoch=i, total_epochs=4)
            opt.zero_grad()
            r = d.step(x, target=y)
            r.loss.backward()
            opt.step()

            ref_opt.zero_grad()
            with torch.no_grad():
                tf = convnet_features(ref_t, x)
            sf = convnet_features(ref_s, x)
            w_hint = 0.2 + 0.8 * i / 4
            terms = {"kd": 0.7 * kd_loss(sf["logits"], tf["logits"], 3.0),
                     "hint": w_hint * hint_loss(reg(sf["b2"]), tf["b2"]),
                     "at1": -2.5 * at_loss(sf["b1"], tf["b1"]),
                     "ce": ce_loss(sf["logits"], y)}
            total = sum(terms.values())
            total.backward()
            ref_opt.step()

            assert r.weights == pytest.approx({"kd": 0.7, "hint": w_hint, "at1": -2.5, "ce": 1.0},
                                              abs=1e-15)
            assert r.losses["at1"].item() < 0
            for name, value in terms.items():
                assert_close(r.losses[name], value, f"step {i}: {name}")
            assert_close(r.loss, total, f"step {i}: total")
            for name, p, q in named_pairs(student, ref_s):
                assert_close(p.detach(), q.detach(), f"step {i}: {name}")
            assert_close(connector.conv.weight.detach(), reg.weight.detach(), f"step {i}: p.weight")
            assert_close(connector.conv.bias.detach(), reg.bias.detach(), f"step {i}: p.bias")

    # the dry run left no trace: running statistics match the hand-written run's three updates
    for (name, b), (_, c) in zip(student.named_buffers(), ref_s.named_buffers()):
        assert torch.equal(b, c) if b.dtype == torch.long else torch.allclose(b, c, atol=1e-10, rtol=0), name
    for (name, b), (_, c) in zip(teacher.named_buffers(), ref_t.named_buffers()):
        assert torch.equal(b, c), name
