"""The command line: ``kdsl check | train | explain | graph | list | schema | explain-code``.

No command prints a Python traceback: problems are diagnostics (exit 1 for a spec's errors in
``check``, 2 for bad input on the command line), and an unexpected failure is a one-paragraph
internal-error message (set ``KDSL_DEBUG=1`` to see the traceback). Commands that need torch
import it when they run, so ``kdsl check SPEC`` stays fast.
"""

from __future__ import annotations

import enum
import functools
import os
import sys
from typing import List, Optional

import typer

from .diagnostics import Diagnostic, KdslError, render, summary_line, to_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="kdsl: a declarative language for knowledge distillation.",
                  context_settings={"help_option_names": ["-h", "--help"]})

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


def use_color(stream=None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def echo(text: str = "", err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def print_diagnostics(diags: List[Diagnostic], sources, err: bool = False) -> None:
    if diags:
        stream = sys.stderr if err else sys.stdout
        echo(render(diags, sources, color=use_color(stream)), err=err)


class CliError(Exception):
    """A command-line problem: printed as one paragraph, exit code 2."""

    def __init__(self, message: str, code: str = "KD701", hint: Optional[str] = None):
        super().__init__(message)
        self.code, self.hint = code, hint


def guarded(command):
    """Turn every failure inside a command into a message and an exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except CliError as e:
            _fail(str(e), e.code, e.hint)
            raise typer.Exit(EXIT_USAGE)
        except KdslError as e:
            print_diagnostics(e.diagnostics, e.sources, err=True)
            raise typer.Exit(EXIT_USAGE)
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            raise typer.Exit(130)
        except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
            if os.environ.get("KDSL_DEBUG"):
                raise
            echo(f"kdsl: internal error: {type(e).__name__}: {e}. This is a bug in kdsl; "
                 "run again with KDSL_DEBUG=1 to see the traceback, and please report it.", err=True)
            raise typer.Exit(EXIT_INTERNAL)

    return run


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"


# ---------------------------------------------------------------------------- check
@app.command()
@guarded
def check(
    specs: List[str] = typer.Argument(..., metavar="SPEC...", help="spec files to check"),
    format: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json"),
    student: Optional[str] = typer.Option(None, "--student", help="student model, pkg.module:factory(k=v)"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="teacher model reference"),
    model: List[str] = typer.Option([], "--model", help="NAME=REF for any model of the spec"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape", help="dry-run input shape, e.g. 2,3,32,32"),
    data: Optional[str] = typer.Option(None, "--data", help="dry-run on one batch of this data reference"),
) -> None:
    """Check spec files; with models, also resolve every path and dry-run the shapes.

    Exit code 0 when there are no errors, 1 when there are, 2 for bad command-line input.
    """
    from .loader import check_file

    with_models = bool(student or teacher or model or input_shape or data)
    all_diags: List[Diagnostic] = []
    all_sources = {}
    for path in specs:
        if not os.path.isfile(path):
            raise CliError(f"no such spec file: {path}", "KD401")
        spec, diags, sources = check_file(path)
        all_sources.update(sources)
        if spec is not None and with_models:
            from .checking import check_with_models

            diags = diags + check_with_models(spec, student=student, teacher=teacher, models=model,
                                              input_shape=input_shape, data=data,
                                              table=format is OutputFormat.text)
        all_diags += diags
        if format is OutputFormat.text:
            print_diagnostics(diags, sources)
            echo(f"{path}: {summary_line(diags) if diags else 'ok'}")
    if format is OutputFormat.json:
        echo(to_json(all_diags))
    raise typer.Exit(EXIT_ERRORS if any(d.is_error for d in all_diags) else EXIT_OK)


# ---------------------------------------------------------------------------- catalog
@app.command("list")
@guarded
def list_components(
    what: str = typer.Argument("all", metavar="[losses|connectors|schedules|optimizers|lr-schedules|NAME]"),
) -> None:
    """Print the component catalog as a table, or one entry whole."""
    from .catalog_view import show_catalog

    show_catalog(what)


@app.command()
@guarded
def schema() -> None:
    """Print the JSON Schema of the spec IR."""
    import json

    from .ir import Spec

    echo(json.dumps(Spec.model_json_schema(), indent=2))


@app.command("explain-code")
@guarded
def explain_code(code: str = typer.Argument(..., metavar="CODE", help="e.g. KD201")) -> None:
    """Explain a diagnostic code."""
    from .codes import CODES, explain

    try:
        echo(explain(code))
    except KeyError:
        from .suggest import did_you_mean

        raise CliError(f"unknown diagnostic code '{code}'", "KD701",
                       hint=did_you_mean(code.upper(), list(CODES)) or "codes run KD100 to KD799")


# ---------------------------------------------------------------------------- entry point
def _fail(message: str, code: str, hint: Optional[str] = None) -> int:
    from .diagnostics import make

    print_diagnostics([make(code, message, hint=hint)], {}, err=True)
    return EXIT_USAGE


def main(argv: Optional[List[str]] = None) -> None:
    app(args=argv, prog_name="kdsl")
