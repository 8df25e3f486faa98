"""Rank entry (tests/forked.run_ranks) that runs several `kdsl` commands in one launch, in one
process group (a launch costs more than a tiny run: each rank imports what the preloaded server
did not, FSDP's and DCP's modules among them). The arguments are the commands' arguments, one
command after another, separated by `+`. The process group is this entry's, so each run joins it
and leaves it up for the next; the first command that fails ends the rank with its exit code.
tests/fsdp/fsdp_entry.py's hooks (a rank killed or failing at a step) apply to every command.
With KDSL_TEST_SERVED set, each rank writes to KDSL_TEST_SERVED.RANK how many teacher passes a
teacher-output store answered (it proves the store, not the teacher, was read on every rank).

forked.run_ranks imports this module in each rank, then calls kdsl.cli.entry.main: the module puts
:func:`main` in its place (the rank is a process of its own, which ends after this one call)."""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import fsdp_entry  # noqa: F401  (its hooks)
from kdsl.cli import entry


def commands(argv: List[str]) -> List[List[str]]:
    out: List[List[str]] = [[]]
    for arg in argv:
        if arg == "+":
            out.append([])
        else:
            out[-1].append(arg)
    return [c for c in out if c]


def count_served(path: str) -> None:
    from kdsl.training.teacher_store import TeacherStore

    real = TeacherStore.serve
    served = [0]

    def serve(self, *args, **kwargs):
        answered = real(self, *args, **kwargs)
        served[0] += bool(answered)
        with open(f"{path}.{os.environ['RANK']}", "w") as f:
            f.write(str(served[0]))
        return answered

    TeacherStore.serve = serve


def main(argv: Optional[List[str]] = None) -> None:
    """Each command in turn, in this entry's process group; then the rank's end, as a torchrun
    worker's (kdsl.cli.entry.hard_exit) with the first failure's exit code (0 when none)."""
    import torch.distributed as dist

    from kdsl.cli.app import main as run_app

    dist.init_process_group("gloo")
    code = 0
    try:
        for command in commands(sys.argv[1:] if argv is None else argv):
            code = entry.exit_status(run_app, command)
            if code:
                break
    finally:
        dist.destroy_process_group()
    entry.hard_exit(code)


if os.environ.get("KDSL_TEST_SERVED"):
    count_served(os.environ["KDSL_TEST_SERVED"])
entry.main = main
