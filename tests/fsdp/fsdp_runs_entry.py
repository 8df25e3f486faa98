"""torchrun entry that runs several `kdsl` commands in one launch (one torch import and one
process group for all: a launch costs more than a tiny run). The arguments are the commands'
arguments, one command after another, separated by `+`. The process group is this entry's, so
each run joins it and leaves it up for the next; the first command that fails ends the launch
with its exit code. With KDSL_TEST_SERVED set, each rank writes to KDSL_TEST_SERVED.RANK how
many teacher passes a teacher-output store answered (it proves the store, not the teacher, was
read on every rank)."""

from __future__ import annotations

import os
import sys
from typing import List


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


if __name__ == "__main__":
    import torch.distributed as dist

    from kdsl.cli.app import main

    if os.environ.get("KDSL_TEST_SERVED"):
        count_served(os.environ["KDSL_TEST_SERVED"])
    dist.init_process_group("gloo")
    try:
        for command in commands(sys.argv[1:]):
            try:
                main(command)
            except SystemExit as done:
                if done.code:
                    raise
    finally:
        dist.destroy_process_group()
