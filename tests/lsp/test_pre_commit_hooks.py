""".pre-commit-hooks.yaml: each hook runs its command on the staged *.kd files (pre-commit appends
the file names to ``entry``) and fails exactly when that command does."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from tests.conftest import run_cli_in_process

yaml = pytest.importorskip("yaml", reason="reading .pre-commit-hooks.yaml needs PyYAML")

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOOKS = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}


def _run(hook: dict, *files: pathlib.Path) -> int:
    """The exit status of the hook's command on ``files``, run through kdsl's entry point in this
    process (as ``python -m kdsl`` runs it, without an interpreter's start-up)."""
    words = shlex.split(hook["entry"])
    assert words[0] == "kdsl"
    return run_cli_in_process(*words[1:], *map(str, files), cwd=ROOT)[0]


def test_hooks_are_offered_for_kd_files():
    assert set(HOOKS) == {"kdsl-check", "kdsl-fmt"}
    for hook in HOOKS.values():
        assert hook["language"] == "python" and re.search(hook["files"], "specs/kd.kd")
        assert not re.search(hook["files"], "specs/kd.kd.bak")


def test_check_hook_passes_good_specs_and_fails_bad_ones(tmp_path):
    bad = tmp_path / "bad.kd"
    bad.write_text("student\nrecord s = output of studnet\n")
    assert _run(HOOKS["kdsl-check"], ROOT / "specs" / "kd.kd") == 0
    assert _run(HOOKS["kdsl-check"], ROOT / "specs" / "kd.kd", bad) == 1


def test_fmt_hook_fails_on_unformatted_specs(tmp_path):
    messy = tmp_path / "messy.kd"
    messy.write_text("student\nrecord   s=output of student\n")
    assert _run(HOOKS["kdsl-fmt"], ROOT / "specs" / "kd.kd") == 0
    assert _run(HOOKS["kdsl-fmt"], messy) == 1
    assert messy.read_text() == "student\nrecord   s=output of student\n"  # --check writes nothing
