"""One epoch rule for stages (kdsl.lang.procedure), one answer from every entry point: `kdsl check`,
`kdsl train` (the spec's epochs, or --epochs when the spec sets none) and
`Distiller.stage_ranges()` from Python give the same KD220, message and location."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdsl
from kdsl.core.diagnostics import KdslError

from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]
HEAD = f"""student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") from "{ROOT / 'specs' / 'digits' / 'teacher.pt'}"
record s = output of student
record t = output of teacher
"""
TRAIN = """train {{
  data = dataset("kdsl.data:digits", batch_size=16)
{epochs}  steps_per_epoch = 1
}}
"""

# declared epochs of two stages in a 10-epoch run -> (message, line, column) of the one KD220
CASES = {
    (3, 3): ("the stages run 6 epochs, the run 10", 6, 16),  # at the last stage's epochs
    (None, None): ("stage 'b' also leaves out its epochs", 6, 7),  # at the second stage's name
    (6, 6): ("the stages run 12 epochs, the run 10", 6, 16),
}


def _spec(tmp_path: Path, epochs, run_epochs: bool) -> Path:
    a, b = (f" epochs {e}" if e is not None else "" for e in epochs)
    text = (HEAD + f"stage a{a} {{ loss kd = kl_div(s, t) }}\n"
            + f"stage b{b} {{ loss ce = cross_entropy(s, batch.target) }}\n"
            + TRAIN.format(epochs="  epochs = 10\n" if run_epochs else ""))
    path = tmp_path / ("run10.kd" if run_epochs else "open.kd")
    path.write_text(text, encoding="utf-8")
    return path


def _answer(diagnostic) -> tuple:
    return diagnostic.code, diagnostic.message, diagnostic.span.line, diagnostic.span.column


def _kd220(exc: KdslError) -> tuple:
    (diagnostic,) = exc.diagnostics
    return _answer(diagnostic)


@pytest.mark.parametrize("epochs", list(CASES), ids=str)
def test_check_train_and_the_distiller_give_one_answer(tmp_path, epochs):
    message, line, col = CASES[epochs]
    expected = ("KD220", message, line, col)
    spec = _spec(tmp_path, epochs, run_epochs=True)

    code, out, _ = run_cli_in_process("check", "--format", "json", str(spec))
    (found,) = json.loads(out)
    span = found["span"]
    assert code == 1 and (found["code"], found["message"], span["line"], span["column"]) == expected

    code, _, err = run_cli_in_process("train", str(spec), "--out", str(tmp_path / "cli_run"), "--threads", "1")
    assert code == 1 and f"{spec}:{line}:{col}: error[KD220]: {message}" in err

    # the spec leaves the run's epochs to the caller: the trainer and the distiller apply the rule
    open_spec = _spec(tmp_path, epochs, run_epochs=False)
    with pytest.raises(KdslError) as info:
        with kdsl.compile(kdsl.load(open_spec)) as distiller:
            distiller.stage_ranges(10)
    assert _kd220(info.value) == expected
    with pytest.raises(KdslError) as info:
        kdsl.train(str(open_spec), out=str(tmp_path / "run"), epochs=10, threads=1)
    assert _kd220(info.value) == expected
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
