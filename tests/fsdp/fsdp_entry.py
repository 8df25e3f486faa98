"""Entry for the FSDP tests, a torchrun script or a rank entry of tests/forked.run_ranks (which
imports it, then runs `kdsl`): `kdsl train` (kdsl.cli.app.main), with rank 1 killed by
SIGKILL just before training step KDSL_TEST_KILL_AT (counted over the run) when that is set, as
a machine failure would; or, with KDSL_TEST_FAIL_AT, failing there with a kdsl error (after
touching DIR/reached{step}, DIR being --out), as a rank whose data or model breaks would. With
KDSL_TEST_RANK1_KILL_AT=N, rank 1 alone passes it on as KDSL_KILL_AT (rundir's write points: rank 1
writes no file of its own, so its points are those of its checkpoint shards)."""

from __future__ import annotations

import os
import signal

from kdsl.training.loop import Trainer

_real_step = Trainer.step


def _step(self, epoch, i, batch):
    kill_at = os.environ.get("KDSL_TEST_KILL_AT")
    if kill_at and self.dist.rank == 1 and self.global_step == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    fail_at = os.environ.get("KDSL_TEST_FAIL_AT")
    if fail_at and self.dist.rank == 1 and self.global_step == int(fail_at):
        from kdsl.core.diagnostics import error

        open(os.path.join(self.run_dir.path, f"reached{fail_at}"), "w").close()
        raise error("KD707", f"rank 1 fails on purpose at step {fail_at}")
    return _real_step(self, epoch, i, batch)


Trainer.step = _step

if os.environ.get("RANK") == "1" and os.environ.get("KDSL_TEST_RANK1_KILL_AT"):
    os.environ["KDSL_KILL_AT"] = os.environ["KDSL_TEST_RANK1_KILL_AT"]

if __name__ == "__main__":
    from kdsl.cli.entry import main

    main()  # as `kdsl` does: the process is this command's own
