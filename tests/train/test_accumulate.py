"""``accumulate = N``: an optimizer step every N updates on their summed gradients (each loss / N)
equals one step on a batch N times larger; an epoch's remainder steps on its own, and says so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.training.accumulate import optimizer_steps, remainder_note
from kdsl.training.config import resolve_config
from kdsl.training.loop import Trainer
from kdsl.training.report import EventLog
from kdsl.training.stages import PhaseRun

TRAINER = SimpleNamespace(cfg=SimpleNamespace(grad_clip=None, zero_grad="before_backward"))  # what Trainer.update reads


def _phase(model: nn.Module, accumulate: int) -> PhaseRun:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    return PhaseRun("step", 1, optimizer, scheduler, None, list(model.parameters()), accumulate=accumulate)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _loss(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def test_accumulated_steps_equal_steps_on_batches_n_times_larger():
    torch.manual_seed(1)
    x, y = torch.randn(48, 5, dtype=torch.float64), torch.randint(0, 3, (48,))
    big, small = _model(), _model()
    big_phase, small_phase = _phase(big, 1), _phase(small, 3)
    for i in range(2):  # two optimizer steps on 24 samples each
        Trainer.update(TRAINER, _loss(big, x[24 * i:24 * (i + 1)], y[24 * i:24 * (i + 1)]), big_phase, last=False)
    for i in range(6):  # six updates of 8 samples, accumulated by 3
        Trainer.update(TRAINER, _loss(small, x[8 * i:8 * (i + 1)], y[8 * i:8 * (i + 1)]), small_phase,
                       last=False)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert small_phase.scheduler.last_epoch == big_phase.scheduler.last_epoch == 2


def test_an_epochs_remainder_makes_a_step_of_its_own():
    model = _model()
    phase = _phase(model, 2)
    x, y = torch.randn(3, 5, dtype=torch.float64), torch.randint(0, 3, (3,))
    before = [p.detach().clone() for p in model.parameters()]
    Trainer.update(TRAINER, _loss(model, x[:1], y[:1]), phase, last=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # still accumulating
    Trainer.update(TRAINER, _loss(model, x[1:2], y[1:2]), phase, last=False)
    Trainer.update(TRAINER, _loss(model, x[2:], y[2:]), phase, last=True)  # the epoch's last, alone
    assert phase.scheduler.last_epoch == 2 == optimizer_steps(3, 2)
    assert phase.pending == 0


def test_remainder_note_says_what_happens():
    assert remainder_note(12, 4) is None and remainder_note(5, 1) is None
    note = remainder_note(10, 4)
    assert "does not divide the 10 steps" in note and "last 2 steps make an optimizer step of their own" in note


SPEC = """
student = model("kdsl.zoo:digits_cnn")
record s = output of student
loss task = cross_entropy(s, batch.target)
train {
  data = dataset("kdsl.data:digits", batch_size=16)
  epochs = 1
  steps_per_epoch = 5
  accumulate = 2
  optimizer = sgd(lr=0.05)
  lr_schedule = multistep(milestones=[2], unit="iter")
}
"""


def test_a_run_with_accumulation_warns_of_the_remainder_and_counts_optimizer_steps(tmp_path):
    spec = tmp_path / "acc.kd"
    spec.write_text(SPEC)
    log = EventLog()
    kdsl.train(str(spec), out=str(tmp_path / "run"), reporter=log, threads=1, eval_teachers=False)
    warnings = [p for name, p in log.events if name == "warning"]
    assert any("accumulate = 2 does not divide the 5 steps" in w for w in warnings)


def test_accumulate_is_a_setting_with_a_range():
    spec = kdsl.loads(SPEC)
    assert resolve_config(spec, {}).accumulate == 2
    with pytest.raises(KdslError, match="at least 1"):
        resolve_config(spec, {"accumulate": 0})
