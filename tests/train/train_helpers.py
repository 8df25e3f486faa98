"""Shared by the `kdsl train` tests: paths, in-process runs, reading a run directory."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
KD_SPEC = str(ROOT / "specs" / "digits" / "kd.kd")
BASELINE_SPEC = str(ROOT / "specs" / "digits" / "baseline.kd")
TEACHER_PT = str(ROOT / "specs" / "digits" / "teacher.pt")
KD_SEED = 7  # not the spec's seed (0), so that --seed is seen to reach every random choice


def train_in_process(spec: str, **flags) -> Tuple[dict, str]:
    """``kdsl train SPEC --flag ...`` in this process, through ``kdsl.train`` and the command
    line's rich reporter: (the run's summary, what it printed)."""
    from rich.console import Console

    import kdsl
    from kdsl.cli.train_view import RichReporter

    out = io.StringIO()
    reporter = RichReporter(Console(file=out, width=140, highlight=False, no_color=True))
    # one thread unless a test says otherwise: a module-scoped fixture runs before conftest's
    # OMP_NUM_THREADS=1, and the automatic rule would pick 2 on a 2-core machine, summing in
    # another order than the resumed run it is compared with bit for bit
    with pytest.MonkeyPatch.context() as env:
        if "threads" not in flags and "OMP_NUM_THREADS" not in os.environ:
            env.setenv("OMP_NUM_THREADS", "1")
        result = kdsl.train(spec, reporter=reporter, **flags)
    return result.summary, out.getvalue()


def student_weights(run: Path) -> Dict[str, torch.Tensor]:
    return torch.load(Path(run) / "student.pt", map_location="cpu", weights_only=True)


def assert_same_weights(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    different = [k for k in a if not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))]
    assert not different, f"tensors differ: {different}"


def metrics_jsonl(run: Path) -> List[dict]:
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def metrics_csv(run: Path) -> List[dict]:
    with open(Path(run) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def run_kdsl(*args: str, timeout: float = 120, env=None):
    """``python -m kdsl ARGS`` in a subprocess, single-threaded, no colour: (code, stdout, stderr)."""
    import os
    import subprocess
    import sys

    full = dict(os.environ)
    full.pop("FORCE_COLOR", None)
    full.update({"NO_COLOR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "PYTHONPATH": str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")})
    full.pop("KDSL_DEBUG", None)
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "kdsl", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def assert_usage_error(result, code: str, *fragments: str, exit_code: int = 2) -> str:
    """Exit 2 (or ``exit_code``: 1 for an input's errors) and one paragraph on stderr:
    ``error[CODE]: ...`` (hints indented under it), no traceback, no blank line, no terminal
    escapes, and every fragment somewhere in it."""
    rc, out, err = result
    text = err.strip()
    assert rc == exit_code, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    assert text.startswith(f"error[{code}]:"), text
    assert "\n\n" not in text and "\x1b" not in text, text
    assert text.count("error[") == 1, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    return text


SPECS = Path(__file__).resolve().parent / "specs"  # the trainer's own small specs
TWO_STAGE_SPEC = str(SPECS / "two_stage.kd")
PHASED_SPEC = str(SPECS / "phased.kd")


def run_state(run: Path) -> Dict[str, torch.Tensor]:
    """Every trained tensor of a run: the distiller's state in checkpoint.pt (models, connectors,
    learning losses) and each file under models/ and connectors/."""
    state = torch.load(Path(run) / "checkpoint.pt", map_location="cpu", weights_only=True)
    out = {f"distiller.{k}": v for k, v in state["distiller"].items()}
    for folder in ("models", "connectors"):
        for f in sorted((Path(run) / folder).glob("*.pt")) if (Path(run) / folder).is_dir() else []:
            saved = torch.load(f, map_location="cpu", weights_only=True)
            for k, v in _flatten(saved):
                out[f"{folder}/{f.stem}.{k}"] = v
    return out


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
