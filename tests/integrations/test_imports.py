"""Nothing of issue #25's integrations is imported by ``import kdsl`` or ``kdsl check`` (even of
a spec whose train block asks for trackers), nor by importing kdsl.integrations' modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("transformers", "lightning", "mlflow", "wandb", "optuna", "torch")


def _imported(*programs: str):
    """The optional packages in sys.modules after each program, run one after the other in one
    fresh interpreter (a list per program: what it and the ones before it imported)."""
    show = f"\nimport sys\nprint('@@', *[m for m in {OPTIONAL!r} if m in sys.modules])\n"
    proc = subprocess.run([sys.executable, "-c", "".join(p + show for p in programs)], cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "NO_COLOR": "1", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    found = [line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("@@")]
    assert len(found) == len(programs), proc.stdout
    return found if len(programs) > 1 else found[0]


def test_import_kdsl_and_its_integration_modules_import_none(tmp_path):
    # the integrations' modules need torch, and import their framework when a class is asked for;
    # one interpreter for both (the first imports none of OPTIONAL, so the second's are its own)
    assert _imported("import kdsl, kdsl.integrations, kdsl.training.loggers, kdsl.training.trackers",
                     "import kdsl.integrations.hf, kdsl.integrations.lightning") == [[], ["torch"]]


def test_kdsl_check_of_a_spec_that_logs_to_trackers_imports_none(tmp_path):
    spec = tmp_path / "logged.kd"
    spec.write_text((ROOT / "specs" / "digits" / "kd.kd").read_text()
                    .replace('from "teacher.pt"', f'from "{ROOT}/specs/digits/teacher.pt"')
                    .replace("seed = 0", 'seed = 0\n  log = ["mlflow", "wandb"]'))
    # main(argv) is `kdsl check`'s own path, which returns (the command line's exits without
    # interpreter teardown, so nothing would be printed after it)
    program = ("from kdsl.cli.entry import main\ntry:\n"
               "    main(['check', %r])\n"
               "except SystemExit as e:\n    assert not e.code, e.code\n") % str(spec)
    assert _imported(program) == []
