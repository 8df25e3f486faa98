"""Param values from outside the spec (#25 item 4): `--set NAME=VALUE` on every command that reads
a spec, `params={...}` on kdsl.load / loads / compile / train. A value is read as the language's
literal in a source of its own, checked where the param is used as the spec's own value is, and
every problem is located at the --set argument and at the param with carets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kdsl
from kdsl.core.diagnostics import KdslError, render
from kdsl.lang.loader import check_text
from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]
SPEC = ("param tau = 4 search uniform(1, 8)\nparam kd_weight = 0.9\nstudent\nteacher\n"
        "record s = output of student\nrecord t = output of teacher\n"
        "loss kd = kl_div(s, t, tau=tau) * kd_weight\n")
SWEEP_SPEC = str(ROOT / "specs" / "digits" / "kd_sweep.kd")




def _errors(params):
    spec, diags, sources = check_text(SPEC, "t.kd", params)
    return spec, [d for d in diags if d.is_error], render(diags, sources)


def test_a_given_value_replaces_the_params_and_says_where_it_came_from():
    spec = kdsl.loads(SPEC, "t.kd", params=["tau=2.5"])
    loss = spec.losses[0]
    assert kdsl.Spec and loss.call.kwargs[0].value.value == 2.5 and loss.weight.value == 0.9
    assert [(p.name, p.given) for p in spec.params] == [("tau", "--set"), ("kd_weight", None)]
    spec = kdsl.loads(SPEC, "t.kd", params={"kd_weight": 0.5, "tau": 3})
    assert [(p.value.value, p.given) for p in spec.params] == [(3, "params="), (0.5, "params=")]
    # a given value is compared as the spec's own: the same value, the same fingerprint
    assert kdsl.loads(SPEC, "t.kd", params={"tau": 4}).canonical_json() == kdsl.loads(SPEC, "t.kd").canonical_json()


def test_a_value_that_breaks_a_constraint_is_located_at_the_set_and_at_the_param():
    _, (error,), text = _errors(["tau=0"])
    assert error.code == "KD312" and (error.span.file, error.span.line, error.span.column) == ("t.kd", 7, 28)
    assert [(n.span.file, n.span.line, n.span.column) for n in error.notes] == [("t.kd", 1, 7), ("--set", 1, 5)]
    assert "note: its value given by --set at --set:1:5\n      1 | tau=0\n        |     ^" in text
    assert "1 | param tau = 4 search uniform(1, 8)\n        |       ^^^" in text


@pytest.mark.parametrize("params, code, where, fragment", [
    (["tua=2"], "KD235", ("--set", 1, 1), "did you mean 'tau'?"),
    ({"alpha": 1}, "KD235", ("params=", 1, 1), "the spec's params: tau, kd_weight"),
    (["tau"], "KD236", ("--set", 1, 1), "--set takes NAME=VALUE, not 'tau'"),
    (["tau=2", " tau=3"], "KD236", ("--set", 2, 2), "--set gives 'tau' twice"),
    (["tau=(1"], "KD103", ("--set", 1, 7), "expected ')'"),
    (["kd_weight=s"], "KD213", ("--set", 1, 11), "param 'kd_weight' takes a literal value"),
])
def test_bad_given_values_are_located_errors(params, code, where, fragment):
    spec, errors, text = _errors(params)
    assert spec is None and fragment in text, text
    assert (code, where) in [(e.code, (e.span.file, e.span.line, e.span.column)) for e in errors]


def test_a_value_outside_the_search_space_may_be_given():
    """KD239 holds the spec's own value to its space; a value given from outside is the user's choice."""
    spec, errors, _ = _errors(["tau=9"])
    assert errors == [] and spec.params[0].value.value == 9


def test_every_command_that_reads_a_spec_takes_set_and_fmt_does_not():
    from kdsl.catalog.settings import BY_NAME

    assert BY_NAME["params"].commands == ("check", "explain", "graph", "train", "teacher-cache", "sweep")
    for command in BY_NAME["params"].commands:
        code, out, _ = run_cli_in_process(command, "--help")
        assert code == 0 and "--set NAME=VALUE" in out, command
    code, out, _ = run_cli_in_process("fmt", "--help")  # fmt rewrites the text as written: no values to give
    assert code == 0 and "--set" not in out


def test_check_with_set_reports_at_both_places_and_imports_neither_torch_nor_optuna():
    program = ("import sys\nfrom kdsl.cli.app import main\ntry:\n    main(sys.argv[1:])\n"
               "except SystemExit as e:\n    code = e.code\n"
               "print('@@', code, 'torch' in sys.modules, 'optuna' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", program, "check", SWEEP_SPEC, "--set", "tau=0"], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    out, _, tail = proc.stdout.rpartition("@@ ")
    assert tail.split() == ["1", "False", "False"], proc.stdout + proc.stderr
    assert "kd_sweep.kd:15:44: error[KD312]: 'tau' of 'kl_div' must be > 0, got 0" in out
    assert "its value given by --set at --set:1:5" in out and "kd_sweep.kd:5:7" in out


def test_compile_and_explain_take_params():
    torch = pytest.importorskip("torch")
    from kdsl.reports.explain import explain

    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    spec = kdsl.loads(SPEC, "<t>")
    with kdsl.compile(spec, params={"tau": 2}, student=student, teacher=teacher,
                      example_input=torch.randn(2, 4)) as d:
        assert "params: tau = 2 (params=; search uniform(1, 8)), kd_weight = 0.9" in explain(d)
    with pytest.raises(KdslError) as info:
        kdsl.compile(spec, params={"tau": -1}, student=student, teacher=teacher)
    assert info.value.diagnostics[0].code == "KD312"
