"""Every command the README shows, run as a user would (templates with placeholders are
exercised by the CLI tests named next to them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def test_readme_has_no_placeholders_left():
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)*_(?:TABLE|SECONDS|MINUTES|DELTA|TIME)\b", README)


def test_quick_start_main_job(tmp_path):
    """`kdsl train specs/digits/kd.kd`, from a fresh directory holding the specs."""
    assert "pip install torch==2.13.0 \".[test]\" && kdsl train specs/digits/kd.kd" in README
    shutil.copytree(ROOT / "specs" / "digits", tmp_path / "specs" / "digits")
    proc = subprocess.run([sys.executable, "-m", "kdsl", "train", "specs/digits/kd.kd"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"student top-1 \d+\.\d\d% next to the teacher's \d+\.\d\d%", proc.stdout)
    summary = json.loads((tmp_path / "runs" / "kd" / "summary.json").read_text())
    assert summary["epochs_done"] == 30 and summary["student"]["top1"] > 95.0
    for name in ("student.pt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "curves.png"):
        assert (tmp_path / "runs" / "kd" / name).exists(), name


def test_check_command_on_all_specs():
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").glob("*.kd"))
    assert "kdsl check specs/*.kd" in README
    proc = subprocess.run([sys.executable, "-m", "kdsl", "check", *specs], cwd=ROOT, env=ENV,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_language_tour_blocks_parse():
    """Each fenced block of the language tour parses (inside a minimal spec where needed)."""
    from kdsl.lang.lower import build_statements
    from kdsl.core.diagnostics import Diagnostics
    from kdsl.core.span import SourceText

    tour = README.split("## The language")[1].split("## From Python")[0]
    blocks = re.findall(r"```\n(.*?)```", tour, re.S)
    assert len(blocks) >= 6
    for block in blocks:
        diags = Diagnostics()
        build_statements(SourceText("<readme>", block), diags)
        assert not diags.items, (block, [d.message for d in diags.items])


def test_python_api_snippet(tmp_path):
    """The README's Python example, on the zoo models, with a teacher checkpoint written here."""
    import torch

    import kdsl
    from kdsl.zoo import resnet8x4, resnet32x4

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / "specs" / "checkpoints").mkdir()
    teacher = resnet32x4(num_classes=100)
    torch.save(teacher.state_dict(), tmp_path / "specs" / "checkpoints" / "resnet32x4_cifar100.pt")
    student = resnet8x4(num_classes=100)
    x0 = torch.randn(2, 3, 32, 32)
    loader = [(torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))) for _ in range(2)]
    spec = kdsl.load(tmp_path / "specs" / "fitnets.kd")
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x0) as distiller:
        opt = torch.optim.SGD(distiller.parameters(), lr=0.05)
        for x, y in loader:
            result = distiller.step(x, target=y)
            result.loss.backward()
            assert set(result.losses) == {"hint", "kd", "task"}
            assert result.student_output.shape == (4, 100)
            opt.step()
            opt.zero_grad()


def test_bench_commands_run(tmp_path):
    """`python bench/digits_table.py` and `python bench/overhead.py`, shortened."""
    proc = subprocess.run([sys.executable, "bench/digits_table.py", "--seeds", "1", "--epochs", "1",
                           "--out", str(tmp_path / "table")], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "table" / "table.md").read_text().count("\n| ") >= 5
    proc = subprocess.run([sys.executable, "bench/overhead.py", "--steps", "4", "--growth-steps", "60"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "digits_teacher -> digits_cnn" in proc.stdout and "growth" in proc.stdout


@pytest.mark.parametrize("command, covered_by", [
    ("kdsl check SPEC --student REF --teacher REF --input-shape 2,3,32,32", "tests/cli/test_inspect_cli.py"),
    ("kdsl explain SPEC", "tests/cli/test_inspect_cli.py"),
    ("kdsl graph SPEC", "tests/cli/test_inspect_cli.py"),
    ("kdsl list", "tests/catalog/test_registry.py"),
    ("kdsl schema", "tests/language/test_roundtrip.py"),
    ("explain-code KD201", "tests/cli/test_check_cli.py"),
    ("kdsl train SPEC", "tests/train"),
])
def test_templates_are_covered(command, covered_by):
    assert command.split(" SPEC")[0].split(" [")[0] in README
    target = ROOT / covered_by
    assert target.exists()
    text = "".join(p.read_text() for p in ([target] if target.is_file() else target.rglob("*.py")))
    verb = command.split()[1] if command.startswith("kdsl") else command.split()[0]
    assert f'"{verb}"' in text or f"'{verb}'" in text


def test_codes_table_lists_every_code():
    from kdsl.core.codes import CODES

    for code, entry in CODES.items():
        assert f"| {code} | {entry.title} |" in README, code
