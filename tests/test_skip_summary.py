"""The reference-vector tests that skip without ../shared say so in the default test summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_summary_names_the_missing_reference_vectors(tmp_path):
    env = dict(os.environ, KDSL_SHARED=str(tmp_path / "none"), KDSL_REFERENCE_DIR=str(tmp_path / "none"))
    env.pop("KDSL_REQUIRE_SHARED", None)
    # one pytest-xdist worker: the default run's path (skips reported from a worker), one
    # interpreter instead of one per core; the file imports torch only in tests that read vectors
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "1",
                           "tests/catalog/test_reference_parity.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    skipped = re.search(r"(\d+) skipped", proc.stdout)
    assert skipped, proc.stdout[-2000:]
    line = next((l for l in proc.stdout.splitlines() if "../shared/reference not found" in l), "")
    assert line.startswith(f"{skipped.group(1)} test"), proc.stdout[-2000:]
    assert "MMRazor/torchdistill reference vectors" in line


def test_every_skip_says_why_in_the_summary():
    """#27.1: a test that needs an optional package skips saying why, and the default (quiet)
    summary shows each reason with its count, not only "N skipped"."""
    import importlib.util
    from pathlib import Path
    from types import SimpleNamespace

    # tests/conftest.py by its path: "conftest" may name another directory's conftest in this process
    spec = importlib.util.spec_from_file_location("tests_root_conftest", Path(__file__).parent / "conftest.py")
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    REFERENCE_SKIP, skip_summary_lines = root.REFERENCE_SKIP, root.skip_summary_lines

    def skipped(reason):
        return SimpleNamespace(longrepr=("tests/x.py", 3, f"Skipped: {reason}"))

    reports = [skipped("could not import 'timm': No module named 'timm'"),
               skipped(f"{REFERENCE_SKIP}: loss_vectors.json"),
               skipped("could not import 'timm': No module named 'timm'"),
               skipped("graphviz's dot is not installed")]
    lines = skip_summary_lines(reports)
    assert lines[0].startswith("1 test skipped: ../shared/reference not found")
    assert lines[1:] == ["2 tests skipped: could not import 'timm': No module named 'timm'",
                         "1 test skipped: graphviz's dot is not installed"]
    assert skip_summary_lines([]) == []
