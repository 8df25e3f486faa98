"""What kdsl installs comes off again: after close(), after an exception in the middle of a pass
inside ``with kdsl.compile(...)``, after a failed compile, with two distillers open at once.

"Off again" means: every model has exactly the forward hooks and pre-hooks it had (its own hooks
still there and still called), every patched class attribute and module-level function is the
original object (``vars(owner)[name] is original``; an inherited method is absent from the
subclass again), and frozen teachers have their ``training`` flags and ``requires_grad`` back."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import kdrt_models
import kdrt_ops
import kdsl
from kdrt_models import BaseHead, Head, KitchenSink, MaskedBlock
from kdsl.runtime.recorders import hook_counts

# Every record kind, and a delivery. Line numbers matter to nothing here.
FULL = """
import "kdrt_ops"
student
teacher
record s_out    = output of student
record t_out    = output of teacher
record s_bn     = output of student.bn
record t_bn     = output of teacher.bn
record s_in     = input of student.block
record s_mask   = input "mask" of student.block
record s_gain   = input "gain" of student.block
record s_sh1    = output of student.shared call 1
record s_shall  = output of student.shared all calls
record s_assign = output of method "kdrt_models:Head.assign" in student
record t_a_in   = input 0 of method "kdrt_models:Head.assign" in teacher
record s_norm   = output of method "kdrt_models:Head.normalize" in student
record s_gain_m = output of method "kdrt_models:Head.gain" in student
record s_rs     = output of function "kdrt_ops:resize" in student
record s_size   = input "size" of function "kdrt_ops:resize" in student
record s_sc_in  = input 0 of function "kdrt_ops:scale" in student
record s_w      = param student.head.fc.weight
deliver output of method "kdrt_models:Head.get_targets" from teacher to student keep 4
loss kd = kl_div(s_out[0], t_out[0], tau=2)
loss ce = cross_entropy(s_out[0], s_out[1])
"""

# (owner, attribute) pairs that FULL patches; Head's inherited ones are not in vars(Head)
PATCHED = [(Head, "assign"), (Head, "normalize"), (Head, "gain"), (Head, "get_targets"),
           (BaseHead, "get_targets"), (BaseHead, "normalize"), (BaseHead, "gain"),
           (kdrt_ops, "resize"), (kdrt_ops, "scale"), (kdrt_models, "resize"),
           (kdrt_models, "scale")]
OWNERS = [Head, BaseHead, MaskedBlock, kdrt_ops, kdrt_models]


class Snapshot:
    """Hooks, attributes of the patched owners, and flags, taken before compiling."""

    def __init__(self, *models: nn.Module) -> None:
        self.models = models
        self.hooks = [hook_counts(m) for m in models]
        self.hook_objects = [{n: (list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
                              for n, m in model.named_modules()} for model in models]
        self.attrs = [(owner, dict(vars(owner))) for owner in OWNERS]
        self.training = [{n: m.training for n, m in model.named_modules()} for model in models]
        self.grad = [{n: p.requires_grad for n, p in model.named_parameters()} for model in models]

    def assert_restored(self) -> None:
        for model, hooks, objects in zip(self.models, self.hooks, self.hook_objects):
            assert hook_counts(model) == hooks
            now = {n: (list(m._forward_hooks.values()), list(m._forward_pre_hooks.values()))
                   for n, m in model.named_modules()}
            assert now.keys() == objects.keys()
            for name in now:  # the same hook objects, in the same order
                assert all(a is b for a, b in zip(now[name][0], objects[name][0])), name
                assert all(a is b for a, b in zip(now[name][1], objects[name][1])), name
        for owner, attrs in self.attrs:
            now = dict(vars(owner))
            assert now.keys() == attrs.keys(), (owner, set(now) ^ set(attrs))
            for name, value in attrs.items():
                assert now[name] is value, f"{owner}.{name} is not the original object"
        for model, training, grad in zip(self.models, self.training, self.grad):
            assert {n: m.training for n, m in model.named_modules()} == training
            assert {n: p.requires_grad for n, p in model.named_parameters()} == grad


def pair(seed: int = 0):
    torch.manual_seed(seed)
    student, teacher = KitchenSink(4), KitchenSink(6)
    # mixed flags on the teacher, to be restored exactly
    teacher.train()
    teacher.head.eval()
    teacher.conv.weight.requires_grad_(False)
    # the user's own hooks, which must survive
    calls = []
    student.bn.register_forward_hook(lambda m, a, o: calls.append("s.bn"))
    student.block.register_forward_pre_hook(lambda m, a: calls.append("s.block"))
    teacher.shared.register_forward_hook(lambda m, a, o: calls.append("t.shared"))
    return student, teacher, calls


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.allclose(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(p, q) for p, q in zip(a, b))
    return a == b


def x_(seed: int = 1):
    return torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(seed))


def test_full_spec_patches_what_it_says():
    """While open, the owners listed in PATCHED really are patched (so the restore checks below
    check something), and the inherited ones are new attributes of the subclass."""
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    assert "normalize" not in vars(Head) and "get_targets" not in vars(Head)
    with kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher,
                      example_input=x_()) as d:
        for owner, name in [(Head, "assign"), (Head, "normalize"), (Head, "gain"),
                            (Head, "get_targets"), (kdrt_ops, "resize"), (kdrt_ops, "scale"),
                            (kdrt_models, "resize"), (kdrt_models, "scale")]:
            assert name in vars(owner)
            assert vars(owner)[name] is not snap.attrs[OWNERS.index(owner)][1].get(name), (owner, name)
        assert hook_counts(student) != snap.hooks[0]
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        d.step(x_(2))
    snap.assert_restored()


def test_every_record_kind_records_then_close_restores():
    student, teacher, calls = pair()
    snap = Snapshot(student, teacher)
    x = x_()
    d = kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher, example_input=x)
    # inspect what each record holds, between the passes and the loss graph
    with d.teacher_pass() as t:
        t_out = t(x)
    with d.student_pass() as s:
        s_out = s(x)
    rec = {name: r.read() for name, r in d.recorders.items()}
    with torch.no_grad():
        h = torch.relu(student.bn(student.conv(x)))
        t_h = torch.relu(teacher.bn(teacher.conv(x)))
    # (the BN calls above ran outside any pass: they recorded nothing)
    assert len(d.recorders["s_bn"].entries) == 1
    assert torch.equal(rec["s_out"][0], s_out[0]) and torch.equal(rec["t_out"][0], t_out[0])
    assert torch.allclose(torch.relu(rec["s_bn"]), h) and (rec["s_bn"] < 0).any()
    assert torch.allclose(torch.relu(rec["t_bn"]), t_h)
    assert torch.allclose(rec["s_in"], h) and rec["s_in"].shape == (3, 4, 5, 5)
    assert torch.equal(rec["s_mask"], (rec["s_in"][:, :1] > 0).to(x.dtype))
    assert rec["s_gain"] == 1.0
    assert isinstance(rec["s_shall"], list) and len(rec["s_shall"]) == 2
    assert rec["s_sh1"] is rec["s_shall"][1]
    assert torch.allclose(rec["s_sh1"], student.shared(rec["s_shall"][0]))
    assert rec["s_assign"].shape == (3, 3)
    assert rec["t_a_in"].shape == (3, 6)
    assert torch.allclose(rec["s_gain_m"], rec["s_assign"] * Head.GAIN)
    assert (rec["s_norm"].norm(dim=1) < 1).all()
    with torch.no_grad():
        assert torch.allclose(rec["s_assign"], student.head.fc(rec["s_norm"]))
    assert rec["s_rs"].shape == (3, 4, 4, 4)
    assert rec["s_size"] == (4, 4)
    assert torch.equal(rec["s_sc_in"], rec["s_rs"])
    assert rec["s_w"] is student.head.fc.weight
    # the student's targets are the teacher's
    assert torch.equal(s_out[1], t_out[1])
    r = d.compute_losses()
    assert torch.isfinite(r.loss)
    assert "s.bn" in calls and "t.shared" in calls
    d.close()
    snap.assert_restored()
    d.close()  # twice is harmless
    snap.assert_restored()
    calls.clear()
    student(x)
    teacher(x)
    assert calls == ["s.bn", "s.block", "t.shared", "t.shared"]


def test_patched_methods_behave_like_the_originals():
    """Own, inherited, static and class methods and both function bindings, patched, compute what
    they computed before: the models' outputs are unchanged outside a pass and in a teacher's."""
    student, teacher, _ = pair()
    x = x_()
    student.eval()
    teacher.eval()
    with torch.no_grad():
        s_before, t_before = student(x), teacher(x)
    with kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher) as d:
        with torch.no_grad():
            s_outside, t_outside = student(x), teacher(x)
        with d.teacher_pass() as t:
            t_inside = t(x)
        d._end_step()
    for a, b in [(s_outside, s_before), (t_outside, t_before), (t_inside, t_before)]:
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("who", ["student", "teacher"])
def test_exception_mid_pass_inside_with_block(who):
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    spec = kdsl.loads(FULL, "t.kd")
    with pytest.raises(RuntimeError, match="failed on purpose"):
        with kdsl.compile(spec, student=student, teacher=teacher, example_input=x_()) as d:
            d.step(x_(2))
            (student if who == "student" else teacher).fail = True
            d.step(x_(3))
    assert d.closed
    snap.assert_restored()


def test_exception_mid_pass_keyword_flag_then_the_next_step_works():
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    with kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(RuntimeError, match="failed on purpose"):
            d.step(x_(2), fail=True)
        # nothing stayed active or recorded; the next step is a whole step
        assert d._state.active is None
        assert all(not r.entries for n, r in d.recorders.items() if n != "s_w")
        assert all(not q.queue for q in d.deliveries)
        r = d.step(x_(3))
        assert torch.isfinite(r.loss)
    snap.assert_restored()


LATE_FAILURES = {
    # a bad module path in the last record, after every other kind was installed
    "bad_path": ("record s_bad = output of student.head.fc2\n", "KD501", False),
    # a method reference that does not resolve
    "bad_method": ('record s_bad = output of method "kdrt_models:Head.nope" in student\n', "KD503", False),
    # an input name the function does not take
    "bad_input": ('record s_bad = input "sz" of function "kdrt_ops:resize" in student\n', "KD512", False),
    # a function outside the models' code that the spec does not import (refused unimported)
    "outside_reach": ('record s_bad = output of function "json:dumps" in student\n', "KD520", False),
    # a module that never runs on the example input (dry run)
    "never_runs": ("record s_bad = output of student.unused\n", "KD506", True),
    # a loss whose inputs do not fit (loss graph, after the dry run)
    "shapes": ("loss bad = mse(s_bn, t_bn)\n", "KD505", True),
}


@pytest.mark.parametrize("case", sorted(LATE_FAILURES))
def test_failed_compile_leaves_nothing_behind(case):
    extra, code, dry = LATE_FAILURES[case]
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    spec = kdsl.loads(FULL + extra, "t.kd")
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(spec, student=student, teacher=teacher, example_input=x_() if dry else None)
    assert code in {d.code for d in info.value.errors}, str(info.value)
    snap.assert_restored()


def test_failed_dry_run_leaves_nothing_behind():
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    student.fail = True
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher, example_input=x_())
    assert [d.code for d in info.value.errors] == ["KD516"]
    assert "failed on purpose" in str(info.value)
    student.fail = False
    snap.assert_restored()


@pytest.mark.parametrize("order", ["first_closes_first", "second_closes_first"])
def test_two_distillers_on_the_same_models(order):
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    spec = kdsl.loads(FULL, "t.kd")
    x = x_()
    d1 = kdsl.compile(spec, student=student, teacher=teacher, example_input=x)
    d2 = kdsl.compile(spec, student=student, teacher=teacher, example_input=x)

    # d1's passes record into d1 only
    with d1.teacher_pass() as t:
        t(x)
    with d1.student_pass() as s:
        s(x)
    assert all(r.entries for n, r in d1.recorders.items() if n != "s_w")
    assert not any(r.entries for n, r in d2.recorders.items() if n != "s_w")
    assert not d2.deliveries[0].queue
    v1 = {n: r.read() for n, r in d1.recorders.items()}
    d1.compute_losses()

    # and d2's into d2 only, each record the same value (functions through their second binding too)
    with d2.teacher_pass() as t:
        t(x)
    with d2.student_pass() as s:
        s(x)
    assert not any(r.entries for n, r in d1.recorders.items() if n != "s_w")
    v2 = {n: r.read() for n, r in d2.recorders.items()}
    assert v1.keys() == v2.keys()
    for name in v1:
        assert same(v1[name], v2[name]), name
    d2.compute_losses()

    r1, r2 = d1.step(x, target=None), d2.step(x)
    assert torch.allclose(r1.loss, r2.loss)
    first, second = (d1, d2) if order == "first_closes_first" else (d2, d1)
    first.close()
    # the other one still works, and the teacher stays frozen for it
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    r = second.step(x)
    assert torch.allclose(r.loss, r1.loss)
    assert all(name in vars(owner) for owner, name in [(Head, "normalize"), (kdrt_models, "resize")])
    second.close()
    snap.assert_restored()


def test_closing_twice_and_stepping_after_close():
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    d = kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher)
    d.step(x_())
    d.close()
    d.close()
    snap.assert_restored()
    with pytest.raises(kdsl.KdslError) as info:
        d.step(x_())
    assert info.value.errors[0].code == "KD609"
    snap.assert_restored()


def test_garbage_collected_distiller_keeps_models_usable():
    """A closed distiller that is dropped leaves the models as they were (nothing keyed by id()
    lingers in the patch table)."""
    from kdsl.runtime.patches import PATCHES

    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    before = dict(PATCHES._patches)
    with kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher) as d:
        d.step(x_())
        assert len(PATCHES._patches) > len(before)
    del d
    gc.collect()
    assert PATCHES._patches == before
    snap.assert_restored()


@pytest.mark.parametrize("record_on, deliver_on", [("Head", "BaseHead"), ("BaseHead", "Head")])
def test_a_base_class_and_a_subclass_patched_at_once(record_on, deliver_on):
    """A record on one of ``Head.get_targets`` / ``BaseHead.get_targets`` (an inherited method)
    and a delivery on the other: both see the calls through Head instances, whichever class was
    patched first (records are installed before deliveries), and both classes come back."""
    student, teacher, _ = pair()
    snap = Snapshot(student, teacher)
    text = f"""
