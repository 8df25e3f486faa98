"""Custom batching in `kdsl train` (issue #20, item 10): a collate function and a batch sampler by
reference, checked like other references; a detection-style toy dataset (images of different
sizes, dict targets) trains through `kdsl train` with its collate, its batch fields passed to the
models by keyword; a collate that fails names the reference, the batch and its samples."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError
from kdsl.lang.loader import check_text
from train_helpers import metrics_jsonl, student_weights

SPEC = """import "sched_data"
student = model("sched_data:toy_detector", width=4)
teacher = model("sched_data:toy_detector", width=8)
record s_neck = output of student.neck
record t_neck = output of teacher.neck
record s_out  = output of student
connector proj = linear()
loss det  = model_loss(s_out)
loss feat = mse(proj(s_neck), t_neck)
train {
  data = dataset("sched_data:toy_detection", batch_size=4)
  collate = "sched_data:detection_collate"
  epochs = 1
  allow_random_teacher = true
  seed = 0
}
"""


def _spec(tmp_path, text=SPEC):
    path = tmp_path / "det.kd"
    path.write_text(text)
    return str(path)


def test_a_detection_style_dataset_trains_through_kdsl_train_with_its_collate(tmp_path):
    import sched_data

    before = {k: v.clone() for k, v in sched_data.toy_detector(4).state_dict().items()}
    run = CliRunner().invoke(app, ["train", _spec(tmp_path), "--out", str(tmp_path / "run")],
                             env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    rows = metrics_jsonl(tmp_path / "run")
    assert rows[-1]["step"] == 3 and rows[-1]["train/det"] > 0 and rows[-1]["train/feat"] > 0
    after = student_weights(tmp_path / "run")
    assert after.keys() == before.keys() and any(not torch.equal(after[k], before[k]) for k in after)


def test_a_batch_sampler_by_reference_makes_the_epochs_batches(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("  epochs = 1\n", '  epochs = 1\n  batch_sampler = "sched_data:PairsInOrder"\n'))
    result = kdsl.train(spec, out=str(tmp_path / "run"))
    assert result.history[-1]["step"] == 6  # 12 samples in pairs
    with pytest.raises(KdslError) as refused:
        kdsl.train(spec, out=str(tmp_path / "again"), checkpoint_every=2)
    assert "KD778" in str(refused.value) and "det.kd:14:19" in str(refused.value)


def test_a_collate_that_fails_names_the_reference_and_the_batch(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("sched_data:detection_collate", "sched_data:broken_collate"))
    with pytest.raises(KdslError) as refused:
        kdsl.train(spec, out=str(tmp_path / "run"))
    text = str(refused.value)
    assert "KD777" in text and "det.kd:12:13" in text
    assert "collate 'sched_data:broken_collate' failed on validation batch 1 (samples 0, 1, 2, 3): ValueError: " \
        "cannot batch 4 images of different sizes" in text


@pytest.mark.parametrize("value, code", [('"no colon"', "KD405"), ('"os:system"', "KD406")])
def test_references_are_checked_where_they_are_written(value, code):
    _, diags, _ = check_text(f"student\ntrain {{\n  collate = {value}\n}}\n", "s.kd")
    assert [(d.code, d.span.line) for d in diags if d.is_error] == [(code, 3)]
