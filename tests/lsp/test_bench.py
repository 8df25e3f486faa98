"""bench/lsp_latency.py runs (shortened to one edit of each kind: the figures are the bench's,
the test proves that it runs and prints each figure the README reports)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_lsp_latency_bench_reports_its_figures():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "bench/lsp_latency.py", "--edits", "1", "--fuzz", "1"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("re-check after an edit", "completion", "fuzz edit + diagnostics + hover"):
        assert name in out.stdout and "median" in out.stdout and "p99" in out.stdout
    assert "load average" in out.stdout
