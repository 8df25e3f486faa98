"""Runtime semantics: which pass a record listens to, call N / all calls, in-place overwrites,
deliveries, frozen and trainable teachers, several teachers or none, per-step buffers,
connectors, errors at step time, the manual-passes API."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

import kdsl
from kdrt_models import ConvNet, KitchenSink, Proposer
from kdrt_util import (assert_close, assert_grads_equal, at_loss, ce_loss, convnet_features,
                       frozen_copy, kd_loss, named_pairs, randomize_bn)

DT = torch.float64


def convnets(seed=0, s_width=4, t_width=8, dtype=DT):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    s, t = ConvNet(s_width).to(dtype), ConvNet(t_width).to(dtype)
    randomize_bn(s, gen)
    randomize_bn(t, gen)
    return s, t


def images(seed=0, n=4, dtype=DT):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 6, 6, generator=gen, dtype=dtype), torch.randint(0, 5, (n,), generator=gen)


def held(d) -> dict:
    """What each recorder and delivery holds (params aside): must be nothing between steps."""
    out = {n: len(r.entries) for n, r in d.recorders.items() if hasattr(r, "entries")}
    out.update({f"delivery {i}": len(q.queue) for i, q in enumerate(d.deliveries)})
    return {k: v for k, v in out.items() if v}


# ----------------------------------------------------------------------------- which pass
SHARED_CLASS = """
student
teacher
record s_a   = output of method "kdrt_models:Head.assign" in student
record t_a   = output of method "kdrt_models:Head.assign" in teacher
record s_in  = input 0 of method "kdrt_models:Head.assign" in student
record s_out = output of student
record t_out = output of teacher
loss kd = kl_div(s_out[0], t_out[0])
"""


def test_method_records_on_a_shared_class_never_mix():
    torch.manual_seed(0)
    student, teacher = KitchenSink(4, ncls=3), KitchenSink(6, ncls=3)
    x = torch.randn(2, 3, 5, 5)
    with kdsl.compile(kdsl.loads(SHARED_CLASS, "t.kd"), student=student, teacher=teacher,
                      example_input=x) as d:
        with d.teacher_pass() as t:
            t_out = t(x)
        assert len(d.recorders["t_a"].entries) == 1 and not d.recorders["s_a"].entries
        with d.student_pass() as s:
            s_out = s(x)
        # calls outside any pass record nothing
        with torch.no_grad():
            student(x)
            teacher(x)
            student.head.assign(torch.zeros(2, 4))
        assert [len(d.recorders[n].entries) for n in ("s_a", "t_a", "s_in")] == [1, 1, 1]
        s_a, t_a = d.recorders["s_a"].read(), d.recorders["t_a"].read()
        assert torch.allclose(s_out[0], s_a * 0.5) and torch.allclose(t_out[0], t_a * 0.5)
        assert not torch.allclose(s_a, t_a)
        with torch.no_grad():
            assert torch.allclose(s_a, student.head.fc(d.recorders["s_in"].read()))
        d.compute_losses()


INVOCATIONS = """
student
record c0  = output of student.shared call 0
record c1  = output of student.shared call 1
record all = output of student.shared all calls
record i1  = input of student.shared call 1
record s_out = output of student
loss l = mse(c1, i1)
"""


def test_call_n_and_all_calls():
    torch.manual_seed(0)
    student = KitchenSink(4)
    x = torch.randn(2, 3, 5, 5)
    with kdsl.compile(kdsl.loads(INVOCATIONS, "t.kd"), student=student, example_input=x) as d:
        with d.student_pass() as s:
            s(x)
        c0, c1 = d.recorders["c0"].read(), d.recorders["c1"].read()
        every = d.recorders["all"].read()
        assert isinstance(every, list) and len(every) == 2
        assert every[0] is c0 and every[1] is c1
        assert d.recorders["i1"].read() is c0  # the second call's input is the first's output
        with torch.no_grad():
            assert torch.allclose(c1, student.shared(c0))
        r = d.compute_losses()
        with torch.no_grad():
            assert torch.allclose(r.loss, ((c1 - c0) ** 2).mean())


def test_call_beyond_the_calls_made_is_kd511():
    torch.manual_seed(0)
    text = INVOCATIONS.replace("loss l = mse(c1, i1)", "record c2 = output of student.shared call 2\n"
                               "loss l = mse(c2, i1)")
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(text, "t.kd"), student=KitchenSink(4), example_input=torch.randn(2, 3, 5, 5))
    assert [d.code for d in info.value.errors] == ["KD511"]
    assert "ran 2 times" in info.value.errors[0].message


def test_input_selectors_positional_keyword_and_default():
    text = """
