"""A seeded fuzz run over mutated specs (tools/fuzz_specs.py): the checker and the renderer only
ever fail with kdsl's own diagnostics, located inside the file, with bounded output and time.

A longer run: ``python tools/fuzz_specs.py --inputs 100000 --seed 1``.
"""

from __future__ import annotations

import random

import pytest

from tools import fuzz_specs


@pytest.mark.slow
def test_fuzzed_specs_fail_only_with_located_bounded_diagnostics():
    report = fuzz_specs.fuzz(inputs=2000, seed=20261129)
    assert not report.failures, "\n".join(f"{k} ({m}): {d}" for k, m, d in report.failures[:20])
    # the run exercised both outcomes
    assert report.counts.get("diagnostics", 0) > 1000


@pytest.mark.parametrize("op", fuzz_specs.COSTLY + [fuzz_specs._nul, fuzz_specs._bom, fuzz_specs._crlf],
                         ids=lambda op: op.__name__.lstrip("_"))
def test_each_hostile_mutation_alone(op):
    rng = random.Random(7)
    base = 'student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n' \
           'loss kd = kl_div(s, t, tau=4)\n'
    for _ in range(3):
        outcome = fuzz_specs.run_one(op(rng, base))
        assert outcome.kind in ("ok", "diagnostics"), outcome
