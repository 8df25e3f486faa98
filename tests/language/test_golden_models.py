"""Golden diagnostics of `kdsl check` against real models (issue: catch every mistake before
training). Each tests/diagnostics_models/NAME.kd starts with `# args: ...`, the flags to check it
with; what `kdsl check` prints must equal NAME.expected. KDSL_UPDATE_GOLDEN=1 regenerates."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
from pathlib import Path

import pytest

from kdsl.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "tests" / "diagnostics_models").glob("*.kd"))


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden_with_models(case: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    first = case.read_text().splitlines()[0]
    assert first.startswith("# args: "), "a model golden case starts with '# args: ...'"
    args = shlex.split(first[len("# args: "):])
    rel = case.relative_to(ROOT).as_posix()
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            main(["check", rel, *args])
        except SystemExit as exc:
            code = exc.code
    text = out.getvalue()
    expected = case.with_suffix(".expected")
    if os.environ.get("KDSL_UPDATE_GOLDEN"):
        expected.write_text(text)
    assert text == expected.read_text()
    assert code == 1 and "Traceback" not in text
