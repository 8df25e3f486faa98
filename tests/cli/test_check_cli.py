"""`kdsl check`: exit codes, JSON output, colour, no tracebacks, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = "specs/digits/kd.kd"  # its teacher.pt ships: no KD530 warning on a fresh clone
BAD = "tests/diagnostics/names/unknown_record.kd"


def test_exit_codes(cli):
    assert cli("check", GOOD)[0] == 0
    assert cli("check", "specs/kd.kd", "specs/fitnets.kd")[0] == 0
    code, out, _ = cli("check", BAD)
    assert code == 1 and "error[KD201]" in out
    assert cli("check", GOOD, BAD)[0] == 1
    code, _, err = cli("check", "no/such/spec.kd")
    assert code == 2 and "KD401" in err and "no/such/spec.kd" in err
    assert cli("check", "--format", "xml", GOOD)[0] == 2
    assert cli("check", "--no-such-flag", GOOD)[0] == 2
    assert cli("check")[0] == 2


def test_warnings_do_not_fail(cli):
    code, out, _ = cli("check", "tests/diagnostics/names/warnings.kd")
    assert code == 0 and "warning[KD250]" in out and "5 warnings" in out


def test_json_output(cli):
    code, out, _ = cli("check", "--format", "json", BAD, GOOD)
    assert code == 1
    diags = json.loads(out)
    assert [d["code"] for d in diags] == ["KD201"]
    d = diags[0]
    assert d["severity"] == "error" and d["message"] == "unknown record 's_logit'"
    assert d["span"] == {"file": BAD, "line": 7, "column": 18, "end_line": 7, "end_column": 25}
    assert d["hints"][0].startswith("did you mean 's_logits'?")
    code, out, _ = cli("check", "--format", "json", GOOD)
    assert code == 0 and json.loads(out) == []


def test_colour_only_when_asked_or_on_a_terminal(cli):
    _, plain, _ = cli("check", BAD)
    assert "\x1b[" not in plain
    _, coloured, _ = cli("check", BAD, env={"FORCE_COLOR": "1", "NO_COLOR": ""})
    assert "\x1b[1;31merror\x1b[0m" in coloured


@pytest.mark.parametrize("content", [b"\x00\x01\x02binary", b"\xff\xfe not utf-8", b"", b"{{{{", b"\"" * 3])
def test_never_a_traceback(tmp_path, cli, content):
    f = tmp_path / "weird.kd"
    f.write_bytes(content)
    code, out, err = cli("check", str(f))
    assert code in (1, 2)
    assert "Traceback" not in out + err


def test_directory_is_a_usage_error(tmp_path, cli):
    code, out, err = cli("check", str(tmp_path))
    assert code == 2 and "Traceback" not in err


def test_check_does_not_import_torch():
    program = (
        "import sys\n"
        "from kdsl.cli.app import main\n"
        "try:\n"
        f"    main(['check', {GOOD!r}, 'specs/ofd.kd', 'specs/lad.kd', 'specs/composed.kd', "
        f"'tests/diagnostics/arguments/bad_arguments.kd'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    assert proc.stdout.strip().splitlines()[-1] == "NO-TORCH", proc.stderr


def test_import_kdsl_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys, kdsl; kdsl.loads('student\\n');"
                           "print('torch' in sys.modules)"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip() == "False", proc.stderr


def test_explain_code(cli):
    code, out, _ = cli("explain-code", "KD201")
    assert code == 0 and out.startswith("KD201: unknown record")
    code, _, err = cli("explain-code", "KD2O1")
    assert code == 2 and "'KD201'" in err and "did you mean" in err


def test_every_emitted_code_is_documented():
    import re

    from kdsl.core.codes import CODES

    used = set()
    for path in (ROOT / "kdsl").rglob("*.py"):
        used |= set(re.findall(r'"(KD\d{3})"', path.read_text()))
    assert used <= set(CODES), sorted(used - set(CODES))


def test_module_entry_point(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "check" in out and "train" in out


# ---------------------------------------------------------------------------- the exit-code rule
def _main(capsys, *args: str):
    """``kdsl ARGS`` in this process: (exit code, stdout, stderr)."""
    from kdsl.cli.app import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return info.value.code, out, err


EXIT_CASES = [
    # 0: ok
    ("check", (GOOD,), 0),
    ("list", ("losses",), 0),
    # 1: the input has errors
    ("check", (BAD,), 1),
    ("train", (BAD,), 1),
    ("explain", (BAD,), 1),
    ("graph", (BAD,), 1),
    # 2: usage or I/O
    ("check", ("no/such/spec.kd",), 2),
    ("check", ("--no-such-flag", GOOD), 2),
    ("train", ("no/such/spec.kd",), 2),
    ("train", (GOOD, "--epochs", "0"), 2),
    ("train", (GOOD, "--device", "tpu"), 2),
    ("explain", ("no/such/spec.kd",), 2),
    ("graph", ("no/such/spec.kd",), 2),
    ("graph", (GOOD, "--format", "svgz"), 2),
    ("list", ("no_such_component",), 2),
    ("explain-code", ("KD999",), 2),
]


@pytest.mark.parametrize("command, args, expected", EXIT_CASES,
                         ids=[f"{c}-{e}-{i}" for i, (c, _, e) in enumerate(EXIT_CASES)])
def test_exit_code_rule(capsys, command, args, expected):
    code, out, err = _main(capsys, command, *args)
    assert code == expected, out + err


def test_exit_code_rule_fmt(capsys, tmp_path):
    broken = tmp_path / "broken.kd"
    broken.write_text("student\nloss = (\n")
    assert _main(capsys, "fmt", "--check", str(broken))[0] == 1
    assert _main(capsys, "fmt", str(tmp_path / "missing.kd"))[0] == 2


@pytest.mark.parametrize("command, target", [
    ("check", "kdsl.lang.loader.check_file"),
    ("explain", "kdsl.lang.loader.check_file"),
    ("graph", "kdsl.lang.loader.check_file"),
    ("train", "kdsl.training.api.train"),
    ("list", "kdsl.cli.catalog_view.show_catalog"),
])
@pytest.mark.parametrize("raised, expected", [(RuntimeError("boom"), 3), (KeyboardInterrupt(), 130)])
def test_internal_errors_and_interrupts(capsys, monkeypatch, command, target, raised, expected):
    """A bug is exit 3 with a request for a report; Ctrl-C is 130; never a traceback."""
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.delenv("KDSL_DEBUG", raising=False)
    monkeypatch.setattr(target, fail)
    code, out, err = _main(capsys, command, *(() if command == "list" else (GOOD,)))
    assert code == expected
    assert ("This is a bug in kdsl" in err and "please report it" in err) if expected == 3 else "interrupted" in err


def test_exit_code_for_diagnostics():
    from kdsl.cli.errors import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, exit_code_for
    from kdsl.core.diagnostics import make

    assert exit_code_for([]) == EXIT_OK
    assert exit_code_for([make("KD250", "unused", severity="warning")]) == EXIT_OK
    assert exit_code_for([make("KD701", "bad flag")]) == EXIT_USAGE
    assert exit_code_for([make("KD201", "unknown record")]) == EXIT_ERRORS
    assert exit_code_for([make("KD701", "bad flag"), make("KD509", "bad checkpoint")]) == EXIT_ERRORS
