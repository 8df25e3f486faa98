"""torchrun entry for the distributed tests: `kdsl train` (kdsl.cli.app.main) with the trainer's
rank-agreement check observed. Each rank saves its student as DIR/rank{R}.pt just before the check
and touches DIR/agreed{R} after the check passed; with KDSL_TEST_DIVERGE=1, rank 1 nudges one
weight first, so the check must fail."""

from __future__ import annotations

import os
import sys

import torch

from kdsl.training import trainer

_real_check = trainer.Trainer.check_ranks_agree


def _observed_check(self, student):
    rank = self.dist.rank
    torch.save({k: v.detach().cpu().clone() for k, v in student.state_dict().items()},
               os.path.join(self.out, f"rank{rank}.pt"))
    if os.environ.get("KDSL_TEST_DIVERGE") and rank == 1:
        with torch.no_grad():
            next(student.parameters()).view(-1)[0] += 1e-3
    _real_check(self, student)
    with open(os.path.join(self.out, f"agreed{rank}"), "w") as fh:
        fh.write("ok")


trainer.Trainer.check_ranks_agree = _observed_check

if __name__ == "__main__":
    from kdsl.cli.app import main

    main(sys.argv[1:])
