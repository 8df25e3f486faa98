"""`kdsl fmt`: the canonical layout is a fixed point, keeps the meaning and the comments, and the
command reports with the documented exit codes.

Golden pairs live in tests/language/fmt/: NAME.kd formatted must equal NAME.formatted
(regenerate with KDSL_UPDATE_GOLDEN=1 and review the diff).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kdsl.lang import fmt as fmt_module
from kdsl.lang import ir
from kdsl.lang.fmt import FormatError, format_text, lowered_statements
from kdsl.lang.printer import statement_text
from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]
ALL_SPECS = sorted(p for folder in ("specs", "examples", "tests") for p in (ROOT / folder).rglob("*.kd"))
SHIPPED = sorted((ROOT / "specs").rglob("*.kd")) + sorted((ROOT / "examples").rglob("*.kd"))
GOLDEN = sorted((ROOT / "tests" / "language" / "fmt").glob("*.kd"))
UNFORMATTED = 'student\nrecord s=output of student   # logits\nloss l = model_loss( s )\n'


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _without_syntax_errors(paths):
    return [p for p in paths if not lowered_statements(p.read_text(), _rel(p))[1]]


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("path", _without_syntax_errors(ALL_SPECS), ids=_rel)
def test_formatting_is_a_fixed_point_and_keeps_the_statements(path: Path):
    text = path.read_text()
    once = format_text(text, _rel(path))
    assert once.ok, once.diagnostics
    twice = format_text(once.text, _rel(path))
    assert twice.text == once.text
    before, _ = lowered_statements(text)
    after, problems = lowered_statements(once.text)
    assert not problems and before and after == before


def test_the_round_trip_covers_most_files():
    usable = _without_syntax_errors(ALL_SPECS)
    assert set(SHIPPED) <= set(usable) and len(usable) >= 35


@pytest.mark.parametrize("path", SHIPPED, ids=_rel)
def test_shipped_specs_are_formatted(path: Path):
    result = format_text(path.read_text(), _rel(path))
    assert result.ok and not result.changed, _rel(path)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_layout(path: Path):
    expected = path.with_suffix(".formatted")
    result = format_text(path.read_text(), path.name)
    assert result.ok, result.diagnostics
    if os.environ.get("KDSL_UPDATE_GOLDEN"):
        expected.write_text(result.text)
    assert result.text == expected.read_text()


# ------------------------------------------------------------------------------ the printer
def test_every_statement_kind_prints_back_to_itself():
    statements, problems = lowered_statements((ROOT / "tests/language/fmt/layout.kd").read_text())
    assert not problems
    kinds = {s.kind for s in statements}
    assert kinds == {"model", "record", "deliver", "connector", "loss", "train", "include", "import"}
    for stmt in statements:
        text = statement_text(stmt)
        again, problems = lowered_statements(text)
        assert not problems and again == [stmt], text


@pytest.mark.parametrize("line", [
    "student",
    'teacher t2 = model("pkg.mod:make", 3, k=[1, 2]) from "w.pt" trainable',
    "record x = input of student.fc",
    'record x = input "mask" of student.head call 2',
    "record x = output of student.layer1 all calls",
    'record x = output of function "pkg.ops:f" in teacher',
    "record x = param student.layer2.0.weight",
    'deliver output of method "pkg.heads:Head.go" from teacher to student keep 5',
    "override loss l = kl_div(s, t, tau=4) * linear(0.0, 1.0, epochs=5)",
    'include "base.kd"',
    'import "pkg.parts"',
])
def test_canonical_lines_print_as_written(line: str):
    (stmt,), problems = lowered_statements(line)
    assert not problems
    assert statement_text(stmt) == line


def test_strings_keep_their_escapes():
    (stmt,), _ = lowered_statements('include "a\\"b\\\\c\\nd\\te"')
    assert stmt.path == 'a"b\\c\nd\te'
    assert statement_text(stmt) == 'include "a\\"b\\\\c\\nd\\te"'


def test_numbers_keep_their_spelling():
    result = format_text("student\nloss l = mse(s, t, eps=5e-4, w=1., n=- 3) * 1E2\n")
    assert result.text == "student\nloss l = mse(s, t, eps=5e-4, w=1., n=-3) * 1E2\n"
    (_, loss), _ = lowered_statements(result.text)
    assert loss.call.kwargs[0].value == ir.Const(value=0.0005) and loss.weight == ir.Const(value=100.0)


# ------------------------------------------------------------------------------ layout rules
def test_comments_and_blank_lines():
    text = ("\n\n# head\n\n\n\nstudent   # me\n"
            "loss a = f(x,  # inner\n  y)  # tail\n"
            "loss bbb = g()\n# between\nloss c = h()\n\n\n")
    assert format_text(text).text == (
        "# head\n\nstudent  # me\nloss a = f(\n    x,  # inner\n    y,\n)  # tail\nloss bbb = g()\n"
        "# between\nloss c = h()\n")


# ------------------------------------------------------------------------------ comments inside a statement
def test_trailing_comments_inside_a_call_stay_after_their_argument():
    text = ("loss kd = kl_div(s,     # the student's logits\n"
            "                 t,  # the teacher's\n"
            "                 tau=4) * 0.9   # most of the weight\n")
    assert format_text(text).text == (
        "loss kd = kl_div(\n"
        "    s,  # the student's logits\n"
        "    t,  # the teacher's\n"
        "    tau=4,\n"
        ") * 0.9  # most of the weight\n")


def test_comment_lines_inside_a_call_stay_above_their_argument():
    text = ('student = model("kdsl.zoo:mlp",  # the factory\n'
            "  # how wide\n"
            "  hidden=8,\n"
            "  # nothing after this\n"
            ")\n")
    assert format_text(text).text == (
        "student = model(\n"
        '    "kdsl.zoo:mlp",  # the factory\n'
        "    # how wide\n"
        "    hidden=8,\n"
        "    # nothing after this\n"
        ")\n")


def test_comments_in_a_nested_call_go_with_the_outer_argument_holding_them():
    text = "loss a = f(g(x,  # inner\n  y), z)\n"
    assert format_text(text).text == "loss a = f(\n    g(x, y),  # inner\n    z,\n)\n"


def test_comments_inside_a_block_setting_and_a_list_keep_their_place():
    text = ("train {\n  data = dataset(\"kdsl.data:digits\",  # the data\n"
            "    batch_size=64)\n}\nloss a = f([x,  # first\n  y])\n")
    assert format_text(text).text == (
        "train {\n"
        "  data = dataset(\n"
        '      "kdsl.data:digits",  # the data\n'
        "      batch_size=64,\n"
        "  )\n"
        "}\n"
        "loss a = f(\n"
        "    [x, y],  # first\n"
        ")\n")


def test_formatting_comments_inside_a_statement_is_stable():
    text = "loss kd = kl_div(s,  # a\n  # b\n  t)  # c\n"
    once = format_text(text).text
    assert format_text(once).text == once


def test_trailing_comments_line_up_on_consecutive_lines():
    text = "record a = output of student # one\nrecord bb = output of student.fc   # two\n"
    assert format_text(text).text == (
        "record a  = output of student     # one\nrecord bb = output of student.fc  # two\n")


def test_only_statements_of_one_kind_line_up():
    text = "record a = output of student\nloss bbbbbb = f(a)\noverride loss cc = f(a)\n"
    assert format_text(text).text == text


def test_train_block_layout():
    text = "train {\n\n\n epochs=3\n\n\n   seed =  1 # s\n\n}\ntrain {}\n"
    assert format_text(text).text == "train {\n  epochs = 3\n\n  seed = 1  # s\n}\ntrain {\n}\n"


def test_windows_line_endings_and_empty_files():
    assert format_text("student\r\nloss l = f( x )\r\n").text == "student\nloss l = f(x)\n"
    assert format_text("").text == "" and format_text("\n\n  \n").text == ""
    assert format_text("# only a comment").text == "# only a comment\n"


def test_syntax_errors_are_returned_not_formatted():
    result = format_text("student\nloss l = f(x y)\n", "bad.kd")
    assert not result.ok and not result.changed and result.text is None
    assert [d.code for d in result.diagnostics] == ["KD103"]
    assert result.diagnostics[0].span.line == 2


def test_a_printer_bug_cannot_change_a_file(monkeypatch):
    monkeypatch.setattr(fmt_module, "statement_text", lambda stmt, spelling=None: "student")
    with pytest.raises(FormatError, match="would change its meaning"):
        format_text("student\nrecord s = output of student\n", "x.kd")


# ------------------------------------------------------------------------------ the command
# The first test runs `kdsl fmt` as a process of its own; the others run the same entry point in
# this process (no interpreter and import per call: seconds on a busy machine), with the exit code,
# stdout and stderr a process would give.
def test_check_passes_on_the_shipped_specs(cli):
    code, out, err = cli("fmt", "--check", *[_rel(p) for p in SHIPPED])
    assert code == 0, out + err
    assert out == "" and f"{len(SHIPPED)} files already formatted" in err


def test_check_shows_a_diff_and_changes_nothing(tmp_path):
    cli = run_cli_in_process
    spec = tmp_path / "s.kd"
    spec.write_text(UNFORMATTED)
    code, out, err = cli("fmt", "--check", str(spec))
    assert code == 1
    assert out.splitlines()[:2] == [f"--- {spec}", f"+++ {spec} (formatted)"]
    for line in ("-record s=output of student   # logits", "-loss l = model_loss( s )",
                 "+record s = output of student  # logits", "+loss l = model_loss(s)"):
        assert line in out.splitlines()
    assert "1 file would be reformatted" in err
    assert spec.read_text() == UNFORMATTED


def test_fmt_rewrites_in_place_and_keeps_permissions(tmp_path):
    cli = run_cli_in_process
    spec = tmp_path / "s.kd"
    spec.write_text(UNFORMATTED)
    spec.chmod(0o640)
    code, out, err = cli("fmt", str(spec))
    assert code == 0 and f"reformatted {spec}" in err
    assert spec.read_text() == format_text(UNFORMATTED).text
    assert stat.S_IMODE(spec.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.kd"]  # no temporary file left
    code, _, err = cli("fmt", str(spec))
    assert code == 0 and "1 file already formatted" in err
    assert cli("fmt", "--check", str(spec))[0] == 0


def test_a_file_with_syntax_errors_is_left_untouched(tmp_path):
    cli = run_cli_in_process
    bad, good = tmp_path / "bad.kd", tmp_path / "good.kd"
    bad.write_text("student\nloss l = f(x y)   # broken\n")
    good.write_text(UNFORMATTED)
    for flags in (["--check"], []):
        code, out, err = cli("fmt", *flags, str(bad))
        assert code == 1 and out == ""
        assert "error[KD103]" in err and f"{bad}:2:14" in err and "not formatted" in err
        assert bad.read_text() == "student\nloss l = f(x y)   # broken\n"
    code, _, err = cli("fmt", str(bad), str(good))
    assert code == 1 and f"reformatted {good}" in err  # the other files are still formatted
    assert good.read_text() == format_text(UNFORMATTED).text


def test_usage_problems_exit_2(tmp_path):
    cli = run_cli_in_process
    spec = tmp_path / "s.kd"
    spec.write_text(UNFORMATTED)
    code, _, err = cli("fmt", str(spec), "no/such/spec.kd")
    assert code == 2 and "KD401" in err and "no/such/spec.kd" in err
    assert spec.read_text() == UNFORMATTED  # nothing is written when a file cannot be read
    assert cli("fmt", str(tmp_path))[0] == 2
    assert cli("fmt")[0] == 2
    assert cli("fmt", "--no-such-flag", str(spec))[0] == 2


def test_fmt_does_not_import_torch():
    program = ("import sys\nfrom kdsl.cli.app import main\ntry:\n"
               "    main(['fmt', '--check', 'specs/kd.kd', 'specs/lad.kd', "
               "'tests/diagnostics/syntax/missing_comma.kd'])\n"
               "except SystemExit:\n    pass\n"
               "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH", proc.stderr
