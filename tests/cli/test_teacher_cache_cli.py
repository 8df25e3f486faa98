"""`kdsl teacher-cache` and `kdsl train --teacher-cache` through the real command line (in
process, with typer's runner): output, exit codes, refusals before writing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kdsl.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
KD = str(ROOT / "specs" / "digits" / "kd.kd")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def kdsl(*args: str):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "store"
    code, stdout, stderr = kdsl("teacher-cache", KD, "--out", str(out), "--threads", "1")
    assert code == 0, stdout + stderr
    assert "1 record(s), 1 epoch(s) x 1438 samples = 78.6 KiB, 22.5 KiB of it the inputs' digests" in stdout
    assert "t_logits: teacher [10] (float32)" in stdout and f"wrote {out}" in stdout
    return out


def test_train_reads_the_store(tmp_path, store):
    code, stdout, stderr = kdsl("train", KD, "--teacher-cache", str(store), "--epochs", "1", "--steps-per-epoch",
                                "3", "--threads", "1", "--out", str(tmp_path / "run"))
    assert code == 0, stdout + stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["teacher_cache"] == str(store)


def test_max_size_refuses_before_writing(tmp_path):
    out = tmp_path / "big"
    code, stdout, stderr = kdsl("teacher-cache", KD, "--out", str(out), "--max-size", "10K", "--threads", "1")
    assert code == 1 and "KD715" in stderr, stdout + stderr
    assert "78.6 KiB (80528 bytes), more than --max-size 10.0 KiB; nothing was written" in stderr
    assert "78.6 KiB" in stdout  # the size is printed before the refusal
    assert not out.exists() and "Traceback" not in stderr


def test_bad_max_size_is_a_usage_error(tmp_path):
    code, _, stderr = kdsl("teacher-cache", KD, "--out", str(tmp_path / "s"), "--max-size", "lots")
    assert code == 2 and "KD701" in stderr and "500M" in stderr


def test_existing_store_needs_overwrite(store):
    code, _, stderr = kdsl("teacher-cache", KD, "--out", str(store), "--threads", "1")
    assert code == 2 and "KD706" in stderr and "--overwrite" in stderr
    assert (store / "manifest.json").exists()


def test_directory_that_is_not_a_store_is_left_alone(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    code, _, stderr = kdsl("teacher-cache", KD, "--out", str(tmp_path), "--overwrite", "--threads", "1")
    assert code == 2 and "not a teacher store" in stderr
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_damaged_store_refuses_without_traceback(tmp_path, store):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    with open(copy / "t_logits.bin", "r+b") as fh:
        fh.truncate(12)
    code, stdout, stderr = kdsl("train", KD, "--teacher-cache", str(copy), "--epochs", "1", "--threads", "1",
                                "--out", str(tmp_path / "run"))
    assert code == 1 and "KD710" in stderr and "truncated" in stderr, stdout + stderr
    assert "Traceback" not in stdout + stderr


def test_missing_store_refuses(tmp_path):
    code, _, stderr = kdsl("train", KD, "--teacher-cache", str(tmp_path / "none"), "--epochs", "1", "--threads",
                           "1", "--out", str(tmp_path / "run"))
    assert code == 1 and "KD710" in stderr and "no such directory" in stderr


def test_edited_manifest_is_shown_where_it_was_edited(tmp_path, store):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["records"]["t_logits"]["dtype"] = "int64"  # the logits would be cast
    text = json.dumps(manifest, indent=1, sort_keys=True)
    (copy / "manifest.json").write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if '"dtype": "int64"' in row)
    code, stdout, stderr = kdsl("train", KD, "--teacher-cache", str(copy), "--epochs", "1", "--threads", "1",
                                "--out", str(tmp_path / "run"))
    assert code == 1 and "KD710" in stderr and f"manifest.json:{line}:" in stderr, stdout + stderr
    assert '"dtype": "int64"' in stderr and "^" in stderr and "Traceback" not in stdout + stderr
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "checkpoint.pt").exists()


def test_fp16_on_a_cpu_is_refused_before_writing(tmp_path):
    code, _, stderr = kdsl("teacher-cache", KD, "--out", str(tmp_path / "s"), "--amp", "fp16", "--threads", "1")
    assert "KD705" in stderr and "--amp fp16 needs a GPU" in stderr and code != 0
    assert not (tmp_path / "s").exists() and not list(tmp_path.iterdir())
