"""`kdsl check SPEC...` without options (issue #27, item 5b) is answered by kdsl.cli.entry without
typer, click or rich, whose import and app building cost about as much as the check itself; with
any option it goes through the typer app. Both paths print the same and exit alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdsl.cli.entry import is_plain_check

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "specs" / "digits" / "kd.kd")
CLI_LIBRARIES = ("typer", "click", "rich", "torch")


def _run_kdsl(*args: str):
    """`kdsl ARGS` in a fresh interpreter: (exit code, stdout, stderr, which of the CLI libraries
    and torch it imported). The arguments are passed to main(), which then exits by SystemExit
    (as the console script, it ends the process at once: test_the_process_exits_with_its_output)."""
    program = ("import sys\nfrom kdsl.cli.entry import main\ntry:\n"
               "    main(%r)\n"
               "except SystemExit as e:\n    code = e.code\n"
               "sys.stdout.flush()\nprint('@@', code, *[m for m in %r if m in sys.modules])\n"
               ) % (list(args), CLI_LIBRARIES)
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    out, _, tail = proc.stdout.rpartition("@@ ")
    code, *imported = tail.split()
    return int(code), out, proc.stderr, imported


def test_plain_check_imports_no_cli_library():
    code, out, err, imported = _run_kdsl("check", DIGITS)
    assert (code, err) == (0, "") and out.startswith(f"{DIGITS}: ok (")
    assert imported == []


@pytest.mark.parametrize("text", [
    "train {\n  epochs = 2\n",                       # a syntax error
    "model s = kdsl.models:nope()\n",                # a spec with errors
])
def test_both_paths_answer_alike(tmp_path, text):
    spec = tmp_path / "bad.kd"
    spec.write_text(text)
    fast = _run_kdsl("check", str(spec), DIGITS)
    typer_path = _run_kdsl("check", "--format", "text", str(spec), DIGITS)
    assert fast[3] == [] and "typer" in typer_path[3]
    assert fast[:3] == typer_path[:3] and fast[0] == 1 and "error[KD" in fast[1]


def test_missing_file_is_a_usage_error_on_both_paths(tmp_path):
    missing = str(tmp_path / "missing.kd")
    fast, typer_path = _run_kdsl("check", missing), _run_kdsl("check", "--format", "text", missing)
    assert fast[:3] == typer_path[:3] and fast[0] == 2 and "KD401" in fast[2]


@pytest.mark.parametrize("args,plain", [
    (["check", "a.kd"], True), (["check", "a.kd", "b.kd"], True),
    (["check"], False), (["check", "--help"], False), (["check", "-h"], False),
    (["check", "a.kd", "--format", "json"], False), (["check", "--", "a.kd"], False),
    (["train", "a.kd"], False), (["--version"], False), ([], False),
])
def test_only_a_plain_check_takes_the_fast_path(args, plain):
    assert is_plain_check(args) is plain


def test_the_process_exits_with_its_output(tmp_path):
    """`python -m kdsl check` ends its process without the interpreter's teardown (a sixth of the
    check's time): the exit code and every line are still those of main(argv), piped or not."""
    spec = tmp_path / "bad.kd"
    spec.write_text("model s = kdsl.models:nope()\n" * 3)
    env = {"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "kdsl", "check", str(spec), DIGITS], cwd=ROOT,
                          capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == _run_kdsl("check", str(spec), DIGITS)[:3]
    # a reader that stops after one line: exit 141 (as for a command that SIGPIPE ended), no complaint
    reader = subprocess.run(f"{sys.executable} -m kdsl check {spec} {DIGITS} | head -c 1 >/dev/null; "
                            "echo ${PIPESTATUS[0]}", shell=True, executable="/bin/bash", cwd=ROOT,
                            capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"})
    assert reader.stdout.strip() in ("1", "141") and "Traceback" not in reader.stderr
