"""The ``kdsl`` entry point.

``kdsl check SPEC...`` without options, the command run most often (editors, pre-commit hooks),
is answered here without importing typer and building every command's options: that cost about
as much as checking a spec (issue #27, item 5b). Everything else, ``--help`` and every option of
``check`` included, goes to the typer app in :mod:`kdsl.cli.app`; both paths run
:func:`kdsl.cli.check_cmd.check_specs` under the one exit-code rule (:mod:`kdsl.cli.errors`).
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence


def is_plain_check(args: Sequence[str]) -> bool:
    """``check`` followed by one or more spec paths and nothing that looks like an option."""
    return len(args) >= 2 and args[0] == "check" and not any(a.startswith("-") for a in args[1:])


def main(argv: Optional[List[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if is_plain_check(args):
        code = plain_check(args[1:])
        if argv is None:  # the process is this command's own
            hard_exit(code)
        sys.exit(code)
    from kdsl.cli.app import main as run_app

    run_app(argv)


def plain_check(specs: Sequence[str]) -> int:
    from kdsl.cli.check_cmd import check_specs
    from kdsl.cli.errors import failure_status

    try:
        return check_specs(specs)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - no tracebacks for users
        return failure_status(e)


def hard_exit(code: int) -> None:
    """Exit without the interpreter's teardown, which frees every module and object one by one and
    cost a sixth of a plain check (as mypy does). A plain check holds no file, thread or atexit
    work to finish: only the output streams, flushed here."""
    from kdsl.cli.errors import EXIT_BROKEN_PIPE

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # a reader that stopped (`kdsl check x.kd | head -1`), as failure_status says
        code = EXIT_BROKEN_PIPE
    os._exit(code)
