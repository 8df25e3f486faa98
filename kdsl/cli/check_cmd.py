"""``kdsl check``: what it does, apart from how its command line is read.

:func:`check_specs` serves both the typer command (:mod:`kdsl.cli.app`) and the fast path of
:mod:`kdsl.cli.entry`, which answers ``kdsl check SPEC...`` without options without importing typer
and building every command (issue #27, item 5b: that cost as much as the check itself).
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

from kdsl.cli.errors import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, CliError
from kdsl.cli.render import echo, make_console, print_diagnostics
from kdsl.core.diagnostics import Diagnostic, summary_line, to_json

# What `kdsl check SPEC` without models leaves out, said where it answers "ok".
NOT_EXAMINED = "models, module paths and shapes not examined: add --dry-run"


def check_specs(specs: Sequence[str], as_json: bool = False, student: Optional[str] = None,
                teacher: Optional[str] = None, models: Sequence[str] = (), teacher_ckpt: Optional[str] = None,
                input_shape: Optional[str] = None, data: Optional[str] = None, load_weights: bool = False,
                dry_run: bool = False, params: Optional[Sequence[str]] = None) -> int:
    """Check each spec file (with models when any model option is given), print what was found,
    and give the exit code: 0 no errors, 1 errors, 2 when every error is a file that is no spec."""
    from kdsl.lang.loader import check_file

    with_models = any(v is not None for v in (student, teacher, input_shape, data, teacher_ckpt)) \
        or bool(models) or dry_run or load_weights
    all_diags: List[Diagnostic] = []
    unreadable = 0  # spec files that are no spec at all (binary, a device): 2, as `kdsl fmt` says
    for path in specs:
        if not os.path.lexists(path):  # anything else there (a device, a folder) check_file names
            raise CliError(f"no such spec file: {path}", "KD401")
        spec, diags, sources = check_file(path, params)  # --set NAME=VALUE: checked in every spec
        unreadable += path not in sources
        if spec is not None and with_models:
            from kdsl.reports.checking import check_with_models

            found = check_with_models(spec, student=student, teacher=teacher, models=list(models),
                                      input_shape=input_shape, data=data, teacher_ckpt=teacher_ckpt,
                                      load_weights=load_weights, dry_run=dry_run)
            if not as_json:
                _print_found(path, found)
            diags = diags + found.diagnostics
        elif spec is not None:
            from kdsl.io.look_for_weights import look_for_weights

            diags = diags + look_for_weights(spec)
        all_diags += diags
        if not as_json:
            print_diagnostics(diags, sources)
            verdict = summary_line(diags) if diags else "ok"
            echo(f"{path}: {verdict}" + (f" ({NOT_EXAMINED})" if spec is not None and not with_models else ""))
    if as_json:
        echo(to_json(all_diags))
    errors = sum(1 for d in all_diags if d.is_error)
    return EXIT_OK if not errors else EXIT_USAGE if errors == unreadable else EXIT_ERRORS


def _print_found(path: str, found) -> None:
    console = make_console()
    for table in found.tables:
        console.print(table)
    for note in found.notes:
        echo(f"{path}: {note}")
