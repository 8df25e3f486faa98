"""Entry of a `kdsl sweep` child of tests/forked.py whose trials tests/train/test_sweep.py paces,
so that no test depends on how fast a loaded machine runs: at the end of its first epoch, trial N
writes KDSL_TEST_SIGNALS/epoch-N-PID and waits for the test's KDSL_TEST_SIGNALS/go-N (or is
killed there)."""

import os
import time

from kdsl.training import sweep


class Paced(sweep.TrialReporter):
    def epoch_end(self, row, total_epochs):
        super().epoch_end(row, total_epochs)
        if row["epoch"] == 1:
            signals = os.environ["KDSL_TEST_SIGNALS"]
            open(os.path.join(signals, f"epoch-{self.trial.number}-{os.getpid()}"), "w").close()
            while not os.path.exists(os.path.join(signals, f"go-{self.trial.number}")):
                time.sleep(0.05)


sweep.TrialReporter = Paced
