"""Stages, phases, generators, functions and parameter control at run time: what each phase runs
and trains, freezes per stage, connector weights ``from`` files and ``frozen``, ``init`` copies,
channel inference that does not depend on the order of the losses."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import kdsl
from kdrt_models import ConvNet, CountingConvNet, TinyGenerator
from kdrt_util import assert_close, ce_loss, convnet_features, frozen_copy
from kdsl.core.diagnostics import KdslError

DT = torch.float64
ROOT = Path(__file__).resolve().parents[2]


def x_of(seed: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=DT)


def nets(student_cls=ConvNet):
    torch.manual_seed(0)
    return student_cls(4).to(DT), ConvNet(8).to(DT)


def compile_text(text: str, name: str = "t.kd", **models):
    return kdsl.compile(kdsl.loads(text, name), **models)


# ----------------------------------------------------------------------------- what runs
PARA = """
student
teacher
record t_feat = output of teacher.layer
record s_feat = output of student.layer
connector para = paraphraser(rate=0.5)
connector trans = translator()
stage pretrain epochs 1 {
  loss rec = mse(para.reconstruct(t_feat), t_feat)
  optimize para
}
stage transfer {
  loss ft = ft(trans(s_feat), para.encode(t_feat))
  optimize student, trans
}
"""


def test_a_stage_whose_losses_read_no_student_record_never_calls_the_student():
    student, teacher = nets(CountingConvNet)
    x = x_of(1)
    with compile_text(PARA, student=student, teacher=teacher, example_input=x) as d:
        stages = {s.name: s for s in d.procedure.stages}
        assert stages["pretrain"].phases[0].models_run == ["teacher"]
        assert stages["transfer"].phases[0].models_run == ["teacher", "student"]
        calls = student.calls
        for _ in range(2):
            r = d.step(x, stage="pretrain")
            r.loss.backward()
        assert student.calls == calls  # the student's forward never ran
        assert r.student_output is None and set(r.teacher_outputs) == {"teacher"}
        # the method's output is the paraphraser's reconstruction, trained alone in this stage
        para = d.connectors["para"]
        with torch.no_grad():
            t_feat = torch.relu(teacher.layer[1](teacher.layer[0](torch.relu(teacher.bn1(teacher.conv1(x))))))
        assert_close(r.loss, ((para.reconstruct(t_feat) - t_feat) ** 2).mean(), "reconstruction")
        assert [id(p) for p in d.trainable_parameters("pretrain")] == [id(p) for p in para.parameters()]
        d.step(x, stage="transfer").loss.backward()
        assert student.calls == calls + 1
        assert d.stage == "transfer"


def test_phase_none_needs_a_name_when_a_stage_has_several():
    student, teacher = nets()
    text = """
student
teacher
record s = output of student
record t = output of teacher
phase a { loss one = l1(s, t) }
phase b repeat 2 { loss two = mse(s, t) }
"""
    with compile_text(text, student=student, teacher=teacher) as d:
        assert [(p.name, p.repeat, p.losses) for p in d.procedure.stages[0].phases] == \
            [("a", 1, ["one"]), ("b", 2, ["two"])]
        with pytest.raises(KdslError, match="KD514"):
            d.step(x_of(2))
        with pytest.raises(KdslError, match="did you mean 'b'"):
            d.step(x_of(2), phase="bb")
        assert list(d.step(x_of(2), phase="b").losses) == ["two"]


# ----------------------------------------------------------------------------- generators
GEN = """
student
teacher
generator gen
record s = output of student
record t = output of teacher
input = gen(noise(8))
phase make { loss adv = l1(s, t) * -1
             optimize gen }
