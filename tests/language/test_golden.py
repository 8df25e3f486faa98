"""Golden diagnostics: each tests/diagnostics/**/NAME.kd is checked, and what `kdsl check`
prints must equal NAME.expected exactly. Regenerate with KDSL_UPDATE_GOLDEN=1 (then review the
diff: the expected files are the contract)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from kdsl.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "tests" / "diagnostics").rglob("*.kd"))


def check_output(rel: str):
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            main(["check", rel])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue()


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.relative_to(ROOT / "tests" / "diagnostics").as_posix())
def test_golden(case: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("NO_COLOR", "1")
    rel = case.relative_to(ROOT).as_posix()
    code, text = check_output(rel)
    expected_path = case.with_suffix(".expected")
    if os.environ.get("KDSL_UPDATE_GOLDEN"):
        expected_path.write_text(text)
    assert expected_path.exists(), f"no golden file for {rel}"
    assert text == expected_path.read_text()
    assert code == (1 if "error[" in text else 0)
    assert "Traceback" not in text


def test_every_golden_file_has_a_case():
    for expected in (ROOT / "tests" / "diagnostics").rglob("*.expected"):
        assert expected.with_suffix(".kd").exists(), expected
