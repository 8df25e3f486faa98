"""Copies of compiled models (issue #13, item 8): ``copy.deepcopy`` of a hooked model used to copy
kdsl's hooks, which then fed the original distiller, and ``torch.save(model)`` failed on a local
closure. Now every copy (deepcopy, pickle round trip, ``torch.save``/``torch.load``) carries only
inert hooks, the original keeps recording, and saving works while compiled."""

from __future__ import annotations

import copy
import io
import pickle

import torch
from torch import nn

import kdrt_ops
import kdsl
from kdrt_models import KitchenSink
from kdsl.runtime.recorders import InertHook

ZOO = """student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher")
record s     = output of student
record t     = output of teacher
record s_in  = input of student.fc
record s_mid = output of student.layer2
loss kd  = kl_div(s, t)
loss ce  = cross_entropy(s, batch.target)
loss fit = mse(s_in, detach(s_in)) * 0
"""

PATCHING = """import "kdrt_ops"
student
teacher
record s_out  = output of student
record t_out  = output of teacher
record s_bn   = output of student.bn
record s_mask = input "mask" of student.block
record s_as   = output of method "kdrt_models:Head.assign" in student
record s_norm = output of method "kdrt_models:Head.normalize" in student
record s_rs   = output of function "kdrt_ops:resize" in student
deliver output of method "kdrt_models:Head.get_targets" from teacher to student keep 4
loss kd = kl_div(s_out[0], t_out[0], tau=2)
"""


def _kdsl_hooks(model: nn.Module):
    """Every hook object on ``model``'s modules that kdsl put there (or a copy of one)."""
    found = []
    for m in model.modules():
        for hook in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]:
            if type(hook).__module__.startswith("kdsl."):
                found.append(hook)
    return found


def _copies(model: nn.Module):
    """The model deep-copied, pickled and saved with torch.save (then loaded back)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return {"deepcopy": copy.deepcopy(model), "pickle": pickle.loads(pickle.dumps(model)),
            "torch.save": torch.load(buffer, weights_only=False)}


def _digits_spec():
    return kdsl.loads(ZOO, "zoo.kd")


def test_zoo_model_copies_carry_inert_hooks_and_feed_nothing():
    torch.manual_seed(0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    with kdsl.compile(_digits_spec(), example_input=x[:2]) as d:
        student = d.student
        assert len(_kdsl_hooks(student)) >= 3 and not any(isinstance(h, InertHook)
                                                          for h in _kdsl_hooks(student))
        for how, clone in _copies(student).items():
            hooks = _kdsl_hooks(clone)
            assert hooks and all(isinstance(h, InertHook) for h in hooks), how
            # the copy runs inside the student's pass: the original's records stay empty
            with d.student_pass():
                out = clone(x)
            assert all(r.entries == [] for r in d.recorders.values() if hasattr(r, "entries")), how
            assert torch.equal(out, student(x)), how  # same weights, same output
        result = d.step(x, target=y)  # the original still records and computes
        assert torch.isfinite(result.loss) and set(result.losses) == {"kd", "fit", "ce"}
    assert _kdsl_hooks(student) == []  # closing removed the originals' hooks; copies are their own


def test_copies_of_a_model_with_patched_methods_and_functions():
    torch.manual_seed(0)
    student, teacher = KitchenSink(4), KitchenSink(6)
    x = torch.randn(3, 3, 5, 5)
    with kdsl.compile(kdsl.loads(PATCHING, "p.kd"), student=student, teacher=teacher,
                      example_input=x) as d:
        expected = student(x)  # outside a pass: patched methods pass calls through
        student.helper = kdrt_ops.resize  # the patched function, held by the model
        for how, clone in _copies(student).items():
            assert all(isinstance(h, InertHook) for h in _kdsl_hooks(clone)), how
            assert len(_kdsl_hooks(clone)) == 3, how  # s_out, s_bn, s_mask: module hooks only
            out = clone(x)
            assert all(torch.equal(a, b) for a, b in zip(out, expected)), how
            assert clone.helper(torch.ones(1, 1, 2, 2), size=(1, 1)).shape == (1, 1, 1, 1)
        result = d.step(x)
        assert torch.isfinite(result.loss)
    del student.helper
    assert kdrt_ops.resize.__module__ == "kdrt_ops" and not hasattr(kdrt_ops.resize, "__wrapped__")


def test_a_compiled_model_saved_whole_loads_after_close():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    buffer = io.BytesIO()
    with kdsl.compile(_digits_spec(), example_input=x) as d:
        torch.save(d.student, buffer)
        expected = d.student(x)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), expected)
    # a loaded copy can be compiled again, with hooks of its own
    with kdsl.compile(_digits_spec(), student=loaded, example_input=x) as d2:
        assert d2.step(x, target=torch.tensor([1, 2])).loss.isfinite()