phase learn { loss kd = kl_div(s, detach(t)) }
train {
  steps_per_epoch = 2
  batch_size = 5
}
"""


def test_a_generator_input_is_dry_run_and_never_trained_by_default():
    student, teacher = nets()
    gen = TinyGenerator().to(DT)
    with compile_text(GEN, student=student, teacher=teacher, gen=gen) as d:
        # no example input: the dry run ran the generator's output through the models
        assert d.plan.records["s"].info.shape == (2, 5)
        assert d.batch_size == 5
        learn = d.procedure.stages[0].phase("learn")
        assert learn.models_run == ["gen", "teacher", "student"] and learn.needs_input
        assert not learn.trains_input
        ids = {id(p) for p in d.trainable_parameters(phase="learn")}
        assert ids == {id(p) for p in student.parameters()}
        assert set(d.trainable_models()) == {"student", "gen"}
        r = d.step(phase="learn")
        assert r.student_output.shape == (5, 5)
        r.loss.backward()
        assert all(p.grad is None for p in gen.parameters())


def test_gradients_reach_the_generator_through_the_frozen_teacher_only():
    student, teacher = nets()
    gen = TinyGenerator().to(DT)
    text = GEN.replace("loss adv = l1(s, t) * -1", "loss oh = cross_entropy(t, argmax(t, dim=1))")
    with compile_text(text, student=student, teacher=teacher, gen=gen) as d:
        torch.manual_seed(3)
        r = d.step(phase="make")
        r.loss.backward()
        assert r.student_output is None  # the losses read the teacher only
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        assert all(not p.requires_grad for p in teacher.parameters())
    torch.manual_seed(3)
    ref_g, ref_t = copy.deepcopy(gen), frozen_copy(teacher)
    logits = convnet_features(ref_t, ref_g(torch.randn(5, 8, dtype=DT)))["logits"]
    assert_close(r.loss, ce_loss(logits, logits.argmax(1)), "one-hot loss")


# ----------------------------------------------------------------------------- freezing
def test_freezes_hold_per_stage_and_are_lifted_on_close():
    student, teacher = nets()
    text = """
student
teacher
record s = output of student
record t = output of teacher
freeze student.conv1
stage one epochs 2 {
  loss kd = kl_div(s, t)
  freeze student.fc
}
stage two { loss kd2 = kl_div(s, t) }
"""
    d = compile_text(text, student=student, teacher=teacher)
    assert not student.conv1.weight.requires_grad and not student.fc.weight.requires_grad
    names = {id(p): n for n, p in student.named_parameters()}
    one = [names[id(p)] for p in d.trainable_parameters("one")]
    assert "conv1.weight" not in one and "fc.weight" not in one and "layer.0.weight" in one
    d.begin_stage("two")
    assert student.fc.weight.requires_grad and not student.conv1.weight.requires_grad
    assert "fc.weight" in [names[id(p)] for p in d.trainable_parameters("two")]
    assert [(s.name, a, b) for s, a, b in d.stage_ranges(10)] == [("one", 0, 2), ("two", 2, 10)]
    with pytest.raises(KdslError, match="KD220"):
        d.stage_ranges(1)
    d.close()
    assert all(p.requires_grad for p in student.parameters())


def test_a_plain_spec_is_one_implicit_stage_and_phase_with_the_plain_step():
    student, teacher = nets()
    text = """
student
teacher
record s = output of student
record t = output of teacher
loss kd = kl_div(s, t, tau=2)
loss ce = cross_entropy(s, batch.target) * 0.5
"""
    x, y = x_of(4), torch.tensor([0, 1, 2, 3])
    with compile_text(text, student=student, teacher=teacher) as d:
        (stage,) = d.procedure.stages
        assert not d.procedure.declared and stage.name == "main"
        assert [(p.name, p.losses, p.models_run) for p in stage.phases] == \
            [("step", ["kd", "ce"], ["teacher", "student"])]
        assert [id(p) for p in d.trainable_parameters()] == \
            [id(p) for p in d.parameters() if p.requires_grad]
        a = d.step(x, target=y)
        b = d.step(x, target=y, stage="main", phase="step")
        assert torch.equal(a.loss, b.loss)


# ----------------------------------------------------------------------------- connectors
def test_connector_weights_from_a_file_and_frozen(tmp_path):
    student, teacher = nets()
    x = x_of(5)

    base = """
