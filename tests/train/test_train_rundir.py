"""What a run directory holds, how it is written, and when an existing one is refused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import kdsl.zoo
from kdsl.training import rundir
from train_helpers import KD_SEED, KD_SPEC, metrics_csv, metrics_jsonl, student_weights

FILES = {"checkpoint.pt", "student.pt", "best.pt", "metrics.jsonl", "metrics.csv", "curves.png", "summary.json",
         "models", "spec", "environment.json", "kdsl-run.json"}


def test_files_and_nothing_else(kd_run):
    # atomic writes leave no .tmp-* files behind, and the write probe is gone too
    assert {p.name for p in kd_run.iterdir()} == FILES
    # every trained model under models/ (here the student only: no connectors, no connectors/)
    assert {p.name for p in (kd_run / "models").iterdir()} == {"student.pt"}
    assert (kd_run / "models" / "student.pt").read_bytes() == (kd_run / "student.pt").read_bytes()


def test_checkpoint_loads_weights_only(kd_run):
    state = torch.load(kd_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["format"] == "kdsl-run/2"
    assert state["epoch"] == 2 and state["step"] == 2 * math.ceil(1438 / 64)
    for key in ("distiller", "optimization", "stage", "rng", "history", "config", "spec"):
        assert key in state
    assert state["config"]["seed"] == KD_SEED and state["config"]["epochs"] == 2
    assert [r["epoch"] for r in state["history"]] == [1, 2]
    # a spec without stages or phases: one stage "main" of one phase "step", one optimizer
    assert state["stage"] == "main" and list(state["optimization"]) == ["main"]
    phase = state["optimization"]["main"]["step"]
    assert set(phase) == {"optimizer", "scheduler", "scaler"} and phase["scaler"] is None
    assert phase["scheduler"]["last_epoch"] == state["step"]
    # the student in the checkpoint is the student in student.pt
    student = student_weights(kd_run)
    for k, v in student.items():
        assert torch.equal(state["distiller"][f"models.student.{k}"], v)


def test_student_pt_is_a_plain_state_dict(kd_run):
    state = student_weights(kd_run)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
    model = kdsl.zoo.digits_cnn()
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.stack([kdsl.data.digits().val[i][0] for i in range(8)])
    assert model(x).shape == (8, 10)


def test_student_pt_loads_without_kdsl(kd_run):
    """Another program, with torch only, reads student.pt (kdsl is not even importable there)."""
    code = (
        "import sys, torch\n"
        "sys.modules['kdsl'] = None\n"
        f"state = torch.load({str(kd_run / 'student.pt')!r}, weights_only=True)\n"
        "assert 'kdsl' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        "print(len(state), sorted(state)[0], tuple(state['fc.weight'].shape))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["20", "bn1.bias", "(10,", "16)"]


def test_metrics_one_row_per_epoch_with_the_loss_terms(kd_run):
    rows = metrics_jsonl(kd_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["stage"] for r in rows] == ["main", "main"]
    for r in rows:
        for key in ("step", "lr", "train_loss", "train/kd", "train/task", "val_top1", "val_top5",
                    "val_loss", "time_s"):
            assert key in r and math.isfinite(r[key])
        assert math.isclose(r["train_loss"], r["train/kd"] + r["train/task"], rel_tol=1e-6)
        assert 0 <= r["val_top1"] <= r["val_top5"] <= 100
    assert rows[1]["step"] == 2 * rows[0]["step"]
    table = metrics_csv(kd_run)
    assert len(table) == 2
    assert list(table[0]) == list(rows[0])  # the same columns in the same order
    for r, c in zip(rows, table):
        assert int(c["epoch"]) == r["epoch"]
        for key in ("train_loss", "train/kd", "train/task", "val_top1"):
            assert math.isclose(float(c[key]), r[key], rel_tol=1e-5)


def test_curves_png(kd_run):
    pytest.importorskip("matplotlib", reason="curves.png needs matplotlib")
    data = (kd_run / "curves.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_summary_json(kd_run):
    summary = json.loads((kd_run / "summary.json").read_text())
    history = metrics_jsonl(kd_run)
    assert summary["epochs_done"] == 2
    assert summary["student"]["top1"] == history[-1]["val_top1"]
    assert summary["best"]["top1"] == max(r["val_top1"] for r in history)
    assert summary["teachers"]["teacher"]["top1"] > 95  # the shipped digits teacher
    assert summary["teachers"]["teacher"]["params"] == sum(p.numel() for p in kdsl.zoo.digits_teacher().parameters())
    assert summary["config"]["seed"] == KD_SEED
    assert [r["epoch"] for r in summary["history"]] == [1, 2]
    printed = (kd_run.parent / "printed.txt").read_text()
    assert "results on the validation set" in printed and f"{summary['student']['top1']:.2f}" in printed


def test_existing_run_is_refused(kd_run, kcli):
    before = (kd_run / "student.pt").read_bytes()
    code, out, err = kcli("train", KD_SPEC, "--epochs", "1", "--out", str(kd_run))
    assert code == 2
    assert "error[KD706]" in err and "already holds a run" in err and "--overwrite" in err
    assert "Traceback" not in err + out
    assert (kd_run / "student.pt").read_bytes() == before


def test_overwrite_replaces_a_run(tmp_path):
    from train_helpers import BASELINE_SPEC, train_in_process

    out = tmp_path / "run"
    train_in_process(BASELINE_SPEC, epochs=2, out=str(out))
    train_in_process(BASELINE_SPEC, epochs=1, out=str(out), overwrite=True)
    assert [r["epoch"] for r in metrics_jsonl(out)] == [1]
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 1


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "file.bin"
    rundir.atomic_write(str(path), b"old")
    rundir.atomic_write(str(path), b"new contents")
    assert path.read_bytes() == b"new contents"
    rundir.atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "t.pt"))
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "t.pt"]


def test_failed_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    rundir.atomic_write(str(path), b"old\n")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "replace", disk_full)
    with pytest.raises(OSError):
        rundir.atomic_write(str(path), b"new\n")
    monkeypatch.undo()
    assert path.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_unwritable_out_dir(tmp_path, kcli):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = kcli("train", KD_SPEC, "--epochs", "1", "--out", str(blocker / "run"))
    assert code == 2 and "error[KD706]" in err and "cannot write" in err and "Traceback" not in err


def test_a_single_optimizer_checkpoint_reads_as_stage_main_phase_step(kd_run, tmp_path):
    """A run written before stages (``kdsl-run/1``: one optimizer, one schedule at the top) resumes
    as the one implicit stage and phase of a spec without stages."""
    state = torch.load(kd_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    phase = state["optimization"]["main"]["step"]
    old = {k: v for k, v in state.items() if k not in ("optimization", "stage")}
    old.update(format="kdsl-run/1", **phase)
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "checkpoint.pt")
    read = rundir.RunDir(str(tmp_path / "old")).read_checkpoint(state["spec"], torch.device("cpu"))
    assert read["format"] == "kdsl-run/2" and read["stage"] == "main"
    assert read["optimization"]["main"]["step"]["scheduler"] == phase["scheduler"]
    assert read["optimization"]["main"]["step"]["optimizer"]["param_groups"] == phase["optimizer"]["param_groups"]
    assert "optimizer" not in read and read["epoch"] == state["epoch"]


def test_steps_per_epoch_cuts_a_data_epoch_short(tmp_path, kcli):
    code, out, err = kcli("train", KD_SPEC, "--epochs", "1", "--steps-per-epoch", "3", "--threads", "1",
                          "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "1 epoch of 3 steps" in out  # issue #27.10: not "1 epochs"
    assert [r["step"] for r in metrics_jsonl(tmp_path / "run")] == [3]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["steps_per_epoch"] == 3 and summary["config"]["sources"]["steps_per_epoch"] == "flag"
