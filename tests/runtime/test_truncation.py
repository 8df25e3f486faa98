"""Teacher truncation: a pass stops once the records the step needs are taken, with the values
of the full pass (float64, gradients included), and runs in full where it must."""

from __future__ import annotations

import torch
from torch import nn

import kdsl

HINT = """
student
teacher
record s_feat = output of student.1
record t_feat = output of teacher.1
loss hint = mse(s_feat, t_feat)
"""


class Net(nn.Sequential):
    """Linear layers that count their calls: a skipped layer is never called."""

    def __init__(self, width: int = 6) -> None:
        super().__init__(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3))
        self.double()
        self.calls = [0] * len(self)
        for i, m in enumerate(self):
            m.register_forward_pre_hook(lambda mod, a, i=i: self.calls.__setitem__(i, self.calls[i] + 1))


def pair(seed: int = 0):
    torch.manual_seed(seed)
    return Net(), Net()


def test_truncated_pass_records_the_full_pass_values_and_skips_the_rest():
    s1, t1 = pair()
    s2, t2 = pair()  # the same weights (same seed), its own call counters
    x = torch.randn(5, 4, dtype=torch.float64)
    spec = kdsl.loads(HINT, "t.kd")
    with kdsl.compile(spec, student=s1, teacher=t1, example_input=x) as cut, \
            kdsl.compile(spec, student=s2, teacher=t2, example_input=x, truncate=False) as full:
        assert cut.plan.cuts[("main", "step", "teacher")].stops
        assert not full.plan.cuts[("main", "step", "teacher")].stops
        t1.calls[:] = [0] * 5
        r1, r2 = cut.step(x), full.step(x)
        # the teacher stopped after its second module; the full pass ran all five
        assert t1.calls == [1, 1, 0, 0, 0] and t2.calls[-1] >= 1
        assert r1.teacher_outputs["teacher"] is None and r2.teacher_outputs["teacher"] is not None
        expected = t2[1](t2[0](x))
        assert torch.equal(r1.loss, r2.loss)
        assert torch.allclose(r1.loss, ((s1[1](s1[0](x)) - expected) ** 2).mean())
        r1.loss.backward()
        r2.loss.backward()
        grads = [(p1.grad, p2.grad) for p1, p2 in zip(s1.parameters(), s2.parameters())]
        # the hint reaches the student's first linear layer only, in both runs alike
        assert [g is None for g, _ in grads] == [False] * 2 + [True] * 4
        assert all(torch.equal(g1, g2) for g1, g2 in grads[:2]) and grads[5][1] is None
        # nothing is left armed or recorded for the next step
        assert cut._state.active is None and cut._state.needed is None
        assert all(not r.entries for r in cut.recorders.values())


def test_teacher_pass_context_manager_ends_quietly_at_the_stop():
    s, t = pair()
    x = torch.randn(3, 4, dtype=torch.float64)
    with kdsl.compile(kdsl.loads(HINT, "t.kd"), student=s, teacher=t, example_input=x) as d:
        t.calls[:] = [0] * 5
        with d.teacher_pass() as teacher:
            teacher(x)
        with d.student_pass() as student:
            student(x)
        assert t.calls == [1, 1, 0, 0, 0]
        value = d.recorders["t_feat"].read()
        assert torch.equal(value, t[1](t[0](x)).detach())
        d.compute_losses()
        assert d._state.needed is None


def test_model_code_catching_exception_does_not_swallow_the_stop():
    class Guarded(Net):
        def forward(self, x):
            try:
                return super().forward(x)
            except Exception:  # what careless model code does
                return torch.zeros(())

    torch.manual_seed(0)
    s, t = Net(), Guarded()
    x = torch.randn(3, 4, dtype=torch.float64)
    with kdsl.compile(kdsl.loads(HINT, "t.kd"), student=s, teacher=t, example_input=x) as d:
        t.calls[:] = [0] * 5
        d.step(x)
        assert t.calls == [1, 1, 0, 0, 0]


def test_an_error_after_arming_leaves_no_pass_running():
    s, t = pair()
    x = torch.randn(3, 4, dtype=torch.float64)
    with kdsl.compile(kdsl.loads(HINT, "t.kd"), student=s, teacher=t, example_input=x) as d:
        try:
            d.step(torch.randn(3, 5, dtype=torch.float64))  # wrong width: the teacher fails
        except RuntimeError:
            pass
        assert d._state.active is None and d._state.needed is None
        r = d.step(x)  # the next step is complete
        assert torch.isfinite(r.loss)
    # closed: kdsl's hooks are gone (the counters' pre-hooks are the test's own)
    assert sum(len(m._forward_hooks) for m in t.modules()) == 0


def test_full_pass_reasons():
    s, t = pair()
    x = torch.randn(3, 4, dtype=torch.float64)
    spec = HINT + "record t_all = output of teacher.1 all calls\nloss more = mse(s_feat, t_all[0])\n" \
        "record t_out = output of teacher\nrecord s_out = output of student\nloss kd = mse(s_out, t_out)\n"
    with kdsl.compile(kdsl.loads(spec, "t.kd"), student=s, teacher=t, example_input=x) as d:
        reason = d.plan.cuts[("main", "step", "teacher")].reason
        assert "all calls" in reason
        assert "output" in d.plan.cuts[("main", "step", "student")].reason
        t.calls[:] = [0] * 5
        d.step(x)
        assert t.calls == [1] * 5


def test_explain_says_where_the_pass_stops():
    from kdsl.compiler.truncate import truncation_lines

    s, t = pair()
    x = torch.randn(3, 4, dtype=torch.float64)
    with kdsl.compile(kdsl.loads(HINT, "t.kd"), student=s, teacher=t, example_input=x) as d:
        lines = truncation_lines(d)
        assert "  teacher stops after teacher.1 (record t_feat); 3 of 5 top-level modules skipped" in lines
        # the student has no buffers and no loss reads its output: it stops too
        assert "  student stops after student.1 (record s_feat); 3 of 5 top-level modules skipped" in lines
        assert all(not r.entries for r in d.recorders.values())
