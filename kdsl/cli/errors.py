"""The one exit-code rule of every command, applied in one place (:func:`failure_status`, which
:func:`guarded` applies to typer commands).

====  ==========================================================================================
0     success (warnings allowed)
1     the input has errors: a spec, or a model, checkpoint or data set that a spec or a flag names
      (diagnostics of every code but those below)
2     usage or I/O: a bad flag or flag value, a spec file that does not exist, a run directory to
      resume that is not there or not this spec's, an output that cannot be written, a device or
      precision this machine lacks (KD401, KD701, KD703, KD704, KD705, KD706; click's own usage
      errors; an OSError)
3     an internal error: a bug in kdsl (the message asks for a report; KDSL_DEBUG=1 shows the
      traceback)
130   interrupted (Ctrl-C)
====  ==========================================================================================

No command prints a Python traceback.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable, Optional

from kdsl.core.diagnostics import Diagnostic, KdslError, make
from kdsl.cli.render import echo, print_diagnostics

EXIT_OK, EXIT_ERRORS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a tool that SIGPIPE ended (`kdsl check ... | head -1`)

# Codes of problems with the command line or the machine rather than with the input's content.
USAGE_CODES = frozenset({"KD401", "KD701", "KD703", "KD704", "KD705", "KD706"})


def exit_code_for(diagnostics: Iterable[Diagnostic]) -> int:
    """EXIT_USAGE when every error is a usage or I/O problem, EXIT_ERRORS otherwise (and when
    there is no error at all, EXIT_OK)."""
    errors = [d for d in diagnostics if d.is_error]
    if not errors:
        return EXIT_OK
    return EXIT_USAGE if all(d.code in USAGE_CODES for d in errors) else EXIT_ERRORS


class CliError(Exception):
    """A problem with how a command was called; exit code by :func:`exit_code_for` (2 for KD701)."""

    def __init__(self, message: str, code: str = "KD701", hint: Optional[str] = None):
        super().__init__(message)
        self.code, self.hint = code, hint


def guarded(command):
    """Turn every failure inside a typer command into a message and the rule's exit code."""
    import typer  # here, not at the top: `kdsl check SPEC` answers without typer (kdsl.cli.entry)

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - no tracebacks for users
            raise typer.Exit(failure_status(e))

    return run


def failure_status(error: BaseException) -> int:
    """Say what went wrong (on stderr) and give the rule's exit code for it; an unexpected error
    is re-raised when KDSL_DEBUG is set, to show its traceback."""
    if isinstance(error, CliError):
        diag = make(error.code, str(error), hint=error.hint)
        print_diagnostics([diag], {}, err=True)
        return exit_code_for([diag])
    if isinstance(error, KdslError):
        print_diagnostics(error.diagnostics, error.sources, err=True)
        return exit_code_for(error.diagnostics) or EXIT_ERRORS
    if isinstance(error, KeyboardInterrupt):
        echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    if isinstance(error, BrokenPipeError):
        quiet_broken_pipe()
        return EXIT_BROKEN_PIPE
    if isinstance(error, OSError):
        name = f": {error.filename}" if getattr(error, "filename", None) else ""
        echo(f"kdsl: error: {error.strerror or error}{name}", err=True)
        return EXIT_USAGE
    if os.environ.get("KDSL_DEBUG"):
        raise error
    echo(f"kdsl: internal error: {type(error).__name__}: {error}. This is a bug in kdsl; "
         "run again with KDSL_DEBUG=1 to see the traceback, and please report it.", err=True)
    return EXIT_INTERNAL


def quiet_broken_pipe() -> None:
    """The reader of our output went away (``| head``): stop writing, and let nothing complain when
    Python flushes stdout at exit."""
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (captured): nothing to flush
        pass
