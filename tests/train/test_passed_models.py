"""A model passed from Python keeps its own weights unless asked otherwise, in ``kdsl.compile``
and ``kdsl.train`` (issue #27.6): the spec's ``from "FILE"`` is for the model the spec builds."""

from __future__ import annotations

import torch

import kdsl
import kdsl.zoo
from train_helpers import KD_SPEC, ROOT, TEACHER_PT, assert_same_weights


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_compile_keeps_a_passed_teachers_weights_and_needs_no_spec_checkpoint():
    """The README's "Embed in Python" example on a fresh clone: the CIFAR teacher's checkpoint
    named by specs/fitnets.kd is not there, and the teacher passed in does not need it."""
    assert not (ROOT / "specs" / "checkpoints" / "resnet32x4_cifar100.pt").exists()
    student, teacher = kdsl.zoo.resnet8x4(num_classes=100), kdsl.zoo.resnet32x4(num_classes=100)
    before = _weights(teacher)
    spec = kdsl.load(str(ROOT / "specs" / "fitnets.kd"))
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=torch.randn(2, 3, 32, 32)) as d:
        result = d.step(torch.randn(2, 3, 32, 32), target=torch.tensor([1, 2]))
        assert torch.isfinite(result.loss)
    assert_same_weights(_weights(teacher), before)


def test_compile_loads_the_spec_checkpoint_into_a_passed_model_when_asked():
    teacher = kdsl.zoo.digits_teacher()
    spec = kdsl.load(KD_SPEC)
    with kdsl.compile(spec, teacher=teacher, load_weights=["teacher"]):
        assert_same_weights(_weights(teacher), torch.load(TEACHER_PT, weights_only=True))


def test_train_keeps_a_passed_teachers_weights(tmp_path):
    torch.manual_seed(3)
    teacher = kdsl.zoo.digits_teacher()
    before = _weights(teacher)
    result = kdsl.train(KD_SPEC, teacher=teacher, out=str(tmp_path / "run"), epochs=1, steps_per_epoch=1,
                        threads=1)
    assert_same_weights(_weights(teacher), before)  # frozen, and never loaded from teacher.pt
    assert result.teachers["teacher"]["top1"] < 50  # the random one passed, not the trained one


def test_train_loads_teacher_ckpt_into_a_passed_teacher(tmp_path):
    teacher = kdsl.zoo.digits_teacher()
    kdsl.train(KD_SPEC, teacher=teacher, teacher_ckpt=TEACHER_PT, out=str(tmp_path / "run"), epochs=1,
               steps_per_epoch=1, threads=1, eval_teachers=False)
    assert_same_weights(_weights(teacher), torch.load(TEACHER_PT, weights_only=True))


def test_a_teacher_built_from_a_reference_still_gets_the_spec_checkpoint(tmp_path):
    """--teacher REF (or teacher="REF") replaces the spec's factory, not its weights."""
    result = kdsl.train(KD_SPEC, teacher="kdsl.zoo:digits_teacher", out=str(tmp_path / "run"), epochs=1,
                        steps_per_epoch=1, threads=1)
    assert result.teachers["teacher"]["top1"] > 95  # teacher.pt, loaded into the built teacher
