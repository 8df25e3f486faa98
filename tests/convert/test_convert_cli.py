"""`kdsl convert`: exit 0 exact, 1 approximated or dropped, 2 a config that cannot be read (a
located error, never a traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app

CONFIGS = Path(__file__).parent / "configs"


def run(*args):
    return CliRunner().invoke(app, ["convert", *args])


def test_exact_conversion_exits_0_and_writes_a_spec_that_checks(tmp_path):
    out = tmp_path / "out.kd"
    result = run(str(CONFIGS / "all_parts.py"), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert kdsl.check(out) == [] or all(not d.is_error for d in kdsl.check(out))
    assert "converted from mmrazor: exact" in result.output


def test_approximated_conversion_exits_1_with_the_report():
    result = run(str(CONFIGS / "kd_cifar.yaml"), "--from", "torchdistill")
    assert result.exit_code == 1
    assert "kd_cifar.yaml:2: dropped: datasets" in result.output
    assert "loss kd = kd(" in result.output  # the spec on stdout


def test_bad_config_exits_2_located_without_traceback():
    result = run(str(CONFIGS / "bad_tag.yaml"))
    assert result.exit_code == 2
    assert "bad_tag.yaml:4:" in result.output and "error[KD763]" in result.output
    assert "Traceback" not in result.output


def test_unknown_format_is_a_usage_error():
    result = run(str(CONFIGS / "kd_logits.py"), "--from", "keras")
    assert result.exit_code == 2 and "KD701" in result.output


def test_converting_imports_neither_torch_nor_the_configs_packages():
    program = ("import sys, kdsl\n"
               f"for name in {[str(CONFIGS / 'all_parts.py'), str(CONFIGS / 'hint_stages.yaml')]!r}:\n"
               "    kdsl.convert(open(name).read(), path=name)\n"
               "print(sorted(m for m in ('torch', 'mmengine', 'mmrazor', 'torchdistill', 'torchvision')"
               " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          cwd=CONFIGS.parents[2], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
