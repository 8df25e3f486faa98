"""Entry of the `kdsl train --epochs 6` child of tests/train/test_progress.py's Ctrl-C test: as its
last epoch starts, the run waits for the test's SIGINT (KeyboardInterrupt), so that it cannot end
before the signal comes. The test sends it once the first epoch's checkpoint is on disk, and the
five epochs after it take a second on an idle machine: a test process held off the CPU that long
by a loaded one found the run finished (exit 0, or epoch 6 of 6 saved). Sent in time, the signal
lands where it did before, anywhere in epochs 2 to 5."""

import time

from kdsl.training.data import EpochSampler

LAST = 5  # 0-based: the sixth epoch, whose start has the first five saved
_real_set_epoch = EpochSampler.set_epoch


def _wait_at_the_last(self, epoch):
    while epoch == LAST:
        time.sleep(0.05)  # until the SIGINT raises KeyboardInterrupt here
    _real_set_epoch(self, epoch)


EpochSampler.set_epoch = _wait_at_the_last
