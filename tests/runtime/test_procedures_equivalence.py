"""Stages and phases equal the same procedure written out by hand in PyTorch (float64, atol 1e-10):
one step of each stage of a two-stage FitNets spec, and one DFAD step (a generator phase with a
negated L1, then a student phase), losses and gradients.

The hand-written side runs on copies of the models and computes the features by calling their
submodules (out-of-place ReLU, so it sees the BN outputs the in-place ReLUs of the real forward
overwrite)."""

from __future__ import annotations

import copy

import torch

import kdsl
from kdrt_models import ConvNet, TinyGenerator
from kdrt_util import (assert_close, assert_grads_equal, convnet_features, frozen_copy, kd_loss,
                       named_pairs, randomize_bn)

DT = torch.float64


def models(seed: int):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    student, teacher = ConvNet(4).to(DT), ConvNet(8).to(DT)
    randomize_bn(student, gen)
    randomize_bn(teacher, gen)
    return student, teacher


def inputs(seed: int, n: int = 6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=gen, dtype=DT)


FITNETS = """
student
teacher
record s_mid = output of student.bn1
record t_mid = output of teacher.bn1
record s_out = output of student
record t_out = output of teacher
connector regressor = conv1x1()

stage hint epochs 1 {
  loss hint = mse(regressor(s_mid), t_mid)
  optimize student.conv1, student.bn1, regressor
}
stage distil {
  loss kd = kl_div(s_out, t_out, tau=4)
}
"""


def fitnets(student, teacher, x):
    return kdsl.compile(kdsl.loads(FITNETS, "fitnets2.kd"), student=student, teacher=teacher,
                        example_input=x)


def test_two_stage_fitnets_hint_stage_equals_hand_written():
    student, teacher = models(1)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x = inputs(2)
    with fitnets(student, teacher, x) as d:
        ref_reg = copy.deepcopy(d.connectors["regressor"])
        assert d.stage == "hint"
        r = d.step(x, stage="hint", phase="step")
        r.loss.backward()
        assert list(r.losses) == ["hint"]
        trained = d.trainable_parameters("hint", "step")
        wanted = [student.conv1.weight, student.bn1.weight, student.bn1.bias] + \
            list(d.connectors["regressor"].parameters())
        assert [id(p) for p in trained] == [id(p) for p in wanted]

        with torch.no_grad():
            t_mid = convnet_features(ref_t, x)["b1"]
        s_mid = convnet_features(ref_s, x)["b1"]
        hint = ((ref_reg(s_mid) - t_mid) ** 2).mean()
        hint.backward()
        assert_close(r.loss, hint, "hint")
        s_params = dict(student.named_parameters())
        ref_params = dict(ref_s.named_parameters())
        n = assert_grads_equal([(k, s_params[k], ref_params[k]) for k in ("conv1.weight", "bn1.weight", "bn1.bias")])
        n += assert_grads_equal(named_pairs(d.connectors["regressor"], ref_reg, "regressor."))
        assert n >= 5
        # the hint does not reach the later layers and the head
        assert all(p.grad is None for name, p in student.named_parameters()
                   if name.startswith(("layer.", "fc.")))
        assert all(p.grad is None for p in teacher.parameters())


def test_two_stage_fitnets_distil_stage_equals_hand_written():
    student, teacher = models(3)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x = inputs(4)
    with fitnets(student, teacher, x) as d:
        d.begin_stage("distil")
        r = d.step(x, stage="distil")
        r.loss.backward()
        assert list(r.losses) == ["kd"]
    with torch.no_grad():
        t_logits = convnet_features(ref_t, x)["logits"]
    kd = kd_loss(convnet_features(ref_s, x)["logits"], t_logits, 4.0)
    kd.backward()
    assert_close(r.loss, kd, "kd")
    assert assert_grads_equal(named_pairs(student, ref_s)) == len(list(student.parameters()))


