"""A batch size per stage (``stage NAME batch_size B``, KTAAD) and a frozen teacher run in train
mode (``train_mode``: BatchNorm on batch statistics, no gradients, running statistics kept), through
``kdsl.train``, ``kdsl train`` and ``kdsl explain`` (issue #20, items 6 and 12)."""

from __future__ import annotations

import copy

import torch
from typer.testing import CliRunner

import kdsl
from kdsl.zoo import digits_cnn, digits_teacher
from kdsl.cli.app import app
from train_helpers import TEACHER_PT, metrics_jsonl, train_in_process

SPEC = """
student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") from "{teacher}" train_mode
record s = output of student
record t = output of teacher
loss kd = kl_div(s, t, tau=4)
stage small epochs 1 batch_size 8 {{
  loss task = cross_entropy(s, batch.target)
}}
stage large {{
}}
train {{
  data = dataset("sched_data:small_digits", batch_size=20)
  epochs = 2
  optimizer = sgd(lr=0.05, momentum=0.9)
  seed = 0
}}
"""


def _cli(*args: str):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "250"}, prog_name="kdsl")
    return result.exit_code, result.stdout + result.stderr


def test_each_stage_batches_the_data_with_its_own_size(tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(SPEC.format(teacher=TEACHER_PT))
    _, printed = train_in_process(str(spec), out=str(tmp_path / "run"))
    rows = metrics_jsonl(tmp_path / "run")
    # 40 samples: 5 batches of 8 in stage 'small', then 2 of 20 in 'large'
    assert [(r["stage"], r["step"]) for r in rows] == [("small", 5), ("large", 7)]
    assert "stage small: epoch 1, batch_size 8" in printed and "stage large: epoch 2\n" in printed
    code, out = _cli("train", str(spec), "--out", str(tmp_path / "cli"), "--epochs", "2")
    assert code == 0, out
    assert [r["step"] for r in metrics_jsonl(tmp_path / "cli")] == [5, 7]
    code, out = _cli("explain", str(spec))
    assert code == 0, out
    assert "batch_size 8" in out and "small (batch_size 8)" in out
    assert "frozen: train mode (batch statistics, running ones kept), no grad" in out
    code, out = _cli("graph", str(spec))
    assert code == 0 and 'stage small (1 epoch, batch_size 8)' in out, out


def test_a_train_mode_teacher_normalizes_with_the_batch_and_keeps_its_running_statistics():
    torch.manual_seed(0)
    student, teacher = digits_cnn(), digits_teacher()
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(3.0)
    running = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    batch_stats, running_stats = copy.deepcopy(teacher).train(), copy.deepcopy(teacher).eval()
    with torch.no_grad():
        want_train, want_eval = batch_stats(x), running_stats(x)
    spec = kdsl.loads(SPEC.format(teacher="t.pt").replace(' from "t.pt"', ""))
    with kdsl.compile(spec, student=student, teacher=teacher) as distiller:
        distiller.train()
        result = distiller.step(x, target=y, stage="small")
        torch.testing.assert_close(result.teacher_outputs["teacher"], want_train, rtol=0, atol=0)
        assert not result.teacher_outputs["teacher"].requires_grad
        result.loss.backward()
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
        assert all(torch.equal(v, running[k]) for k, v in teacher.state_dict().items())
        distiller.eval()
        with torch.no_grad():
            evaluated = distiller.step(x, target=y, stage="small").teacher_outputs["teacher"]
        torch.testing.assert_close(evaluated, want_eval, rtol=0, atol=0)
    # closed: the teacher is as it was given (train mode, running statistics tracked, gradients on)
    assert teacher.training and all(p.requires_grad for p in teacher.parameters())
    assert all(m.track_running_stats for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
