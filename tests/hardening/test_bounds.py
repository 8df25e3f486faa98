"""Cost bounds: output and work stay proportional to the input whatever it holds (huge names,
thousands of diagnostics, enormous lines)."""

from __future__ import annotations

import json
import tracemalloc

from kdsl.core.diagnostics import (MAX_KEPT, MAX_SHOWN, Diagnostics, make, render, summary_line,
                                   to_json)
from kdsl.core.span import Span
from kdsl.core.suggest import (CALL_BUDGET, MAX_NAME, did_you_mean, edit_distance, rank_candidates,
                               suggestion_budget)
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
    assert out.endswith("error[KD108]: 25 more problems not shown\n"
                        "  hint: fix the problems shown and check again")


def test_suggestions_skip_huge_names_and_do_bounded_work(monkeypatch):
    cells = _count_cells(monkeypatch)
    assert rank_candidates("q" * 1_000_000, ["q"]) == []
    assert did_you_mean("x" * (MAX_NAME + 1), ["x" * MAX_NAME]) is None
    assert not cells  # no distance computed for a name no typo could be
    many = [f"layer{i}.conv" for i in range(50_000)]
    did_you_mean("layer7.cnv", many)
    assert sum(cells) <= CALL_BUDGET
    assert did_you_mean("s_logit", ["s_logits", "t_logits"]) == "did you mean 's_logits'?"


def test_huge_identifier_in_a_spec_is_checked_quickly_with_bounded_output():
    text = "student\nrecord s = output of student\nloss kd = kl_div(" + "z" * 1_000_000 + ", s)\n"
    _, diags, sources = check_text(text, "f.kd")
    out = render(diags, sources)
    assert diags and len(out) < 5000


# ------------------------------------------------------------------ caps on what is kept (#26.8)
def test_a_collector_keeps_the_first_problems_and_counts_the_rest():
    diags = Diagnostics()
    for i in range(MAX_KEPT + 500):
        diags.error("KD102", "unmatched ')'", Span.point("f.kd", 1, i + 1))
    diags.warning("KD258", "a warning past the cap")
    items = diags.items
    assert len(items) == MAX_KEPT + 2 and [d.omitted for d in items[-2:]] == [500, 1]
    assert summary_line(items) == f"{MAX_KEPT + 500} errors, 1 warning"
    assert render(items).endswith("error[KD108]: 1,451 more problems not shown\n"
                                  "  hint: fix the problems shown and check again")


def test_half_a_megabyte_of_closing_brackets_is_answered_in_bounded_memory():
    # as many as fit in a spec (MAX_SPEC_BYTES); 1 MB once took 68 s and 2.3 GB
    tracemalloc.start()
    _, diags, sources = check_text(")" * 500_000 + "\n", "c.kd")
    text, data = render(diags, sources), to_json(diags)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60_000_000, peak  # 2.3 GB before the cap (2.3 kB per diagnostic)
    assert summary_line(diags) == "500001 errors"
    assert text.count("error[KD102]") == MAX_SHOWN
    assert "error[KD108]: 499,951 more problems not shown" in text
    entries = json.loads(data)
    assert len(entries) == MAX_SHOWN + 1 and entries[-1]["code"] == "KD108"
    assert entries[-1]["omitted"] == 499_951 and "omitted" not in entries[0]
    assert len(data) < 40_000  # 25 MB for a 100 kB input before


def test_json_clips_messages_as_the_text_renderer_does():
    d = make("KD201", "unknown record '" + "x" * 100_000 + "'", hint="h" * 10_000)
    (entry,) = json.loads(to_json([d]))
    assert len(entry["message"]) <= 400 and len(entry["hints"][0]) <= 400


# ------------------------------------------------------------------ bounded did-you-mean (#26.7)
def _long(i: int) -> str:
    return f"rec_{i:06d}_" + "x" * 69  # 80 characters, all alike but for the number


def test_bounded_distance_matches_the_full_one_within_the_limit():
    pairs = [("s_logit", "s_logits"), ("abcd", "bacd"), ("kitten", "sitting"), ("", "abc"),
             ("teacher", "taecher"), ("record", "rceord")]
    for a, b in pairs:
        full = edit_distance(a, b)
        for limit in range(4):
            assert edit_distance(a, b, limit) == (full if full <= limit else limit + 1), (a, b, limit)


def _count_cells(monkeypatch):
    """Record the table size of every distance computed (the work a suggestion does)."""
    import kdsl.core.suggest as suggest

    cells, real = [], suggest.edit_distance

    def counting(a, b, limit=None):
        cells.append(len(a) * (2 * limit + 1))
        return real(a, b, limit)

    monkeypatch.setattr(suggest, "edit_distance", counting)
    return cells


def test_one_suggestion_among_20000_long_alike_names_is_bounded_work(monkeypatch):
    cells = _count_cells(monkeypatch)
    best = rank_candidates(_long(5)[:-1] + "y", [_long(i) for i in range(20_000)])
    assert best == [_long(5)]
    assert sum(cells) <= CALL_BUDGET  # every one of the 20,000 compared in full before (57 s)


def test_a_checks_suggestions_share_one_budget():
    candidates = [_long(i) for i in range(20_000)]
    with suggestion_budget(CALL_BUDGET):
        first = rank_candidates(_long(5)[:-1] + "y", candidates)
        second = rank_candidates(_long(6)[:-1] + "y", candidates)
    assert first == [_long(5)] and second == []  # the budget was spent on the first


def test_records_up_to_the_size_limit_and_ten_misspellings_do_bounded_work(monkeypatch):
    # 4,000 records of 80 characters: about as many as fit in a spec (MAX_SPEC_BYTES)
    cells = _count_cells(monkeypatch)
    head = 'student = model("kdsl.zoo:digits_cnn")\n'
    records = "".join(f"record {_long(i)} = output of student\n" for i in range(4_000))
    losses = "".join(f"loss l{j} = mse({_long(j)[:-2]}zz, {_long(j)})\n" for j in range(10))
    _, diags, _ = check_text(head + records + losses, "many.kd")
    unknown = [d for d in diags if d.code == "KD201"]
    assert len(unknown) == 10 and "did you mean" in unknown[0].hints[0]
    assert sum(cells) <= 10 * CALL_BUDGET  # 54 s for 2,000 records before; bench/check_scaling.py
