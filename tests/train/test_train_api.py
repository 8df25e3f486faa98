"""Training from Python: ``kdsl.train`` is what ``kdsl train`` runs, with a reporter instead of a
console, and returns the run's metrics and the paths of what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kdsl
import kdsl.zoo
from kdsl.training.report import EventLog, RunResult
from train_helpers import BASELINE_SPEC, KD_SPEC, metrics_jsonl, student_weights


def test_kdsl_train_trains_the_digits_spec(tmp_path):
    log = EventLog()
    result = kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=1, threads=1, lr=0.5, reporter=log)
    assert isinstance(result, RunResult)
    rows = metrics_jsonl(tmp_path / "run")
    assert len(result.history) == 1 and result.history == rows
    assert result.final == {"top1": rows[0]["val_top1"], "top5": rows[0]["val_top5"], "loss": rows[0]["val_loss"]}
    assert result.metrics["top1"] > 20.0  # it learned (a high lr for one short epoch)
    assert result.teachers["teacher"]["top1"] > 95.0  # the shipped teacher
    files = result.files
    for path in (files.checkpoint, files.student, files.metrics_jsonl, files.metrics_csv, files.summary):
        assert Path(path).is_file() and Path(path).parent == tmp_path / "run"
    summary = json.loads(Path(files.summary).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["config"]["epochs"] == 1 and summary["config"]["sources"]["epochs"] == "flag"
    assert summary["config"]["sources"]["batch_size"] == "spec"  # from dataset(..., batch_size=64)
    names = [name for name, _ in log.events]
    assert names[:3] == ["run_start", "stage_start", "epoch_start"] and names[-1] == "run_end"
    stage = log.events[1][1]  # a spec without stages runs one implicit stage of one phase
    assert (stage.name, stage.first_epoch, stage.end_epoch, stage.phases) == ("main", 0, 1, (("step", 1),))
    assert not stage.declared and not stage.phased
    assert names.count("epoch_end") == 1 and "step" in names
    start = log.events[0][1]
    assert (start.epochs, start.seed, start.out) == (1, 0, str(tmp_path / "run"))
    assert log.events[-1][1] is result


def test_kdsl_train_takes_a_loaded_spec_and_a_module(tmp_path):
    """A Spec object and a built student (not a reference); nothing printed without a reporter."""
    spec = kdsl.load(BASELINE_SPEC)
    torch.manual_seed(0)
    student = kdsl.zoo.digits_cnn(width=4)
    result = kdsl.train(spec, student=student, out=str(tmp_path / "run"), epochs=1, threads=1,
                        eval_teachers=False)
    assert result.rows[-1]["role"] == "student" and result.rows[-1]["params"] == sum(
        p.numel() for p in student.parameters())
    trained = student_weights(tmp_path / "run")
    assert all(torch.equal(trained[k], v) for k, v in student.state_dict().items())


def test_kdsl_train_refuses_bad_settings_before_writing(tmp_path):
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=0)
    assert info.value.diagnostics[0].code == "KD701" and "must be at least 1" in info.value.diagnostics[0].message
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epoch=3)
    assert "did you mean 'epochs'?" in str(info.value)
    assert not (tmp_path / "run").exists()
