"""The one exit-code rule of every command, applied in one place (:func:`guarded`).

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

import typer
from typer.core import TyperGroup

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
    """Turn every failure inside a command into a message and the rule's exit code."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except CliError as e:
            diag = make(e.code, str(e), hint=e.hint)
            print_diagnostics([diag], {}, err=True)
            raise typer.Exit(exit_code_for([diag]))
        except KdslError as e:
            print_diagnostics(e.diagnostics, e.sources, err=True)
            raise typer.Exit(exit_code_for(e.diagnostics) or EXIT_ERRORS)
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            quiet_broken_pipe()
            raise typer.Exit(EXIT_BROKEN_PIPE)
        except OSError as e:
            name = f": {e.filename}" if getattr(e, "filename", None) else ""
            echo(f"kdsl: error: {e.strerror or e}{name}", err=True)
            raise typer.Exit(EXIT_USAGE)
        except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
            if os.environ.get("KDSL_DEBUG"):
                raise
            echo(f"kdsl: internal error: {type(e).__name__}: {e}. This is a bug in kdsl; "
                 "run again with KDSL_DEBUG=1 to see the traceback, and please report it.", err=True)
            raise typer.Exit(EXIT_INTERNAL)

    return run


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


class KdslGroup(TyperGroup):
    """typer's command group, with click's usage errors (an unknown flag, a flag value of the wrong
    type, a missing argument) given kdsl's format: a KD701 diagnostic with a hint, exit 2, like
    every other bad command-line input (``--epoch 5`` got click's "Error: No such option")."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        import sys

        from typer.core import _click

        errors = _click.exceptions
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except errors.NoArgsIsHelpError as e:  # `kdsl` alone: the help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except errors.UsageError as e:
            diag = usage_diagnostic(e)
            print_diagnostics([diag], {}, err=True)
            sys.exit(exit_code_for([diag]))
        except errors.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except errors.Abort:
            echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def usage_diagnostic(e) -> Diagnostic:
    """A click usage error as a KD701 diagnostic: what was wrong, and what was meant or where the
    command's options are listed."""
    command = e.ctx.command_path if e.ctx is not None else "kdsl"
    listed = f"`{command} -h` lists its options"
    name = getattr(e, "option_name", None)
    if name and hasattr(e, "possibilities"):  # an unknown flag
        from kdsl.core.suggest import did_you_mean

        flags = [p for p in (e.possibilities or ()) if p.startswith("-")]
        return make("KD701", f"{command}: no such option: {name}", hint=did_you_mean(name, flags) or listed)
    return make("KD701", f"{command}: {e.format_message()}", hint=listed)
