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
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "tests/catalog/test_reference_parity.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    skipped = re.search(r"(\d+) skipped", proc.stdout)
    assert skipped, proc.stdout[-2000:]
    line = next((l for l in proc.stdout.splitlines() if "../shared/reference not found" in l), "")
    assert line.startswith(f"{skipped.group(1)} test"), proc.stdout[-2000:]
    assert "MMRazor/torchdistill reference vectors" in line
