"""The compiler as named passes over a typed plan, and the one expression interpreter that both
the dry run and the training step run.

Each pass can run alone and its result be inspected in the plan; a failure anywhere leaves the
models as they were; the distiller keeps the finished plan, read-only; the dry run and a step
raise the same diagnostic for the same failing expression."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import kdsl
from kdrt_models import ConvNet
from kdsl.catalog.shapes import TensorInfo
from kdsl.compiler.compiler import PASSES, compile, hand_off, run_passes, start
from kdsl.compiler.dry_run import dry_run
from kdsl.compiler.install import install_recorders
from kdsl.compiler.plan import Request
from kdsl.lang import ir
from kdsl.runtime.compiled import Compiled
from kdsl.runtime.distiller import Distiller
from kdsl.runtime.interpret import Env, Interpreter, StepEnv, Unavailable
from kdsl.runtime.recorders import hook_counts

X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))

FITNETS = """\
student
teacher
record s_feat = output of student.bn1
record t_feat = output of teacher.bn1
record s_out  = output of student
record t_out  = output of teacher
connector adapt = conv1x1()
loss hint = mse(adapt(s_feat), t_feat)
loss kd   = kl_div(s_out, t_out, tau=2)
"""


def nets(seed: int = 0):
    torch.manual_seed(seed)
    return ConvNet(4), ConvNet(8)


def request(text: str = FITNETS, example=X, **models) -> Request:
    spec = kdsl.loads(text, "t.kd")
    if not models:
        models = dict(zip(("student", "teacher"), nets()))
    return Request(spec, models, example, {})


def passes_upto(last) -> tuple:
    return tuple(PASSES[: PASSES.index(last) + 1])


def test_the_pass_list_reads_as_the_compiler_order():
    assert [p.__name__ for p in PASSES] == [
        "import_plugins", "build_models", "bind_generation", "stop_if_errors", "build_functions", "build_procedure",
        "install_recorders", "install_deliveries", "dry_run", "build_loss_graph", "check_shapes",
        "build_unused_connectors", "stop_if_errors", "load_connector_weights", "resolve_scopes",
        "resolve_inits", "stop_if_errors", "compile_models", "plan_truncation"]


def test_passes_up_to_the_dry_run_give_every_record_shape():
    req = request()
    plan = run_passes(start(req), passes_upto(dry_run))
    try:
        assert plan.record_shapes == {
            "s_feat": TensorInfo((2, 4, 6, 6), "float32"), "t_feat": TensorInfo((2, 8, 6, 6), "float32"),
            "s_out": TensorInfo((2, 5), "float32"), "t_out": TensorInfo((2, 5), "float32")}
        assert plan.records["s_feat"].installed_as == "forward hook on student.bn1"
        # the in-place ReLU after bn1 overwrites the record: found on the dry run, copied from now on
        assert plan.records["s_feat"].recorder.copy and not plan.records["s_out"].recorder.copy
        assert plan.used_teachers == ["teacher"]
        assert plan.losses == {} and plan.connectors == {}  # the loss graph is a later pass
    finally:
        plan.undo.fail()
    assert hook_counts(req.given["student"]) == {n: (0, 0) for n, _ in req.given["student"].named_modules()}


def test_a_pass_runs_alone_on_a_plan():
    req = request(example=None)
    plan = run_passes(start(req), passes_upto(PASSES[1]))  # import_plugins, build_models
    assert set(plan.models) == {"student", "teacher"} and plan.records == {}
    try:
        plan = install_recorders(plan)
        assert sorted(plan.records) == ["s_feat", "s_out", "t_feat", "t_out"]
        assert plan.record_shapes["s_feat"] is None  # no dry run has run
        assert dry_run(plan) is plan and plan.values == {}  # without an example, nothing to run
    finally:
        plan.undo.fail()


def test_the_loss_graph_passes_infer_options_and_order():
    plan = run_passes(start(request()))
    try:
        adapt = plan.connectors["adapt"]
        assert adapt.options == {"in_channels": 4, "out_channels": 8}
        assert adapt.inferred == ["in_channels", "out_channels"]
        assert adapt.input == TensorInfo((2, 4, 6, 6), "float32")
        assert adapt.output == TensorInfo((2, 8, 6, 6), "float32")
        hint = plan.losses["hint"]
        # the application's output size comes from its partner: the plain input goes first
        assert hint.order == ["preds_T", "preds_S"] and hint.complete
        assert [t.name for t in plan.terms] == ["hint", "kd"] and all(t.checked for t in plan.terms)
    finally:
        plan.undo.fail()


def test_a_failing_pass_undoes_every_earlier_one():
    req = request()
    before = {n: hook_counts(m) for n, m in req.given.items()}

    def explode(plan):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        run_passes(start(req), passes_upto(dry_run) + (explode,))
    assert {n: hook_counts(m) for n, m in req.given.items()} == before
    teacher = req.given["teacher"]
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())  # unfrozen


def test_the_distiller_keeps_the_finished_plan_read_only():
    student, teacher = nets(1)
    with compile(kdsl.loads(FITNETS, "t.kd"), student=student, teacher=teacher, example_input=X) as d:
        plan = d.plan
        assert plan.connectors["adapt"].module is d.connectors["adapt"]
        assert plan.values == {} and all(lp.values == {} for lp in plan.losses.values())
        with pytest.raises(AttributeError):
            d.plan = None
        r = d.step(X)
        assert set(r.losses) == {"hint", "kd"}


def test_the_runtime_is_built_from_one_typed_hand_off():
    assert list(inspect.signature(Distiller.__init__).parameters) == ["self", "compiled", "plan"]
    student, teacher = nets(1)
    request = Request(kdsl.loads(FITNETS, "t.kd"), {"student": student, "teacher": teacher}, X)
    plan = run_passes(start(request))
    handed = hand_off(plan)
    assert isinstance(handed, Compiled) and handed.procedure is plan.procedure
    with Distiller(handed) as d:  # without the plan: the runtime never reads it
        assert d.plan is None and d.batch_size == 64  # the settings table's default
        assert set(d.step(X).losses) == {"hint", "kd"}
    assert all(counts == (0, 0) for m in (student, teacher) for counts in hook_counts(m).values())


# ----------------------------------------------------------------------------- the interpreter
SELECT = """\
student
teacher
record s = output of student
record t = output of teacher
loss kd = kl_div(s.logits, t)
"""


def test_kd610_has_one_text_from_the_dry_run_and_from_a_step():
    student, teacher = nets(2)
    with pytest.raises(kdsl.KdslError) as at_compile:
        kdsl.compile(kdsl.loads(SELECT, "t.kd"), student=student, teacher=teacher, example_input=X)
    with kdsl.compile(kdsl.loads(SELECT, "t.kd"), student=student, teacher=teacher) as d:
        with pytest.raises(kdsl.KdslError) as at_step:
            d.step(X)
    dry, step = at_compile.value.errors[0], at_step.value.errors[0]
    assert dry.code == step.code == "KD610"
    assert dry.message == step.message
    assert dry.message.startswith("cannot select .logits of a tensor of shape [2, 5]: AttributeError:")
    assert (dry.span.line, dry.span.column) == (step.span.line, step.span.column) == (5, 18)  # at `s.logits`


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x * 2


def _apply(span_col: int) -> ir.ConnectorApply:
    from kdsl.core.span import Span

    return ir.ConnectorApply(connector="c", args=(ir.RecordRef(record="r"),),
                             span=Span(file="t.kd", line=1, column=span_col, end_line=1, end_column=span_col + 4))


def test_the_interpreter_runs_an_application_once_until_cleared():
    class Rec:
        name, span = "r", None

        def read(self):
            return torch.ones(2)

    module = _Counting()
    interp = Interpreter(StepEnv({"r": Rec()}, {"c": module}, {}))
    first, second = _apply(1), _apply(20)  # equal but for their spans
    a, b = interp.visit(first), interp.visit(second)
    assert a is b and module.calls == 1
    interp.clear()
    interp.visit(first)
    assert module.calls == 2


def test_the_interpreter_builds_connectors_even_when_an_input_is_unavailable():
    asked = []

    class Partial(Env):
        def record(self, expr):
            raise Unavailable(expr.record)

        def connector(self, expr, args):
            asked.append(list(args))
            return _Counting()

    with pytest.raises(Unavailable):
        Interpreter(Partial()).visit(_apply(1))
    assert asked == [[None]]  # the dry run sizes what it can, then the value is unavailable


def test_a_connector_failure_is_kd602_with_the_inputs():
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("no")

    class Rec:
        name, span = "r", None

        def read(self):
            return torch.ones(3, 2)

    interp = Interpreter(StepEnv({"r": Rec()}, {"c": Boom()}, {}))
    with pytest.raises(kdsl.KdslError) as info:
        interp.visit(_apply(1))
    err = info.value.errors[0]
    assert err.code == "KD602" and "while evaluating connector 'c' at t.kd:1:1: ValueError: no" in err.message
    assert err.hints == ("inputs: a tensor of shape [3, 2]",)
