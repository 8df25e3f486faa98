"""`kdsl train --visualize RECORD[,RECORD...]` (issue #20, item 14): a PNG grid of the recorded
student and teacher feature maps of fixed validation samples after each epoch, in the run
directory; drawing changes nothing the run trains; bad records are refused before training."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError
from train_helpers import TEACHER_PT, assert_same_weights, student_weights

SPEC = f"""
student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") from "{TEACHER_PT}"
record s2 = output of student.layer2
record t2 = output of teacher.layer2
record s_logits = output of student
connector proj = conv1x1()
loss feat = mse(proj(s2), t2)
loss task = cross_entropy(s_logits, batch.target)
train {{
  data = dataset("sched_data:small_digits", batch_size=20)
  epochs = 1
  eval_teachers = false
  seed = 0
}}
"""


def test_each_epoch_draws_the_maps_and_the_run_is_unchanged(tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(SPEC)
    run = CliRunner().invoke(app, ["train", str(spec), "--out", str(tmp_path / "drawn"), "--visualize", "s2,t2",
                                   "--visualize-channels", "top"], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    for epoch in (1,):
        png = (tmp_path / "drawn" / "visualize" / f"epoch_{epoch:03d}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
    kdsl.train(str(spec), out=str(tmp_path / "plain"))
    assert_same_weights(student_weights(tmp_path / "drawn"), student_weights(tmp_path / "plain"))


@pytest.mark.parametrize("records, code, words", [
    ("s2,t3", "KD774", "did you mean 't2'"),
    ("s_logits", "KD775", "record 's_logits' is [20, 10], not a feature map"),
])
def test_bad_records_are_refused_before_training(tmp_path, records, code, words):
    spec = tmp_path / "s.kd"
    spec.write_text(SPEC)
    with pytest.raises(KdslError) as refused:
        kdsl.train(str(spec), out=str(tmp_path / "run"), visualize=records)
    assert code in str(refused.value) and words in str(refused.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
