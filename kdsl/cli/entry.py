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

    if argv is None and is_torchrun_worker():
        hard_exit(exit_status(run_app, argv))
    run_app(argv)


def is_torchrun_worker() -> bool:
    """A process that torchrun started, one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def exit_status(run, argv) -> int:
    """The status ``run(argv)`` exits with (0 when it returns)."""
    try:
        run(argv)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def plain_check(specs: Sequence[str]) -> int:
    from kdsl.cli.check_cmd import check_specs
    from kdsl.cli.errors import failure_status

    try:
        return check_specs(specs)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - no tracebacks for users
        return failure_status(e)


def hard_exit(code: int) -> None:
    """Exit without the interpreter's teardown, which frees every module and object one by one.

    A plain check: that teardown cost a sixth of the check (mypy exits the same way), and a check
    holds no file, thread or atexit work to finish. A torchrun worker: its run has closed its files
    and trackers and left the process group, whose threads kdsl.train ends before it returns
    (training.distributed.end_distributed; a script calling kdsl.train relies on that alone).
    Before that was so, a finished worker aborted in teardown now and then (SIGABRT, 'terminate
    called without an active exception'), turning a finished run into a failed one; the command
    keeps this guard against whatever else a library leaves for teardown. Only the output streams
    are left to flush, here."""
    from kdsl.cli.errors import EXIT_BROKEN_PIPE

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # a reader that stopped (`kdsl check x.kd | head -1`), as failure_status says
        code = EXIT_BROKEN_PIPE
    os._exit(code)
