"""Rank entry for the distributed tests (tests/forked.run_ranks imports it in each rank, then runs
`kdsl`): `kdsl train` with the trainer's rank-agreement check observed. Each rank saves its
student as DIR/rank{R}.pt just before the check and touches DIR/agreed{R} after the check passed;
with KDSL_TEST_DIVERGE=1, rank 1 nudges one weight first, so the check must fail."""

from __future__ import annotations

import os
import sys

import torch

from kdsl.training import distributed

_real_check = distributed.check_ranks_agree


def _observed_check(student, d, device):
    out = sys.argv[sys.argv.index("--out") + 1]  # the command's (set after this module's import)
    torch.save({k: v.detach().cpu().clone() for k, v in student.state_dict().items()},
               os.path.join(out, f"rank{d.rank}.pt"))
    if os.environ.get("KDSL_TEST_DIVERGE") and d.rank == 1:
        with torch.no_grad():
            next(student.parameters()).view(-1)[0] += 1e-3
    _real_check(student, d, device)
    with open(os.path.join(out, f"agreed{d.rank}"), "w") as fh:
        fh.write("ok")


distributed.check_ranks_agree = _observed_check
