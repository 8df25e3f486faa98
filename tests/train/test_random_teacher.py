"""A frozen teacher that loads no weights: `kdsl check` warns (KD258), `kdsl train` refuses (KD730)
unless allow_random_teacher is set, and the teacher's accuracy is printed before the first epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsl.core.diagnostics import KdslError
from kdsl.io.models import refuse_random_teachers
from kdsl.lang.loader import check_file, load
from kdsl.lang.teacher_weights import random_teachers
from tests.conftest import run_cli_in_process


@pytest.fixture
def cli():
    """``kdsl ARGS`` through the entry point, in this process (no interpreter start-up)."""
    return run_cli_in_process


SPEC = ('student = model("kdsl.zoo:digits_cnn")\n'
        'teacher = model("kdsl.zoo:digits_teacher"{opts}){ckpt}\n'
        "record s = output of student\nrecord t = output of teacher\n"
        "loss kd = kl_div(s, t)\n"
        'train {{\n  data = dataset("kdsl.data:digits", batch_size=64)\n{extra}}}\n')
TEACHER_PT = Path(__file__).resolve().parents[2] / "specs" / "digits" / "teacher.pt"


def write(tmp_path: Path, opts: str = "", ckpt: str = "", extra: str = "", trainable: bool = False) -> Path:
    path = tmp_path / "spec.kd"
    text = SPEC.format(opts=opts, ckpt=ckpt, extra=extra)
    if trainable:
        text = text.replace('teacher = model("kdsl.zoo:digits_teacher")', 'teacher = model("kdsl.zoo:digits_teacher") trainable')
    path.write_text(text)
    return path


def codes(path: Path):
    _, diags, _ = check_file(str(path))
    return [d.code for d in diags]


def test_check_warns_at_the_teacher(tmp_path, cli):
    path = write(tmp_path)
    code, out, err = cli("check", str(path))
    assert code == 0
    assert f"{path}:2:1: warning[KD258]: teacher 'teacher' loads no weights" in out + err
    assert "allow_random_teacher = true" in out + err


@pytest.mark.parametrize("kwargs", [
    dict(ckpt=' from "t.pt"'),                       # a checkpoint
    dict(opts=", pretrained=true"),                   # timm's option
    dict(opts=', weights="DEFAULT"'),                 # torchvision's option
    dict(extra="  allow_random_teacher = true\n"),    # meant
    dict(trainable=True),                             # it learns (mutual learning)
])
def test_no_warning_when_weights_come_from_somewhere(tmp_path, kwargs):
    assert "KD258" not in codes(write(tmp_path, **kwargs))


def test_rule_judges_false_options_as_random(tmp_path):
    spec = load(str(write(tmp_path, opts=", pretrained=false")))
    assert [m.name for m in random_teachers(spec.models)] == ["teacher"]


def test_train_refuses_before_writing_anything(tmp_path, cli):
    path = write(tmp_path)
    out_dir = tmp_path / "run"
    code, out, err = cli("train", str(path), "--epochs", "1", "--threads", "1", "--out", str(out_dir))
    assert code == 1
    assert f"{path}:2:1: error[KD730]: teacher 'teacher' loads no weights" in err
    assert "--allow-random-teacher" in err and "--teacher-ckpt" in err
    assert not out_dir.exists()


def test_callers_choices_count(tmp_path):
    spec = load(str(write(tmp_path)))
    with pytest.raises(KdslError) as info:
        refuse_random_teachers(spec)
    assert info.value.diagnostics[0].code == "KD730"
    refuse_random_teachers(spec, teacher_ckpt=str(TEACHER_PT))  # weights from the flag
    from kdsl.zoo import digits_teacher

    refuse_random_teachers(spec, teacher=digits_teacher())  # a module keeps its own weights
    with pytest.raises(KdslError):  # a reference without a pretrained option is random too
        refuse_random_teachers(spec, teacher="kdsl.zoo:digits_teacher")
    refuse_random_teachers(spec, models=["teacher=pkg.mod:factory(pretrained=true)"])


def test_allowed_run_prints_the_teachers_accuracy_before_the_first_epoch(tmp_path, cli):
    path = write(tmp_path)
    code, out, err = cli("train", str(path), "--epochs", "1", "--threads", "1", "--steps-per-epoch", "2",
                         "--out", str(tmp_path / "run"), "--allow-random-teacher")
    assert code == 0, err
    lines = out.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if line.lstrip().startswith("epoch"))
    teacher_line = next(i for i, line in enumerate(lines) if "teacher teacher (" in line and "top-1" in line)
    assert teacher_line < first_epoch
