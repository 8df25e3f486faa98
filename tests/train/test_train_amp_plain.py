"""bf16 autocast on the CPU, and plain supervised training (a student and cross-entropy only)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from kdsl.runtime.distiller import Distiller
from tests.conftest import run_cli_in_process
from train_helpers import BASELINE_SPEC, KD_SPEC, metrics_jsonl, student_weights
from train_helpers import train_in_process as train


def test_amp_bf16_on_cpu_trains(tmp_path):
    # one epoch at a high learning rate is enough for the digits student to learn for real
    flags = dict(epochs=1, lr=0.5, device="cpu")
    summary, printed = train(KD_SPEC, amp="bf16", out=str(tmp_path / "bf16"), **flags)
    train(KD_SPEC, out=str(tmp_path / "fp32"), **flags)
    assert "cpu bf16" in printed
    row = metrics_jsonl(tmp_path / "bf16")[0]
    ref = metrics_jsonl(tmp_path / "fp32")[0]
    for key in ("train_loss", "train/kd", "train/task", "val_loss"):
        assert math.isfinite(row[key])
    assert row["train_loss"] != ref["train_loss"]  # autocast did change the arithmetic ...
    assert row["train_loss"] == pytest.approx(ref["train_loss"], rel=0.05)  # ... but not the outcome
    assert row["val_top1"] > 50.0 and abs(row["val_top1"] - ref["val_top1"]) < 15.0
    assert row["val_top5"] >= row["val_top1"]
    weights = student_weights(tmp_path / "bf16")
    assert {v.dtype for v in weights.values()} == {torch.float32, torch.int64}  # float32 master weights
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert summary["config"]["amp"] == "bf16"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("plain") / "run"
    calls = []
    real = Distiller.teacher_pass

    def counting(self, name=None):
        calls.append(name)
        return real(self, name)

    Distiller.teacher_pass = counting
    try:
        summary, printed = train(BASELINE_SPEC, epochs=2, out=str(out))
    finally:
        Distiller.teacher_pass = real
        torch.set_num_threads(before)
    return out, summary, printed, calls


def test_plain_training_runs_no_teacher(plain_run):
    out, summary, printed, teacher_passes = plain_run
    assert teacher_passes == []
    assert summary["teachers"] == {}
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1, 2]
    row = metrics_jsonl(out)[-1]
    assert set(k for k in row if k.startswith("train/")) == {"train/task"}
    assert row["train_loss"] == pytest.approx(row["train/task"])
    assert row["val_top1"] > 20.0
    assert "teacher" not in printed.split("results on the validation set")[1]
    assert re.search(r"student top-1 \d+\.\d\d%", printed)


def test_eval_only_prints_the_table_and_does_not_train(plain_run):
    out = plain_run[0]
    before = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, stdout, err = run_cli_in_process("train", BASELINE_SPEC, "--out", str(out), "--eval-only")
    assert code == 0, err
    assert "results on the validation set" in stdout
    assert not re.search(r"^epoch +\d+/\d+", stdout, re.M)
    top1 = json.loads((out / "summary.json").read_text())["student"]["top1"]
    line = next(l for l in stdout.splitlines() if "student" in l and "%" not in l and "│" in l)
    assert f"{top1:.2f}" in line  # the same accuracy as at the end of training
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written
