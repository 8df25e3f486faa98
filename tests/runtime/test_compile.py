"""kdsl.compile(..., compile_models=...): records as eager ones, no graph break from kdsl's hooks,
an eager fallback with KD708 where compiling fails, and hooks removed on close."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import kdsl

SPEC = """
student
teacher
record s_f = output of student.0
record t_f = output of teacher.0
record s_o = output of student
record t_o = output of teacher
loss kd = kl_div(s_o, t_o, tau=4)
loss hint = mse(s_f, t_f)
"""


def net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # the in-place ReLU overwrites the recorded output of module 0: kdsl must copy it
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 4)).double()


def models():
    return dict(student=net(0), teacher=net(1))


@pytest.mark.parametrize("dry", [True, False], ids=["dry_run", "first_step"])
def test_compiled_records_and_losses_equal_eager(dry):
    x = torch.randn(4, 8, dtype=torch.float64)
    spec = kdsl.loads(SPEC, "t.kd")
    a, b = models(), models()
    with kdsl.compile(spec, example_input=x if dry else None, compile_models={"backend": "aot_eager"}, **a) as c, \
            kdsl.compile(spec, example_input=x if dry else None, **b) as e:
        assert c.plan.compiled == ["teacher", "student"]
        for _ in range(3):
            rc, re_ = c.step(x), e.step(x)
            for k in re_.losses:
                assert torch.equal(rc.losses[k], re_.losses[k]), k
            rc.loss.backward()
            re_.loss.backward()
        for p, q in zip(a["student"].parameters(), b["student"].parameters()):
            assert torch.equal(p.grad, q.grad)
        assert c.recorders["s_f"].copy and e.recorders["s_f"].copy


def test_kdsl_hooks_add_no_graph_break():
    x = torch.randn(4, 8, dtype=torch.float64)
    m = models()
    torch._dynamo.reset()
    bare = torch._dynamo.explain(net(2))(x).graph_break_count
    with kdsl.compile(kdsl.loads(SPEC, "t.kd"), example_input=x, compile_models={"backend": "eager"},
                      **m) as d:
        for name in ("student", "teacher"):
            d._state.active = name
            try:
                torch._dynamo.reset()
                explained = torch._dynamo.explain(m[name])(x)
            finally:
                d._state.active = None
            assert explained.graph_break_count == bare
            assert len(d.recorders["s_f" if name == "student" else "t_f"].entries) == 1
            d._end_step()
    torch._dynamo.reset()


def test_compile_failure_warns_kd708_and_runs_eagerly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(4, 8, dtype=torch.float64)
    spec = kdsl.loads(SPEC, "t.kd")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with kdsl.compile(spec, example_input=x, compile_models=True, **models()) as c, \
                kdsl.compile(spec, example_input=x, **models()) as e:
            assert c.plan.compiled == [] and "no compiler here" in c.plan.compile_note
            assert torch.equal(c.step(x).loss, e.step(x).loss)
    assert [str(w.message) for w in caught if "KD708" in str(w.message)] != []


def test_a_dynamo_error_at_the_first_call_falls_back_to_eager():
    from torch._dynamo.exc import BackendCompilerFailed

    def failing_backend(gm, example_inputs):
        raise BackendCompilerFailed(failing_backend, RuntimeError("inductor cannot lower this"))

    x = torch.randn(4, 8, dtype=torch.float64)
    spec = kdsl.loads(SPEC, "t.kd")
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with kdsl.compile(spec, example_input=x, compile_models={"backend": failing_backend}, **models()) as c, \
                kdsl.compile(spec, example_input=x, **models()) as e:
            for _ in range(2):
                assert torch.equal(c.step(x).loss, e.step(x).loss)
    assert sum("KD708" in str(w.message) for w in caught) == 1
    torch._dynamo.reset()


def test_close_removes_hooks_and_the_compiled_call():
    m = models()
    x = torch.randn(4, 8, dtype=torch.float64)
    d = kdsl.compile(kdsl.loads(SPEC, "t.kd"), example_input=x, compile_models={"backend": "eager"}, **m)
    d.step(x)
    assert m["student"]._compiled_call_impl is not None
    d.close()
    for model in m.values():
        assert model._compiled_call_impl is None
        assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in model.modules())
    torch._dynamo.reset()