student
teacher
record s = output of student.bn1
record t = output of teacher.bn1
connector reg = conv1x1() FROM
loss hint = mse(reg(s), t)
"""
    with compile_text(base.replace(" FROM", ""), student=student, teacher=teacher, example_input=x) as d:
        state = {k: torch.randn_like(v) for k, v in d.connectors["reg"].state_dict().items()}
    torch.save(state, tmp_path / "reg.pt")
    torch.save({"reg": state}, tmp_path / "stage.pt")  # a run's connectors/STAGE.pt
    spec_file = tmp_path / "s.kd"
    for source in ("reg.pt", "stage.pt"):
        spec_file.write_text(base.replace("FROM", f'from "{source}" frozen'))
        with kdsl.compile(str(spec_file), student=student, teacher=teacher, example_input=x) as d:
            reg = d.connectors["reg"]
            for k, v in reg.state_dict().items():
                assert torch.equal(v, state[k].to(v.dtype)), k
            assert all(not p.requires_grad for p in reg.parameters())
            assert not any(id(p) in {id(q) for q in reg.parameters()} for p in d.trainable_parameters())
            d.train()
            assert not reg.training and student.training
    spec_file.write_text(base.replace("FROM", 'from "missing.pt"'))
    with pytest.raises(KdslError) as info:
        kdsl.compile(str(spec_file), student=student, teacher=teacher, example_input=x)
    (diag,) = info.value.diagnostics
    assert diag.code == "KD509" and diag.span.line == 6 and "missing.pt" in diag.message


# ----------------------------------------------------------------------------- init
def test_init_copies_parameters_and_buffers_and_mismatches_are_located():
    student, teacher = ConvNet(8).to(DT), ConvNet(8).to(DT)
    text = """
student
teacher
record s = output of student
record t = output of teacher
init student.layer from teacher.layer
loss kd = kl_div(s, t)
"""
    teacher.layer[1].running_mean.fill_(0.25)
    with compile_text(text, student=student, teacher=teacher) as d:
        assert not torch.equal(student.layer[0].weight, teacher.layer[0].weight)
        d.apply_inits()
        for (k, v), w in zip(student.layer.state_dict().items(), teacher.layer.state_dict().values()):
            assert torch.equal(v, w), k
        assert student.layer[0].weight.requires_grad  # a copy, not a shared or frozen tensor
    small = ConvNet(4).to(DT)
    with pytest.raises(KdslError) as info:
        compile_text(text, student=small, teacher=teacher)
    (diag,) = info.value.diagnostics
    assert diag.code == "KD518" and diag.span.line == 6
    assert any("(8, 8, 3, 3) into (4, 4, 3, 3)" in h for h in diag.hints)
    bad = text.replace("teacher.layer", "teacher.layr")
    with pytest.raises(KdslError, match="did you mean 'layer'"):
        compile_text(bad, student=student, teacher=teacher)


# ----------------------------------------------------------------------------- bug 2
@pytest.mark.parametrize("swap", [False, True], ids=["as_written", "exit_losses_swapped"])
def test_connector_inference_does_not_depend_on_the_order_of_the_losses(swap):
    text = (ROOT / "specs" / "self_distill.kd").read_text()
    kd_line = next(line for line in text.splitlines() if line.startswith("loss exit_kd"))
    task_line = next(line for line in text.splitlines() if line.startswith("loss exit_task"))
    if swap:
        text = text.replace(kd_line, "@@").replace(task_line, kd_line).replace("@@", task_line)
    spec = kdsl.loads(text, "self_distill.kd")
    assert [loss.name for loss in spec.losses][:2] == (["exit_task", "exit_kd"] if swap else ["exit_kd", "exit_task"])
    torch.manual_seed(0)
    with kdsl.compile(spec, example_input=torch.zeros(2, 3, 32, 32)) as d:
        assert d.plan.connectors["exit"].options["out_features"] == 100
        assert [t.name for t in d.terms] == [loss.name for loss in spec.losses]
