"""The run directory's reproduction files (issue #14, item 3): best.pt (by the validation metric,
consistent under kills), spec/ (the spec and its includes as read), environment.json."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import forked
import kdsl
import kdsl.zoo
from kdsl.training import loop
from kdsl.training.environment import git_commit, spec_files
from kdsl.training.report import EventLog
from train_helpers import KD_SPEC, ROOT, assert_same_weights, metrics_jsonl, student_weights

FLAGS = {"epochs": 3, "steps_per_epoch": 3, "seed": 5, "threads": 1}
ARGS = ["--epochs", "2", "--steps-per-epoch", "2", "--seed", "5", "--threads", "1"]  # the kill trials' run
KILL_FLAGS = {"epochs": 2, "steps_per_epoch": 2, "seed": 5, "threads": 1}


def _load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _top1(state) -> float:
    """The validation top-1 (%) of digits_cnn weights, computed here from the digits data."""
    model = kdsl.zoo.digits_cnn()
    model.load_state_dict(state)
    model.eval()
    val = kdsl.data.digits().val
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor([int(val[i][1]) for i in range(len(val))])
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).sum().item() / len(y)


def test_best_pt_holds_the_best_epoch_by_top1(kd_run):
    rows = metrics_jsonl(kd_run)
    best = max(rows, key=lambda r: (r["val_top1"], -r["epoch"]))  # the earliest of equals
    summary = json.loads((kd_run / "summary.json").read_text())
    assert summary["best"]["epoch"] == best["epoch"] and summary["best"]["metric"] == "val_top1"
    assert _top1(_load(kd_run / "best.pt")) == pytest.approx(best["val_top1"], abs=1e-9)
    if best["epoch"] == rows[-1]["epoch"]:
        assert_same_weights(_load(kd_run / "best.pt"), student_weights(kd_run))


def _scripted(monkeypatch, top1, loss):
    """Validation gives the scripted metrics of each epoch; the student of each epoch is kept."""
    snapshots = []

    def validate(self):
        snapshots.append({k: v.detach().clone() for k, v in self.distiller.student.state_dict().items()})
        e = len(snapshots) - 1
        return {"val_top1": top1[e], "val_top5": 100.0, "val_loss": loss[e]}

    monkeypatch.setattr(loop.Trainer, "validate", validate)
    return snapshots


@pytest.mark.parametrize("metric, best", [(None, 2), ("val_loss", 3)])
def test_best_pt_is_the_best_epoch_not_the_last(tmp_path, monkeypatch, metric, best):
    snapshots = _scripted(monkeypatch, top1=[50.0, 80.0, 80.0], loss=[3.0, 2.0, 1.0])
    result = kdsl.train(KD_SPEC, out=str(tmp_path / "run"), best_metric=metric, **FLAGS)
    assert result.best["epoch"] == best
    assert result.best["metric"] == (metric or "val_top1")
    assert_same_weights(_load(tmp_path / "run" / "best.pt"), snapshots[best - 1])
    assert_same_weights(student_weights(tmp_path / "run"), snapshots[2])
    assert result.files.best == str(tmp_path / "run" / "best.pt")
    if metric is None:  # --eval-only with another metric leaves best.pt as the run chose it
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), eval_only=True, best_metric="val_loss", **FLAGS)
        assert_same_weights(_load(tmp_path / "run" / "best.pt"), snapshots[best - 1])


def test_best_metric_the_run_does_not_measure_is_KD725(tmp_path):
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), best_metric="val_ppl", epochs=1, steps_per_epoch=1,
                   threads=1)
    text = str(info.value) + " ".join(h for d in info.value.diagnostics for h in d.hints)
    assert info.value.diagnostics[0].code == "KD725"
    assert "val_ppl" in text and "val_top1" in text
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # refused before the epoch's commit


def test_best_metric_is_refused_on_an_unknown_name():
    from typer.testing import CliRunner

    from kdsl.cli.app import app

    result = CliRunner().invoke(app, ["train", KD_SPEC, "--best-metric", "val_top9", "--out", "/nonexistent/x"],
                                env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "val_top9" in result.output and "val_top1" in result.output


# ---------------------------------------------------------------- kills around best.pt

def _train_process(out: Path, env):
    """`kdsl train KD_SPEC ARGS --out OUT` in a process of its own (tests/forked.py), run to its end
    (the write points read KDSL_KILL_AT and KDSL_KILL_TRACE as they pass): (exit code, stdout, stderr)."""
    return forked.run_kdsl("train", KD_SPEC, *ARGS, "--out", str(out), timeout=300,
                           env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KDSL_KILL_AT": None,
                                "KDSL_KILL_TRACE": None, **env})


def test_kill_around_best_pt_then_resume(tmp_path):
    """Killed between the first checkpoint and best.pt (the first epoch is always a best): after
    --resume, best.pt is the uninterrupted run's, bit for bit. tests/hardening/test_kill.py checks
    best.pt in every one of its trials (kills before the checkpoint leave the previous best.pt)."""
    full, trace = tmp_path / "full", tmp_path / "trace.txt"
    code, _, err = _train_process(full, {"KDSL_KILL_TRACE": str(trace)})
    assert code == 0, err
    points = [line.split() for line in trace.read_text().splitlines()]
    best_points = [int(n) for n, what, name in points if name == "best.pt"]
    assert best_points, "the run wrote no best.pt"
    out = tmp_path / "killed"
    code, _, err = _train_process(out, {"KDSL_KILL_AT": str(best_points[0])})  # half of the first best.pt written
    assert code == 137, err[-2000:]
    assert (out / "checkpoint.pt").exists() and not (out / "best.pt").exists()
    kdsl.train(KD_SPEC, out=str(out), resume=True, **KILL_FLAGS)
    assert_same_weights(_load(out / "best.pt"), _load(full / "best.pt"))
    assert json.loads((out / "summary.json").read_text())["best"] == \
        json.loads((full / "summary.json").read_text())["best"]
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]


def test_resume_rebuilds_a_best_pt_the_checkpoint_names(tmp_path):
    """best.pt removed after a run whose last epoch was its best (by the checkpoint's history):
    --resume writes it again from the checkpoint's student and says so."""
    out = tmp_path / "run"
    kdsl.train(KD_SPEC, out=str(out), best_metric="val_loss", epochs=1, steps_per_epoch=2, threads=1)
    kept = _load(out / "best.pt")
    os.remove(out / "best.pt")
    events = EventLog()
    kdsl.train(KD_SPEC, out=str(out), resume=True, best_metric="val_loss", epochs=1, steps_per_epoch=2,
               threads=1, reporter=events)
    assert_same_weights(_load(out / "best.pt"), kept)
    assert any(name == "warning" and "best.pt" in text for name, text in events.events)


# ---------------------------------------------------------------- spec/, environment.json

def test_spec_folder_holds_the_spec_as_read(kd_run):
    assert {p.name for p in (kd_run / "spec").iterdir()} == {"kd.kd"}
    assert (kd_run / "spec" / "kd.kd").read_bytes() == Path(KD_SPEC).read_bytes()


def test_spec_files_keep_includes_relative_to_the_spec(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "exp").mkdir()
    (tmp_path / "shared" / "models.kd").write_text('student = model("kdsl.zoo:digits_cnn")\n')
    (tmp_path / "exp" / "parts").mkdir()
    (tmp_path / "exp" / "parts" / "losses.kd").write_text(
        "record s = output of student\nloss task = cross_entropy(s, batch.target)\n")
    main = tmp_path / "exp" / "run.kd"
    main.write_text('include "../shared/models.kd"\ninclude "parts/losses.kd"\n')
    files = spec_files(kdsl.load(str(main)))
    assert files == {"run.kd": main.read_bytes(), os.path.join("_up", "shared", "models.kd"):
                     (tmp_path / "shared" / "models.kd").read_bytes(),
                     os.path.join("parts", "losses.kd"): (tmp_path / "exp" / "parts" / "losses.kd").read_bytes()}


def test_environment_json_records_the_process(kd_run):
    env = json.loads((kd_run / "environment.json").read_text())
    assert env["format"] == "kdsl-environment/1" and len(env["sessions"]) == 1
    s = env["sessions"][0]
    assert s["torch"] == torch.__version__ and s["python"] == platform.python_version()
    assert s["threads"] == 1 and s["device"] == "cpu" and s["resumed"] is False
    assert s["kdsl"] == kdsl.__version__ and s["argv"] == sys.argv
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True) \
        if shutil.which("git") else None
    if head is not None and head.returncode == 0:
        assert s["git"]["commit"] == head.stdout.strip()


