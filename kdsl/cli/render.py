"""Terminal output of every command: colour decisions, plain lines, rich consoles, diagnostics."""

from __future__ import annotations

import os
import sys
from typing import List

from kdsl.core.diagnostics import Diagnostic, render


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


def make_console(stream=None):
    """A rich console: wide when not on a terminal (logs, pipes, tests), coloured only on one."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1 here, which reads as "the input has errors": let the command's
            # guard end the program with the broken-pipe status instead
            raise BrokenPipeError

    stream = stream or sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return _Console(file=stream, highlight=False, soft_wrap=True, no_color=not use_color(stream),
                    width=None if terminal else 160)


def print_diagnostics(diags: List[Diagnostic], sources, err: bool = False) -> None:
    if diags:
        stream = sys.stderr if err else sys.stdout
        echo(render(diags, sources, color=use_color(stream)), err=err)
