"""Specs that once passed `kdsl check` and then hung or crashed a run (#26.9, #26.12) are located
errors before training."""

from __future__ import annotations

from kdsl.lang.loader import check_text
from tests.conftest import ROOT

HEAD = ('student = model("kdsl.zoo:digits_cnn")\nteacher = model("kdsl.zoo:digits_teacher") from "t.pt"\n'
        "record s = output of student\nrecord t = output of teacher\n")


def _errors(text: str):
    _, diags, _ = check_text(text, "s.kd")
    return [d for d in diags if d.is_error]


def test_a_phase_repeated_a_billion_times_is_refused():
    (d,) = _errors(HEAD + "phase p repeat 1000000000 {\n  loss kd = kl_div(s, t)\n}\n")
    assert d.code == "KD220" and (d.span.line, d.span.column) == (5, 16)
    assert "1,000 times" in d.hints[0]
    assert not _errors(HEAD + "phase p repeat 1000 {\n  loss kd = kl_div(s, t)\n}\n")


def test_an_index_beyond_int64_is_refused_where_written():
    (d,) = _errors(HEAD + "loss kd = kl_div(s[99999999999999999999], t)\n")
    assert d.code == "KD213" and (d.span.line, d.span.column) == (5, 18)
    assert "out of range" in d.message


def test_a_stage_with_no_loss_is_refused_before_training():
    text = HEAD + "stage warm epochs 1 {\n  loss kd = kl_div(s, t)\n}\nstage rest {\n}\n" \
        "train {\n  epochs = 2\n}\n"
    (d,) = _errors(text)
    assert d.code == "KD220" and d.message == "stage 'rest' has no loss: its steps would train nothing"
    assert (d.span.line, d.span.column) == (8, 7)


def test_a_generator_phase_without_optimize_is_refused_with_the_fix():
    dafl = (ROOT / "specs" / "digits" / "dafl.kd").read_text()
    assert not _errors(dafl)
    broken = dafl.replace("  optimize gen with adam(lr=0.2)\n", "")
    (d,) = _errors(broken)
    assert d.code == "KD219" and "phase 'make'" in d.message
    assert d.span.line == broken.splitlines().index("phase make {") + 1
    assert d.hints == ("say what it trains: optimize gen",)
