"""``param NAME = VALUE``: a named literal whose name stands wherever a literal may (#25 item 4, the
statement; ``--set`` is not part of this). The verifier puts the value in place of each use, so
every check of a literal applies to it unchanged, located at the use."""

from __future__ import annotations

import pytest

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.lang import ir
from kdsl.lang.fmt import format_text, lowered_statements
from kdsl.lang.printer import statement_text
from kdsl.lang.visit import find

MODELS = "student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n"


def load(text: str) -> kdsl.Spec:
    return kdsl.loads(text, "t.kd")


def test_a_param_parses_and_prints_as_written():
    (param,), problems = lowered_statements("param tau = 4\n")
    assert problems == [] and param == ir.ParamDecl(name="tau", value=ir.Const(value=4))
    assert statement_text(param) == "param tau = 4"
    (listed,), _ = lowered_statements('param sizes = [1, -2, "x"]\n')
    assert statement_text(listed) == 'param sizes = [1, -2, "x"]'


def test_fmt_lines_params_up_like_other_declarations():
    assert format_text("param tau = 4\nparam alpha = 0.9\n").text == "param tau   = 4\nparam alpha = 0.9\n"


def test_a_param_stands_wherever_a_literal_may():
    spec = load('param tau = 4\nparam alpha = 0.5\nparam w = alpha\nparam n = 3\nparam hidden = 8\n'
                'student = model("kdsl.zoo:digits_mlp", width=hidden)\nteacher\n'
                "record s = output of student\nrecord t = output of teacher\n"
                "loss kd = kl_div(s, argmax(t, dim=n), tau=tau) * w\n"
                "loss ramp = mse(s, t) * linear(0.0, end=alpha, epochs=n)\n"
                "train {\n  epochs = n\n  optimizer = sgd(lr=alpha)\n}\n")
    kd = next(s for s in spec.losses if s.name == "kd")
    assert statement_text(kd) == "loss kd = kl_div(s, argmax(t, dim=3), tau=4) * 0.5"
    assert ir.bound(kd.call).option_values["tau"] == ir.Const(value=4)
    ramp = next(s for s in spec.losses if s.name == "ramp")
    assert statement_text(ramp.weight) == "linear(0.0, end=0.5, epochs=3)"
    assert spec.train.get("epochs").value == ir.Const(value=3)
    assert statement_text(spec.train.get("optimizer").value) == "sgd(lr=0.5)"
    assert spec.student.factory.kwargs[0].value == ir.Const(value=8)
    assert [p.name for p in spec.params] == ["tau", "alpha", "w", "n", "hidden"]
    assert not list(find(spec.losses[0], ir.Name))


def test_the_value_of_an_override_is_used_everywhere():
    spec = load("param tau = 4\n" + MODELS + "loss kd = kl_div(s, t, tau=tau)\noverride param tau = 2\n")
    assert ir.bound(spec.losses[0].call).option_values["tau"] == ir.Const(value=2)


def test_a_use_carries_its_own_location():
    spec = load("param tau = 4\n" + MODELS + "loss kd = kl_div(s, t, tau=tau)\n")
    value = spec.losses[0].call.kwargs[0].value
    assert (value.span.line, value.span.column) == (6, 28)


@pytest.mark.parametrize("text, code, where", [
    ("param tau = s\n", "KD213", (1, 13)),
    ("param tau = 0\n" + MODELS + "loss kd = kl_div(s, t, tau=tau)\n", "KD312", (6, 28)),
    (MODELS + "loss kd = kl_div(s, t, tau=tau)\nparam tau = 4\n", "KD204", (5, 28)),
    (MODELS + "loss kd = kl_div(s, t) * w\n", "KD213", (5, 26)),
])
def test_bad_params_are_located_errors(text, code, where):
    with pytest.raises(KdslError) as info:
        load(text)
    found = [(d.code, (d.span.line, d.span.column)) for d in info.value.diagnostics]
    assert (code, where) in found


def test_an_error_at_a_use_points_at_the_param():
    with pytest.raises(KdslError) as info:
        load("param cold = 0\n" + MODELS + "loss kd = kl_div(s, t, tau=cold)\n")
    (error,) = info.value.errors
    assert error.code == "KD312" and (error.span.line, error.span.column) == (6, 28)
    assert [(n.message, n.span.line, n.span.column) for n in error.notes] == [
        ("the value of param 'cold' declared", 1, 7)]


def test_explain_lists_the_params_and_shows_their_values_in_place():
    torch = pytest.importorskip("torch")
    from kdsl.reports.explain import explain, losses_table

    spec = load("param tau = 4\nparam w = 0.5\n" + MODELS + "loss kd = kl_div(s, t, tau=tau) * w\n")
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=torch.randn(2, 4)) as d:
        assert "params: tau = 4, w = 0.5" in explain(d)
        row = [c._cells[0] for c in losses_table(d.plan).columns]
        assert row[2] == "kl_div(tau=4)" and row[4] == "0.5"
