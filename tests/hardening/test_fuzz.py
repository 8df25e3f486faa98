"""A seeded fuzz run over mutated specs (tools/fuzz_specs.py: grammar-aware mutations of the
shipped specs, unicode, NUL, CRLF, byte-order marks, deep nesting, huge numbers and names): the
checker and the renderer only ever fail with kdsl's own diagnostics, located inside the file, with
bounded output and CPU time. The pathological inputs of the hardening issues (20,000 records and
misspellings, 1 MB of ')', 100,000 statements, 6,000 errors) are here too; bench/check_scaling.py
measures their time and memory.

A longer run: ``python tools/fuzz_specs.py --inputs 100000 --seed 1``.
"""

from __future__ import annotations

import random

import pytest

from tools import fuzz_specs


def test_fuzzed_specs_fail_only_with_located_bounded_diagnostics():
    report = fuzz_specs.fuzz(inputs=300, seed=20261129)  # a few seconds; CI-sized runs: the tool
    assert not report.failures, "\n".join(f"{k} ({m}): {d}" for k, m, d in report.failures[:20])
    # the run exercised both outcomes
    assert report.counts.get("diagnostics", 0) > 150 and report.counts.get("ok", 0) > 0


@pytest.mark.parametrize("op", fuzz_specs.COSTLY + [fuzz_specs._nul, fuzz_specs._bom, fuzz_specs._crlf],
                         ids=lambda op: op.__name__.lstrip("_"))
def test_each_hostile_mutation_alone(op):
    rng = random.Random(7)
    base = 'student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n' \
           'loss kd = kl_div(s, t, tau=4)\n'
    for _ in range(3):
        outcome = fuzz_specs.run_one(op(rng, base))
        assert outcome.kind in ("ok", "diagnostics"), outcome


HEAD = 'student = model("kdsl.zoo:digits_cnn")\nteacher = model("kdsl.zoo:digits_teacher") from "t.pt"\n'


def _records_and_misspellings(count: int) -> str:
    names = [f"layer_{i:05d}_features" for i in range(count)]
    records = "".join(f"record {n} = output of student\n" for n in names)
    return HEAD + records + "".join(f"loss l{j} = mse({names[j * 7][:-1]}z, {names[j]})\n"
                                    for j in range(10))


PATHOLOGICAL = {
    # 20,000 records + misspellings is past the size limit (refused where reading stops); the
    # 12,000 that fit still get their suggestions within the check's budget
    "20000_records_misspelled": lambda: _records_and_misspellings(20_000),
    "12000_records_misspelled": lambda: _records_and_misspellings(12_000),
    "1MB_of_closing_brackets": lambda: ")" * 1_000_000 + "\n",
    "100000_statements": lambda: HEAD + "".join(f"record r{i} = output of student.conv{i % 7}\n"
                                                for i in range(100_000)),
    "6000_errors": lambda: HEAD + "loss x = nothing(a)\n" * 6_000,
    "unicode_crlf_bom_nul": lambda: "\ufeff" + ((HEAD + "record \u00e9 = output of student\x00\n") * 50)
                                    .replace("\n", "\r\n"),
    "deep_nesting_huge_numbers": lambda: HEAD + "loss d = mse(" + "[" * 5_000 + "1e99999" + "]" * 5_000
                                         + ", " + "9" * 5_000 + ")\n",
}


@pytest.mark.parametrize("make", list(PATHOLOGICAL.values()), ids=list(PATHOLOGICAL))
def test_pathological_inputs_are_answered_in_bounded_time_and_output(make):
    outcome = fuzz_specs.run_one(make())
    assert outcome.kind == "diagnostics", outcome