student
record pos0  = input of student.block
record kw    = input "mask" of student.block
record kw1   = input 1 of student.block
record dflt  = input "gain" of student.block
record s_out = output of student
loss l = kl_div(s_out[0], s_out[0])
"""
    torch.manual_seed(0)
    student = KitchenSink(4)
    x = torch.randn(2, 3, 5, 5)
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, example_input=x) as d:
        with d.student_pass() as s:
            s(x)
        pos0, kw, dflt = (d.recorders[n].read() for n in ("pos0", "kw", "dflt"))
        assert pos0.shape == (2, 4, 5, 5)
        assert torch.equal(kw, (pos0[:, :1] > 0).to(pos0.dtype))
        assert dflt == 1.0
        # input 1 is the mask, given by keyword
        assert d.recorders["kw1"].read() is kw
        d.compute_losses()


# ----------------------------------------------------------------------------- in-place
INPLACE = """
student
teacher
record s_b1  = output of student.bn1
record t_b1  = output of teacher.bn1
record s_c1  = output of student.conv1
record s_out = output of student
loss at1 = at(s_b1, t_b1)
loss l = mse(s_c1, s_c1)
loss ce = cross_entropy(s_out, batch.target)
"""


@pytest.mark.parametrize("example", [True, False], ids=["example_input", "first_step"])
def test_records_overwritten_in_place_see_the_pre_relu_values(example):
    student, teacher = convnets(2)
    ref_s, ref_t = copy.deepcopy(student), frozen_copy(teacher)
    x0, _ = images(0)
    with kdsl.compile(kdsl.loads(INPLACE, "t.kd"), student=student, teacher=teacher,
                      example_input=x0 if example else None) as d:
        copies = {n: r.copy for n, r in d.recorders.items()}
        if example:
            assert copies == {"s_b1": True, "t_b1": True, "s_c1": False, "s_out": False}
        else:
            assert not any(copies.values())
        for i in range(3):
            x, y = images(10 + i)
            with d.teacher_pass() as t:
                t(x)
            with d.student_pass() as s:
                s(x)
            if i or example:  # copied at record time
                s_b1 = d.recorders["s_b1"].read()
                assert (s_b1 < 0).any()
                with torch.no_grad():
                    assert_close(s_b1.detach(), convnet_features(copy.deepcopy(ref_s), x)["b1"], "s_b1")
            r = d.compute_losses(target=y)
            assert {n: rr.copy for n, rr in d.recorders.items()} == \
                {"s_b1": True, "t_b1": True, "s_c1": False, "s_out": False}
            with torch.no_grad():
                tf = convnet_features(ref_t, x)
            sf = convnet_features(ref_s, x)
            assert_close(r.unweighted["at1"], at_loss(sf["b1"], tf["b1"]), f"step {i}")
            assert_close(r.unweighted["ce"], ce_loss(sf["logits"], y), f"step {i}")
            assert not held(d)


# ----------------------------------------------------------------------------- deliveries
def deliver_spec(keep=""):
    return f"""
