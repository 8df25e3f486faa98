"""Cost bounds: output and work stay proportional to the input whatever it holds (huge names,
thousands of diagnostics, enormous lines)."""

from __future__ import annotations

import time

from kdsl.core.diagnostics import MAX_SHOWN, make, render
from kdsl.core.span import Span
from kdsl.core.suggest import MAX_NAME, did_you_mean, rank_candidates
from kdsl.lang.loader import check_text


def test_long_source_line_is_shown_as_a_window_around_the_caret():
    line = "a" * 5000 + "BAD" + "b" * 5000
    d = make("KD201", "unknown record 'BAD'", Span(file="f.kd", line=1, column=5001, end_line=1, end_column=5004))
    out = render([d], {"f.kd": line + "\n"})
    source_line, caret_line = out.splitlines()[1:3]
    assert len(source_line) < 130 and source_line.strip().startswith("1 | ...")
    assert "BAD" in source_line
    # the carets sit exactly under BAD
    assert source_line.index("BAD") == caret_line.index("^^^") and caret_line.count("^") == 3


def test_control_characters_are_not_echoed_raw():
    d = make("KD100", "unexpected character", Span.point("f.kd", 1, 4))
    out = render([d], {"f.kd": "stu\x00\x1b[2Jdent\n"})
    assert "\x00" not in out and "\x1b" not in out


def test_long_messages_and_hints_are_clipped():
    name = "x" * 100_000
    d = make("KD201", f"unknown record '{name}'", hint=f"did you mean '{name}'?")
    out = render([d])
    assert len(out) < 1000


def test_number_of_diagnostics_shown_is_capped():
    diags = [make("KD201", f"unknown record 'r{i}'", Span.point("f.kd", 1, 1)) for i in range(MAX_SHOWN + 25)]
    out = render(diags, {"f.kd": "x\n"})
    assert out.count("error[KD201]") == MAX_SHOWN
    assert out.endswith("... and 25 more (not shown)")


def test_suggestions_skip_huge_names_and_stay_fast():
    start = time.perf_counter()
    assert rank_candidates("q" * 1_000_000, ["q"]) == []
    assert did_you_mean("x" * (MAX_NAME + 1), ["x" * MAX_NAME]) is None
    many = [f"layer{i}.conv" for i in range(50_000)]
    did_you_mean("layer7.cnv", many)
    assert time.perf_counter() - start < 10  # generous: the point is "not a minute"
    assert did_you_mean("s_logit", ["s_logits", "t_logits"]) == "did you mean 's_logits'?"


def test_huge_identifier_in_a_spec_is_checked_quickly_with_bounded_output():
    text = "student\nrecord s = output of student\nloss kd = kl_div(" + "z" * 1_000_000 + ", s)\n"
    _, diags, sources = check_text(text, "f.kd")
    out = render(diags, sources)
    assert diags and len(out) < 5000
