"""``kdsl train SPEC``: flags -> ``kdsl.train`` -> rich output.

The setting flags (``--epochs``, ``--lr``, ``--data``, ...) are generated from the settings table
by :func:`kdsl.cli.options.with_setting_flags`, as every command's are: a setting whose flag
``train`` takes gets an option of the right type, its choices and its help text, with no line here.
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional

import typer

from kdsl.cli.errors import EXIT_INTERRUPTED, CliError, guarded
from kdsl.cli.options import MODEL, STUDENT, TEACHER, TEACHER_CKPT, given_settings, with_setting_flags
from kdsl.cli.render import echo, make_console
from kdsl.training.report import RunInterrupted

# The flags that are not training settings: the spec, the models, what to do with the run.
_FIXED = [
    ("spec", str, typer.Argument(..., metavar="SPEC", help="the spec file")),
    ("student", Optional[str], STUDENT),
    ("teacher", Optional[str], TEACHER),
    ("model", List[str], MODEL),
    ("teacher_ckpt", Optional[str], TEACHER_CKPT),
    ("resume", bool, typer.Option(False, "--resume", help="continue the run in --out")),
    ("eval_only", bool, typer.Option(False, "--eval-only",
                                     help="evaluate the run's saved models (student, trained peers) and the teachers")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="replace a run already in --out")),
]


def train(spec: str, student: Optional[str], teacher: Optional[str], model: List[str],
          teacher_ckpt: Optional[str], resume: bool, eval_only: bool, overwrite: bool, **settings: Any) -> None:
    """Train the student of SPEC: flags override the spec's train block, which overrides defaults.

    Runs the spec's stages in order, each step its phases. Writes DIR/checkpoint.pt,
    DIR/student.pt and DIR/models/NAME.pt (every trained model) every epoch (atomically),
    DIR/connectors/STAGE.pt after each stage, DIR/best.pt (the best epoch's student),
    metrics.jsonl, metrics.csv, curves.png, summary.json, spec/ (the spec's files) and
    environment.json. Ctrl-C prints the --resume command that continues the run. Under
    `torchrun --nproc_per_node N` it trains with DistributedDataParallel.
    """
    if not os.path.isfile(spec):
        raise CliError(f"no such spec file: {spec}", "KD401")
    from kdsl.cli.train_view import RichReporter
    from kdsl.training.api import train as run_training

    settings = given_settings(settings)
    reporter = RichReporter(make_console())
    try:
        run_training(spec, student=student, teacher=teacher, models=list(model), teacher_ckpt=teacher_ckpt,
                     resume=resume, eval_only=eval_only, overwrite=overwrite, reporter=reporter, **settings)
    except RunInterrupted as stop:  # Ctrl-C: which epoch is saved, and the command that continues it
        reporter.close()
        from kdsl.cli.train_view import interrupted_text

        echo(interrupted_text(stop, sys.argv[1:]), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        reporter.close()


with_setting_flags(train, "train", _FIXED)


def register(app: typer.Typer) -> None:
    """Add ``train`` to the application."""
    app.command("train")(guarded(train))
