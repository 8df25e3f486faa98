"""Errors found when binding a spec to models: a model neither passed nor built (KD507),
checkpoints (KD509), shapes on the example input (KD505), modules that never run (KD506). Each
failed compile leaves the models as they were."""

from __future__ import annotations

import collections
import os

import pytest
import torch

import kdsl
from kdrt_models import ConvNet, KitchenSink
from kdsl.runtime.recorders import hook_counts


def nets(seed=0):
    torch.manual_seed(seed)
    return ConvNet(4), ConvNet(8)


X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))

KD = """\
student
teacher{source}
record s_out = output of student
record t_out = output of teacher
loss kd = kl_div(s_out, t_out, tau=2)
"""


def errors(info):
    return [d.code for d in info.value.errors]


def test_model_neither_passed_nor_built_is_kd507():
    student, _ = nets()
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(KD.format(source=""), "t.kd"), student=student)
    assert errors(info) == ["KD507"]
    err = info.value.errors[0]
    assert "'teacher' was not given and has no factory" in err.message
    assert (err.span.line, err.span.column) == (2, 1)
    assert hook_counts(student) == {n: (0, 0) for n, _ in student.named_modules()}


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_is_loaded_relative_to_the_spec(tmp_path):
    student, teacher = nets(1)
    trained = ConvNet(8)
    torch.save(trained.state_dict(), tmp_path / "teacher.pt")
    spec_path = tmp_path / "kd.kd"
    spec_path.write_text(KD.format(source=' from "teacher.pt"'))
    with kdsl.compile(kdsl.load(spec_path), student=student, teacher=teacher, load_weights=["teacher"],
                      example_input=X) as d:
        for k, v in trained.state_dict().items():
            assert torch.equal(teacher.state_dict()[k], v), k
        r = d.step(X)
        with torch.no_grad():
            assert torch.allclose(r.teacher_outputs["teacher"], trained.eval()(X))


def test_checkpoint_in_a_wrapper_and_with_module_prefix(tmp_path):
    student, teacher = nets(2)
    trained = ConvNet(8)
    state = {"module." + k: v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pt")
    (tmp_path / "kd.kd").write_text(KD.format(source=' from "wrapped.pt"'))
    with kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"]):
        assert torch.equal(teacher.fc.weight, trained.fc.weight)


def test_checkpoint_missing_and_unexpected_keys_are_kd509(tmp_path):
    student, teacher = nets(3)
    state = ConvNet(8).state_dict()
    del state["fc.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    (tmp_path / "kd.kd").write_text(KD.format(source=' from "bad.pt"'))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"])
    assert errors(info) == ["KD509"]
    err = info.value.errors[0]
    assert "missing keys: fc.bias" in err.hints
    assert "unexpected keys: extra.weight" in err.hints
    assert err.span.line == 2
    # nothing was loaded
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_checkpoint_with_wrong_shapes_is_kd509(tmp_path):
    student, teacher = nets(4)
    torch.save(ConvNet(6).state_dict(), tmp_path / "narrow.pt")
    (tmp_path / "kd.kd").write_text(KD.format(source=' from "narrow.pt"'))
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"])
    assert errors(info) == ["KD509"]
    assert any("conv1.weight: checkpoint (6, 3, 3, 3) vs model (8, 3, 3, 3)" in h
               for h in info.value.errors[0].hints)


class Payload:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""

    def __init__(self) -> None:
        self.value = 1


def test_checkpoint_is_read_weights_only(tmp_path):
    student, teacher = nets(5)
    state = collections.OrderedDict(ConvNet(8).state_dict())
    torch.save({"state_dict": state, "payload": Payload()}, tmp_path / "pickle.pt")
    (tmp_path / "kd.kd").write_text(KD.format(source=' from "pickle.pt"'))
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"])
    assert errors(info) == ["KD509"]
    assert "tries to run code when loaded, and is refused" in info.value.errors[0].message
    assert "GLOBAL test_compile_errors.Payload" in info.value.errors[0].message
    assert any("weights_only=True" in h for h in info.value.errors[0].hints)


def test_missing_checkpoint_is_kd509(tmp_path):
    student, teacher = nets(6)
    (tmp_path / "kd.kd").write_text(KD.format(source=' from "nowhere.pt"'))
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"])
    assert errors(info) == ["KD509"]
    assert os.path.join(str(tmp_path), "nowhere.pt") in info.value.errors[0].message


# ----------------------------------------------------------------------------- dry run
def test_shape_mismatch_on_the_example_input_is_kd505_naming_both_shapes():
    student, teacher = nets(7)
    text = """\
student
teacher
record s_f = output of student.layer.1
record t_f = output of teacher.layer.1
loss hint = mse(s_f, t_f)
"""
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher, example_input=X)
    assert errors(info) == ["KD505"]
    err = info.value.errors[0]
    assert "loss 'hint' (mse)" in err.message
    assert "[2, 4, 6, 6]" in str(info.value) and "[2, 8, 6, 6]" in str(info.value)
    assert err.span.line == 5
    assert hook_counts(student) == {n: (0, 0) for n, _ in student.named_modules()}
    assert teacher.training


def test_shape_mismatch_without_example_input_is_kd505_at_the_first_step():
    student, teacher = nets(8)
    text = """\
student
teacher
record s_f = output of student.layer.1
record t_f = output of teacher.layer.1
loss hint = mse(s_f, t_f)
"""
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(X)
        assert errors(info) == ["KD505"]
        assert "[2, 4, 6, 6]" in str(info.value) and "[2, 8, 6, 6]" in str(info.value)


def test_module_that_never_runs_is_kd506():
    torch.manual_seed(0)
    student, teacher = KitchenSink(4), KitchenSink(6)
    text = """\
student
teacher
record s_out = output of student
record t_out = output of teacher
record s_u = output of student.unused
loss kd = kl_div(s_out[0], t_out[0])
"""
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher,
                     example_input=torch.randn(2, 3, 5, 5))
    assert errors(info) == ["KD506"]
    err = info.value.errors[0]
    assert "record 's_u'" in err.message and "never ran" in err.message
    assert err.span.line == 5
    assert hook_counts(student) == {n: (0, 0) for n, _ in student.named_modules()}


def test_module_that_never_runs_without_example_input_is_kd607_at_the_step():
    torch.manual_seed(0)
    student = KitchenSink(4)
    text = """\
student
record s_u = output of student.unused
record s_out = output of student
loss l = mse(s_u, s_u)
"""
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(torch.randn(2, 3, 5, 5))
        assert errors(info) == ["KD607"]
        assert "record 's_u' is empty" in info.value.errors[0].message


def test_a_failed_compile_gives_a_passed_model_its_weights_back(tmp_path):
    student, teacher = nets(5)
    trained = ConvNet(8)
    torch.save(trained.state_dict(), tmp_path / "teacher.pt")
    spec = KD.format(source=' from "teacher.pt"') + "record broken = output of student.no_such_layer\n"
    (tmp_path / "kd.kd").write_text(spec)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.load(tmp_path / "kd.kd"), student=student, teacher=teacher, load_weights=["teacher"])
    assert "KD501" in errors(info)
    # the checkpoint had been loaded before the bad path was found; the teacher is as it came in
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not torch.equal(before["fc.weight"], trained.state_dict()["fc.weight"])