student
teacher
deliver output of method "kdrt_models:Proposer.propose" from teacher to student{keep}
record s_out = output of student
record t_out = output of teacher
loss l = mse(s_out[0], t_out[0])
"""


def proposers(t_calls=3, s_calls=3):
    torch.manual_seed(0)
    return Proposer(s_calls, offset=0.0), Proposer(t_calls, offset=100.0)


def test_delivery_is_fifo_and_replaces_the_call():
    student, teacher = proposers()
    x = torch.randn(2, 4)
    with kdsl.compile(kdsl.loads(deliver_spec(" keep 3"), "t.kd"), student=student, teacher=teacher) as d:
        r = d.step(x)
        assert r.student_output[1].tolist() == [[100.0, 101.0, 102.0]] * 2
        assert r.teacher_outputs["teacher"][1].tolist() == [[100.0, 101.0, 102.0]] * 2
        assert not held(d)
        # outside the distiller's passes the method is the student's own again
        assert student(x)[1].tolist() == [[0.0, 1.0, 2.0]] * 2


def test_delivery_keep_overflow_is_kd605():
    student, teacher = proposers()
    with kdsl.compile(kdsl.loads(deliver_spec(" keep 2"), "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(torch.randn(2, 4))
        assert [e.code for e in info.value.errors] == ["KD605"]
        assert "keep 2" in info.value.errors[0].message
        assert not held(d)


def test_delivery_student_asks_more_than_teacher_gave_is_kd603():
    student, teacher = proposers(t_calls=3, s_calls=4)
    with kdsl.compile(kdsl.loads(deliver_spec(), "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(torch.randn(2, 4))
        assert [e.code for e in info.value.errors] == ["KD603"]
        assert "3 results delivered" in info.value.errors[0].message
        assert not held(d)


def test_delivery_left_over_is_kd604_and_nothing_carries_over():
    student, teacher = proposers(t_calls=3, s_calls=2)
    x = torch.randn(2, 4)
    with kdsl.compile(kdsl.loads(deliver_spec(), "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(x)
        assert [e.code for e in info.value.errors] == ["KD604"]
        assert "produced 3 results but the student's pass used 2" in info.value.errors[0].message
        assert not held(d)
        # the next step starts empty: with matching counts the student gets this step's values
        teacher.offset = 200.0
        teacher.n_calls = 2
        r = d.step(x)
        assert r.student_output[1].tolist() == [[200.0, 201.0]] * 2
        # and a student that asks more than this step's teacher gave finds nothing left over
        student.n_calls = 3
        with pytest.raises(kdsl.KdslError) as info:
            d.step(x)
        assert [e.code for e in info.value.errors] == ["KD603"]


# ----------------------------------------------------------------------------- teachers
KD = """
student
teacher{flag}
record s_out = output of student
record t_out = output of teacher
loss kd = kl_div(s_out, t_out, tau=2{detach})
"""


def test_frozen_teacher():
    student, teacher = convnets(3)
    teacher.train()
    x, _ = images(1)
    with kdsl.compile(kdsl.loads(KD.format(flag="", detach=""), "t.kd"), student=student,
                      teacher=teacher, example_input=x) as d:
        ids = {id(p) for p in d.parameters()}
        assert ids == {id(p) for p in student.parameters()}
        assert not any(id(p) in ids for p in teacher.parameters())
        assert not any(k.startswith("models.teacher") for k in d.state_dict())
        d.train()
        assert student.training and not any(m.training for m in teacher.modules())
        x_grad = x.clone().requires_grad_(True)
        r = d.step(x_grad)
        # the frozen teacher's pass runs under no_grad: not even the input's gradient reaches it
        assert not r.teacher_outputs["teacher"].requires_grad
        assert r.student_output.requires_grad
        r.loss.backward()
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        assert all(p.grad is not None for p in student.parameters())
        d.eval()
        d.train()
        assert not any(m.training for m in teacher.modules())
        # a frozen teacher's running statistics do not move during steps
        before = [b.clone() for b in teacher.buffers()]
        d.step(images(2)[0])
        assert all(torch.equal(a, b) for a, b in zip(before, teacher.buffers()))
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())


def test_trainable_teacher_joins_parameters_and_gets_gradients():
    student, teacher = convnets(4)
    x, _ = images(1)
    with kdsl.compile(kdsl.loads(KD.format(flag=" trainable", detach=", detach_teacher=false"), "t.kd"),
                      student=student, teacher=teacher, example_input=x) as d:
        ids = {id(p) for p in d.parameters()}
        assert all(id(p) in ids for p in teacher.parameters())
        assert any(k.startswith("models.teacher.") for k in d.state_dict())
        d.train()
        assert teacher.training
        r = d.step(x)
        assert r.teacher_outputs["teacher"].requires_grad
        r.loss.backward()
        assert all(p.grad is not None for p in teacher.parameters())
        assert any(p.grad.abs().sum() > 0 for p in teacher.parameters())


def test_several_teachers():
    torch.manual_seed(5)
    student, t1, t2 = ConvNet(4).to(DT), ConvNet(6).to(DT), ConvNet(8).to(DT)
    ref_s, ref_1, ref_2 = copy.deepcopy(student), frozen_copy(t1), frozen_copy(t2)
    x, y = images(3)
    text = """
