"""``kdsl train SPEC``: flags -> ``kdsl.train`` -> rich output.

The setting flags (``--epochs``, ``--lr``, ``--data``, ...) are generated from the settings table
(:data:`kdsl.catalog.settings.FLAG_SETTINGS`): a setting with a ``flag`` gets an option of the
right type, its choices and its help text, with no line here. The command function's signature is
built from the table, which is what typer reads.
"""

from __future__ import annotations

import enum
import inspect
import os
import sys
from typing import Any, List, Optional

import typer

from kdsl.catalog.settings import FLAG_SETTINGS, Setting
from kdsl.cli.errors import EXIT_INTERRUPTED, CliError, guarded
from kdsl.cli.options import MODEL, STUDENT, TEACHER, TEACHER_CKPT
from kdsl.cli.render import echo, make_console
from kdsl.training.report import RunInterrupted

_PYTHON_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT"}  # how the help shows a flag's value

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


def _option(setting: Setting):
    """(annotation, typer option) of a setting's flag: None when not given, so that the spec's
    value (or the default) stays and its source is recorded right."""
    t = setting.type
    if t is None:  # a call, given as text in the language's syntax
        return Optional[str], typer.Option(None, setting.flag, help=setting.flag_help(), show_default=False,
                                           metavar="REF(...)" if setting.call == "data" else "CALL")
    if t.name == "choice":  # typer shows an Enum's values as the allowed choices
        choices = enum.Enum(setting.name.title(), {str(c): str(c) for c in t.choices}, type=str)
        return Optional[choices], typer.Option(None, setting.flag, help=setting.flag_help(),
                                               metavar="[" + "|".join(str(c) for c in t.choices) + "]")
    if t.name == "bool":  # a switch pair, shown without a value
        name = setting.flag[2:]
        return Optional[bool], typer.Option(None, f"--{name}/--no-{name}", help=setting.flag_help())
    return Optional[_PYTHON_TYPES[t.name]], typer.Option(None, setting.flag, help=setting.flag_help(),
                                                         metavar=_METAVARS[t.name])


def _signature_of_train() -> inspect.Signature:
    params = []
    for name, annotation, default in _FIXED:
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                        annotation=annotation))
    for setting in FLAG_SETTINGS:
        annotation, default = _option(setting)
        params.append(inspect.Parameter(setting.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=default, annotation=annotation))
    return inspect.Signature(params, return_annotation=None)


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

    settings = {k: v.value if isinstance(v, enum.Enum) else v for k, v in settings.items()}
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


train.__signature__ = _signature_of_train()
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}


def register(app: typer.Typer) -> None:
    """Add ``train`` to the application."""
    app.command("train")(guarded(train))