def test_git_commit_reads_loose_packed_and_detached_heads(tmp_path):
    sha1, sha2 = "a" * 40, "b" * 40
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (tmp_path / "repo" / "sub").mkdir()
    spec = tmp_path / "repo" / "sub" / "x.kd"
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text(sha1 + "\n")
    assert git_commit(str(spec)) == {"commit": sha1, "branch": "main", "root": str(tmp_path / "repo")}
    os.remove(git / "refs" / "heads" / "main")
    (git / "packed-refs").write_text(f"# pack-refs\n{sha2} refs/heads/main\n")
    assert git_commit(str(spec))["commit"] == sha2
    (git / "HEAD").write_text(sha1)
    assert git_commit(str(spec)) == {"commit": sha1, "branch": None, "root": str(tmp_path / "repo")}
    (git / "HEAD").write_text("garbage")
    assert git_commit(str(spec)) is None
    assert git_commit(str(tmp_path / "elsewhere" / "y.kd")) is None or \
        git_commit(str(tmp_path / "elsewhere" / "y.kd"))["root"] != str(tmp_path / "repo")


def test_a_resume_adds_a_session_and_an_overwrite_starts_over(tmp_path):
    out = tmp_path / "run"
    kdsl.train(KD_SPEC, out=str(out), epochs=1, steps_per_epoch=1, threads=1)
    kdsl.train(KD_SPEC, out=str(out), resume=True, epochs=1, steps_per_epoch=1, threads=2)
    torch.set_num_threads(1)
    sessions = json.loads((out / "environment.json").read_text())["sessions"]
    assert [s["resumed"] for s in sessions] == [False, True] and [s["threads"] for s in sessions] == [1, 2]
    (out / "spec" / "kd.kd").write_text("# edited after the run\n")
    kdsl.train(KD_SPEC, out=str(out), overwrite=True, epochs=1, steps_per_epoch=1, threads=1)
    assert len(json.loads((out / "environment.json").read_text())["sessions"]) == 1
    assert (out / "spec" / "kd.kd").read_bytes() == Path(KD_SPEC).read_bytes()