student
teacher t1
teacher t2
record s_out = output of student
record o1 = output of t1
record o2 = output of t2
record f2 = output of t2.layer.1
record s_f = output of student.layer.1
loss kd1 = kl_div(s_out, o1, tau=2) * 0.5
loss kd2 = kl_div(s_out, o2, tau=4) * 0.25
loss at = at(s_f, f2)
"""
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, t1=t1, t2=t2, example_input=x) as d:
        with pytest.raises(kdsl.KdslError) as info:
            with d.teacher_pass():
                pass
        assert info.value.errors[0].code == "KD514"
        r = d.step(x, target=y)
        r.loss.backward()
        assert set(r.teacher_outputs) == {"t1", "t2"}
    with torch.no_grad():
        f1, f2 = convnet_features(ref_1, x), convnet_features(ref_2, x)
    sf = convnet_features(ref_s, x)
    total = 0.5 * kd_loss(sf["logits"], f1["logits"], 2.0) + \
        0.25 * kd_loss(sf["logits"], f2["logits"], 4.0) + at_loss(sf["b2"], f2["b2"])
    total.backward()
    assert_close(r.loss, total, "total")
    assert_grads_equal(named_pairs(student, ref_s))


def test_no_teacher_self_distillation():
    torch.manual_seed(6)
    student = ConvNet(4).to(DT)
    ref_s = copy.deepcopy(student)
    x, y = images(4)
    text = """
student
record b1 = output of student.bn1
record b2 = output of student.layer.1
record s_out = output of student
loss self = at(b2, b1) * 10
loss ce = cross_entropy(s_out, batch.target)
"""
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student) as d:
        r = d.step(x, target=y)
        r.loss.backward()
        assert r.teacher_outputs == {} and d.teacher_names == []
    sf = convnet_features(ref_s, x)
    total = 10 * at_loss(sf["b2"], sf["b1"]) + ce_loss(sf["logits"], y)
    total.backward()
    assert_close(r.loss, total, "total")
    assert_grads_equal(named_pairs(student, ref_s))


# ----------------------------------------------------------------------------- per-step buffers
def test_nothing_is_held_after_a_step():
    student, teacher = convnets(7)
    x, y = images(5)
    text = """
student
teacher
record s_c = output of student.layer.0
record t_c = output of teacher.layer.0
record s_b1 = output of student.bn1
record t_b1 = output of teacher.bn1
record s_out = output of student
record all = output of student.layer all calls
loss at = at(s_c, t_c)
loss at1 = at(s_b1, t_b1)
loss ce = cross_entropy(s_out, batch.target)
"""
    seen = []
    student.layer[0].register_forward_hook(lambda m, a, o: seen.append(weakref.ref(o)))
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher) as d:
        for i in range(2):
            r = d.step(x, target=y)
            assert not held(d)
            assert all(r2.calls == 0 for r2 in d.recorders.values())
            r.loss.backward()
            del r
            gc.collect()
            assert seen[-1]() is None, "a recorded activation outlived its step"
        # a step that fails in the loss graph leaves nothing behind either
        with pytest.raises(kdsl.KdslError):
            d.step(x)  # no target: batch.target is missing (KD608)
        assert not held(d)


# ----------------------------------------------------------------------------- connectors
def test_a_connector_application_runs_once_per_step():
    student, teacher = convnets(8)
    x, y = images(6)
    text = """
student
teacher
record s_f = output of student.layer.1
record t_f = output of teacher.layer.1
record s_g = output of student.bn1
record t_g = output of teacher.bn1
connector p = conv1x1()
loss h1 = l2(p(s_f), t_f, normalize=false)
loss h2 = mse(p(s_f), t_f)
loss h3 = mse(p(s_g), t_g)
"""
    with kdsl.compile(kdsl.loads(text, "t.kd"), student=student, teacher=teacher, example_input=x) as d:
        calls = []
        d.connectors["p"].register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
        d.step(x)
        assert len(calls) == 2  # p(s_f) once for h1 and h2, p(s_g) once
        d.step(x)
        assert len(calls) == 4


def test_connectors_in_state_dict_and_moved_by_to():
    student, teacher = convnets(9, dtype=torch.float32)
    x, _ = images(7, dtype=torch.float32)
    text = """
