"""The VS Code extension's TextMate grammar: generated from the statement table and up to date, and
right on the annotated samples (editors/vscode/tests/*.test.kd) when its npm tools are installed
(``cd editors/vscode && npm install``)."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from kdsl.lang.statements import STATEMENT_KEYWORDS

VSCODE = pathlib.Path(__file__).resolve().parents[2] / "editors" / "vscode"
sys.path.insert(0, str(VSCODE))

import make_grammar  # noqa: E402


def test_the_committed_grammar_is_generated_from_the_statement_table():
    assert make_grammar.main(["--check"]) == 0, "run python editors/vscode/make_grammar.py"
    statement = json.loads(make_grammar.OUT.read_text())["repository"]["statement"]["match"]
    assert all(f"|{w}|" in statement.replace("(?:", "|").replace(")", "|") for w in STATEMENT_KEYWORDS)


def test_the_extension_declares_the_grammar_and_starts_kdsl_lsp():
    package = json.loads((VSCODE / "package.json").read_text())
    assert package["contributes"]["grammars"][0]["path"] == "./syntaxes/kdsl.tmLanguage.json"
    assert package["contributes"]["languages"][0]["extensions"] == [".kd"]
    setting = package["contributes"]["configuration"]["properties"]["kdsl.server.command"]
    assert setting["default"] == ["kdsl", "lsp"]


def test_the_grammar_on_the_annotated_samples():
    tool = VSCODE / "node_modules" / ".bin" / "vscode-tmgrammar-test"
    if not tool.exists() or shutil.which("node") is None:
        pytest.skip("the grammar test tool is not installed: cd editors/vscode && npm install")
    samples = sorted(str(p.relative_to(VSCODE)) for p in (VSCODE / "tests").glob("*.test.kd"))
    done = subprocess.run([str(tool), "-g", "syntaxes/kdsl.tmLanguage.json", *samples], cwd=VSCODE,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