def test_hint_stage_leaves_the_head_and_later_layers_bit_identical():
    student, teacher = models(5)
    x = inputs(6)
    later = {k: v.detach().clone() for k, v in student.named_parameters() if k.startswith(("layer.", "fc."))}
    conv1 = student.conv1.weight.detach().clone()
    with fitnets(student, teacher, x) as d:
        opt = torch.optim.SGD(d.trainable_parameters("hint", "step"), lr=0.1, momentum=0.9,
                              weight_decay=5e-4)
        for i in range(3):
            opt.zero_grad()
            d.step(inputs(10 + i), stage="hint").loss.backward()
            opt.step()
    after = dict(student.named_parameters())
    for k, v in later.items():
        assert torch.equal(after[k], v), k
    assert not torch.equal(student.conv1.weight, conv1)  # the guided part did train


DFAD = """
student
teacher
generator gen
record s = output of student
record t = output of teacher
input = gen(noise(8, batch_size=6))
phase adversary {
  loss adv = l1(s, t) * -1
  optimize gen
}
phase imitate {
  loss imitate = l1(s, t)
  optimize student
}
train { steps_per_epoch = 1 }
"""


def test_dfad_step_equals_hand_written():
    student, teacher = models(7)
    torch.manual_seed(8)
    generator = TinyGenerator(8, 6).to(DT)
    ref_s, ref_t, ref_g = copy.deepcopy(student), frozen_copy(teacher), copy.deepcopy(generator)
    with kdsl.compile(kdsl.loads(DFAD, "dfad.kd"), student=student, teacher=teacher, gen=generator) as d:
        stage = d.procedure.stages[0]
        assert [p.name for p in stage.phases] == ["adversary", "imitate"]
        assert stage.phases[0].trains_input and not stage.phases[1].trains_input
        assert [id(p) for p in d.trainable_parameters(phase="adversary")] == [id(p) for p in generator.parameters()]
        assert [id(p) for p in d.trainable_parameters(phase="imitate")] == [id(p) for p in student.parameters()]
        torch.manual_seed(9)
        adv = d.step(phase="adversary")
        adv.loss.backward()
        gen_grads = {k: p.grad.clone() for k, p in generator.named_parameters()}
        for p in list(generator.parameters()) + list(student.parameters()):
            p.grad = None
        imitate = d.step(phase="imitate")
        imitate.loss.backward()
        assert all(p.grad is None for p in generator.parameters())  # the input is a constant here
        assert all(p.grad is None for p in teacher.parameters())

    torch.manual_seed(9)
    z = torch.randn(6, 8, dtype=DT)
    fake = ref_g(z)
    s_logits = convnet_features(ref_s, fake)["logits"]
    t_logits = convnet_features(ref_t, fake)["logits"]  # no no_grad: the generator learns through it
    ref_adv = -(s_logits - t_logits).abs().mean()
    ref_adv.backward()
    assert_close(adv.loss, ref_adv, "adversarial loss")
    assert_close(adv.losses["adv"], ref_adv, "weighted term")
    for k, q in ref_g.named_parameters():
        assert_close(gen_grads[k], q.grad, f"generator grad {k}")
    assert all(p.grad is None for p in ref_t.parameters())

    for p in ref_s.parameters():
        p.grad = None
    z = torch.randn(6, 8, dtype=DT)
    with torch.no_grad():
        fake = ref_g(z)
        t_logits = convnet_features(ref_t, fake)["logits"]
    ref_imitate = (convnet_features(ref_s, fake)["logits"] - t_logits).abs().mean()
    ref_imitate.backward()
    assert_close(imitate.loss, ref_imitate, "imitation loss")
    assert assert_grads_equal(named_pairs(student, ref_s)) == len(list(student.parameters()))
    # the generator's batch norm saw the same two batches
    assert_close(generator.bn.running_mean, ref_g.bn.running_mean, "generator running mean")