student
teacher
record s_f = output of student.layer.1
record t_f = output of teacher.layer.1
connector p = conv1x1(bn=true)
connector q = conv1x1()
loss h = l2(p(s_f), t_f)
loss g = l2(q(s_f), t_f)
"""
    spec = kdsl.loads(text, "t.kd")
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x) as d:
        keys = [k for k in d.state_dict() if k.startswith("connectors.")]
        assert keys == ["connectors.p.conv.weight", "connectors.p.bn.weight", "connectors.p.bn.bias",
                        "connectors.p.bn.running_mean", "connectors.p.bn.running_var",
                        "connectors.p.bn.num_batches_tracked", "connectors.q.conv.weight",
                        "connectors.q.conv.bias"]
        state = {k: v.clone() for k, v in d.state_dict().items()}
        d.to(torch.float64)
        assert all(p.dtype == torch.float64 for p in d.connectors.parameters())
        assert all(p.dtype == torch.float64 for p in student.parameters())
        assert all(p.dtype == torch.float64 for p in teacher.parameters())  # frozen, moved too
        r = d.step(x.double())
        assert r.loss.dtype == torch.float64

    # the same names load into a distiller compiled again from the same spec
    s2, t2 = convnets(10, dtype=torch.float32)
    with kdsl.compile(spec, student=s2, teacher=t2, example_input=x) as d2:
        d2.load_state_dict(state)
        for k, v in d2.state_dict().items():
            assert torch.equal(v, state[k]), k


# ----------------------------------------------------------------------------- errors at step time
LOSS_ERROR = """\
student
teacher
record s_out = output of student
record t_out = output of teacher
# comment lines count

connector unused = linear(in_features=2, out_features=2)

loss kd = cross_entropy(s_out, batch.target)
"""


def test_an_error_inside_a_loss_names_the_term_and_span():
    student, teacher = convnets(11)
    x, _ = images(8)
    with kdsl.compile(kdsl.loads(LOSS_ERROR, "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as info:
            d.step(x, target=torch.full((4,), 7))  # class 7 of 5
        err = info.value.errors[0]
        assert err.code == "KD601"
        assert "while evaluating loss 'kd' at t.kd:9:1" in err.message
        assert (err.span.file, err.span.line, err.span.column) == ("t.kd", 9, 1)
        assert not held(d)
        # the distiller is still usable
        r = d.step(x, target=torch.zeros(4, dtype=torch.long))
        assert torch.isfinite(r.loss)


def test_manual_passes_equal_step():
    s1, t1 = convnets(12)
    s2, t2 = copy.deepcopy(s1), copy.deepcopy(t1)
    text = INPLACE
    x, y = images(9)
    spec = kdsl.loads(text, "t.kd")
    # truncate=False: the hand-run teacher pass below returns its output, a truncated one would not
    with kdsl.compile(spec, student=s1, teacher=t1, truncate=False) as d1, \
            kdsl.compile(spec, student=s2, teacher=t2, truncate=False) as d2:
        for i in range(2):
            d1.set_progress(epoch=i)
            d2.set_progress(epoch=i)
            r1 = d1.step(x, target=y)
            with d2.teacher_pass("teacher") as t:
                t_out = t(x)
            with d2.student_pass() as s:
                s_out = s(x)
            r2 = d2.compute_losses(target=y)
            assert_close(s_out, r1.student_output, "student output")
            assert_close(t_out, r1.teacher_outputs["teacher"], "teacher output")
            for k in r1.losses:
                assert_close(r2.losses[k], r1.losses[k], k)
            assert_close(r2.loss, r1.loss, "total")
            for m in (s1, s2):
                m.zero_grad()
            r1.loss.backward()
            r2.loss.backward()
            assert_grads_equal(named_pairs(s1, s2))


def test_a_record_on_a_delivered_method_sees_the_delivered_value():
    spec = deliver_spec(" keep 3") + 'record s_props = output of method "kdrt_models:Proposer.propose" in student\n' \
        "loss p = mse(s_props, s_props)\n"
    student, teacher = proposers()
    with kdsl.compile(kdsl.loads(spec, "t.kd"), student=student, teacher=teacher) as d:
        seen = []
        d.terms[-1].module.forward = lambda a, b: seen.append(a.clone()) or (a - b).pow(2).mean()
        d.step(torch.randn(2, 4))
        # the student's first propose() call was answered with the teacher's first result
        assert seen[0].tolist() == [100.0, 100.0]