student
teacher
record t_tg = output of method "kdrt_models:{record_on}.get_targets" in teacher
record s_out = output of student
record t_out = output of teacher
deliver output of method "kdrt_models:{deliver_on}.get_targets" from teacher to student
loss kd = kl_div(s_out[0], t_out[0])
"""
    x = x_()
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher, example_input=x) as d:
        with d.teacher_pass() as t:
            t_out = t(x)
        with d.student_pass() as s:
            s_out = s(x)
        assert torch.equal(d.recorders["t_tg"].read(), t_out[1])
        assert not torch.equal(s_out[0].argmax(1), t_out[1])  # the student's own would differ
        assert torch.equal(s_out[1], t_out[1])  # delivered
        d.compute_losses()
    snap.assert_restored()


def test_a_run_that_shards_nothing_does_not_import_fsdp(monkeypatch):
    """The dry run and evaluation put FSDP2 units back in their sharded state; a run without one
    (FSDP2 never imported, so none can exist) skips that, and with it FSDP's import (~0.7 s CPU)."""
    import sys

    monkeypatch.delitem(sys.modules, "torch.distributed.fsdp", raising=False)  # put back afterwards
    student, teacher, _ = pair()
    with kdsl.compile(kdsl.loads(FULL, "t.kd"), student=student, teacher=teacher, example_input=x_()) as d:
        d.step(x_(2))
    assert "torch.distributed.fsdp" not in sys.modules
