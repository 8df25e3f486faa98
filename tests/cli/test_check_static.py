"""Plain `kdsl check SPEC` (issue #27, item 9): what it can know without torch it reports, located
(a `kdsl.*` reference that does not exist, a checkpoint that is not there), and its "ok" says what
it did not examine. `kdsl train` reports the same reference error at the same place."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli():
    """``kdsl ARGS`` in this process, through the entry point (an interpreter that imports torch
    costs seconds on a busy machine; tests/cli/test_check_cli.py runs `python -m kdsl` itself)."""
    return run_cli_in_process


NOT_EXAMINED = "ok (models, module paths and shapes not examined: add --dry-run)"


@pytest.fixture
def digits(tmp_path) -> Path:
    """A copy of the main job's spec beside its teacher: edit it to make a mistake."""
    shutil.copy(ROOT / "specs" / "digits" / "kd.kd", tmp_path / "kd.kd")
    shutil.copy(ROOT / "specs" / "digits" / "teacher.pt", tmp_path / "teacher.pt")
    return tmp_path / "kd.kd"


def _edit(spec: Path, old: str, new: str) -> Path:
    text = spec.read_text()
    assert old in text
    spec.write_text(text.replace(old, new))
    return spec


def _check_without_torch(*args: str):
    """`kdsl check ARGS` in a fresh interpreter: (exit code, output, whether torch was imported)."""
    program = ("import sys\nfrom kdsl.cli.app import main\ntry:\n    main(%r)\nexcept SystemExit as e:\n"
               "    code = e.code\nprint('@@', code, 'torch' in sys.modules)\n") % (["check", *args],)
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    out, _, tail = proc.stdout.rpartition("@@ ")
    code, torch_imported = tail.split()
    return int(code), out + proc.stderr, torch_imported == "True"


def test_a_misspelled_data_factory_is_located_with_did_you_mean(digits):
    _edit(digits, '"kdsl.data:digits"', '"kdsl.data:digitz"')
    code, out, torch_imported = _check_without_torch(str(digits))
    assert code == 1 and not torch_imported
    assert f"{digits}:15:18: error[KD503]: 'kdsl.data' has no attribute 'digitz'" in out
    assert "^^^^^^^^^^^^^^^^^^" in out and "did you mean 'digits'?" in out


def test_a_misspelled_kdsl_module_and_model_factory(digits):
    _edit(digits, '"kdsl.zoo:digits_cnn"', '"kdsl.zo:digits_cnn"')
    _edit(digits, '"kdsl.zoo:digits_teacher"', '"kdsl.zoo:digits_teachr"')
    code, out, torch_imported = _check_without_torch(str(digits))
    assert code == 1 and not torch_imported
    assert f"{digits}:5:17: error[KD404]" in out and "'kdsl.zoo'?" in out
    assert f"{digits}:6:17: error[KD503]: 'kdsl.zoo' has no attribute 'digits_teachr'" in out
    assert "did you mean 'digits_teacher'?" in out


def test_a_missing_checkpoint_is_a_located_warning(digits):
    (digits.parent / "teacher.pt").unlink()
    code, out, torch_imported = _check_without_torch(str(digits))
    assert code == 0 and not torch_imported
    assert f"{digits}:6:49: warning[KD530]: checkpoint not found: {digits.parent / 'teacher.pt'}" in out
    assert "`kdsl train` needs the file" in out


def test_ok_says_what_was_not_examined(digits):
    code, out, _ = _check_without_torch(str(digits))
    assert code == 0 and out.strip() == f"{digits}: {NOT_EXAMINED}"


def test_with_models_ok_is_plain(cli):
    code, out, _ = cli("check", "specs/digits/kd.kd", "--dry-run")
    assert code == 0 and out.rstrip().endswith("specs/digits/kd.kd: ok")


def test_train_reports_the_reference_at_its_spec_position(digits, cli):
    _edit(digits, '"kdsl.data:digits"', '"kdsl.data:digitz"')
    code, out, err = cli("train", str(digits), "--epochs", "1", "--out", str(digits.parent / "run"))
    assert code == 1
    assert f"{digits}:15:18: error[KD503]: 'kdsl.data' has no attribute 'digitz'" in out + err
    assert not (digits.parent / "run").exists()


def test_train_locates_a_data_factory_it_cannot_import(digits, cli):
    """Outside kdsl a reference is imported only by `train`: what fails there is located too."""
    _edit(digits, '"kdsl.data:digits"', '"nosuchpkg_for_kdsl.data:digits"')
    code, out, err = cli("train", str(digits), "--epochs", "1", "--out", str(digits.parent / "run"))
    assert code == 1
    assert f"{digits}:15:18: error[KD404]: cannot import \"nosuchpkg_for_kdsl.data\"" in out + err
    assert "^^^^^^^^^^^^^^^^^^" in out + err
