"""--tensorboard (issue #14, item 5): the event files hold every loss term (weighted and not), the
terms' weights, the learning rate and the epoch's metrics, against the global step; without the
tensorboard package the run stops at once with KD726 and the install command; tensorboard is
imported only when asked for."""

from __future__ import annotations

import math
import sys

import pytest

import forked
import kdsl
from kdsl.training.loggers import RunLog
from kdsl.training.loop import REPORT_EVERY
from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC, ROOT

STEPS = 12  # two step events an epoch: step 10 and the epoch's last


def _scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tb_run(tmp_path_factory):
    pytest.importorskip("tensorboard")
    import torch

    out = tmp_path_factory.mktemp("tb") / "run"
    before = torch.get_num_threads()
    try:
        result = kdsl.train(KD_SPEC, out=str(out), epochs=2, steps_per_epoch=STEPS, threads=1, tensorboard=True)
    finally:
        torch.set_num_threads(before)
    return out, result, _scalars(out / "tensorboard")


def test_step_tags_at_every_report(tb_run):
    _, _, scalars = tb_run
    steps = sorted({e * STEPS + s for e in range(2) for s in range(1, STEPS + 1)
                    if s % REPORT_EVERY == 0 or s == STEPS})
    for tag in ("loss/total", "loss/kd", "loss/task", "loss_unweighted/kd", "loss_unweighted/task",
                "weight/kd", "weight/task", "lr"):
        assert [s for s, _ in scalars[tag]] == steps, tag


def test_weighted_terms_are_weight_times_unweighted(tb_run):
    _, _, scalars = tb_run
    weights = {"kd": 0.9, "task": 0.1}  # the spec's
    for term, w in weights.items():
        assert all(v == pytest.approx(w, rel=1e-6) for _, v in scalars[f"weight/{term}"])
        for (s1, weighted), (s2, raw) in zip(scalars[f"loss/{term}"], scalars[f"loss_unweighted/{term}"]):
            assert s1 == s2 and weighted == pytest.approx(w * raw, rel=1e-5)
    for (_, total), (_, kd), (_, task) in zip(scalars["loss/total"], scalars["loss/kd"], scalars["loss/task"]):
        assert total == pytest.approx(kd + task, rel=1e-5)


def test_learning_rate_follows_the_cosine_schedule(tb_run):
    _, result, scalars = tb_run
    lr0, total = 0.05, 2 * STEPS  # the spec's sgd lr; cosine over every step of the run
    for step, lr in scalars["lr"]:
        # logged after the step's scheduler.step(): the rate of step `step + 1`
        assert lr == pytest.approx(lr0 * (1 + math.cos(math.pi * step / total)) / 2, rel=1e-5, abs=1e-9)


def test_epoch_tags_are_the_metrics_rows(tb_run):
    _, result, scalars = tb_run
    for row in result.history:
        for key in ("train_loss", "train/kd", "train/task", "val_top1", "val_top5", "val_loss", "lr", "epoch"):
            step, value = scalars[f"epoch/{key}"][row["epoch"] - 1]
            assert step == row["step"] and value == pytest.approx(row[key], rel=1e-6, abs=1e-9), key
    assert result.files.tensorboard == str(tb_run[0] / "tensorboard")


def test_a_resumed_run_continues_the_event_files(tb_run, tmp_path):
    """Interrupted in epoch 2 after it logged step 22, resumed from epoch 1's checkpoint: each
    step shows once, with the values of the uninterrupted run (the resume is bit-exact)."""
    import torch

    from kdsl.training import loop

    out = tmp_path / "run"
    real = loop.Trainer.step

    def stop_late_in_epoch_2(self, epoch, i, batch):
        if (epoch, i) == (1, STEPS - 1):
            raise KeyboardInterrupt
        return real(self, epoch, i, batch)

    loop.Trainer.step = stop_late_in_epoch_2
    try:
        with pytest.raises(KeyboardInterrupt):
            kdsl.train(KD_SPEC, out=str(out), epochs=2, steps_per_epoch=STEPS, threads=1, tensorboard=True)
    finally:
        loop.Trainer.step = real
    assert [s for s, _ in _scalars(out / "tensorboard")["loss/kd"]][-1] == STEPS + REPORT_EVERY
    kdsl.train(KD_SPEC, out=str(out), epochs=2, steps_per_epoch=STEPS, threads=1, tensorboard=True, resume=True)
    torch.set_num_threads(1)
    again, first = _scalars(out / "tensorboard"), tb_run[2]
    for tag in ("loss/kd", "lr", "epoch/val_top1"):
        assert again[tag] == first[tag], tag


def test_without_tensorboard_the_run_stops_with_the_install_hint(tmp_path, monkeypatch):
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # `import tensorboard` now fails
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=1, steps_per_epoch=1, threads=1, tensorboard=True)
    diag = info.value.diagnostics[0]
    assert diag.code == "KD726" and any("pip install tensorboard" in h for h in diag.hints)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_without_tensorboard_through_the_cli(tmp_path, monkeypatch):
    """tensorboard that fails to import (as above), `kdsl train --tensorboard` through the entry
    point the `kdsl` command runs: exit 1, one KD726 message, no traceback."""
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
    code, out, err = run_cli_in_process("train", KD_SPEC, "--tensorboard", "--epochs", "1", "--steps-per-epoch", "1",
                                        "--threads", "1", "--out", str(tmp_path / "run"), env={"OMP_NUM_THREADS": "1"})
    assert code == 1 and "Traceback" not in out + err
    assert err.startswith("error[KD726]") and "pip install tensorboard" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_tensorboard_is_imported_only_when_asked_for(tmp_path):
    """A run without --tensorboard, in a process of its own (tests/forked.py) that has not imported
    tensorboard (this one has): none of its modules afterwards."""
    code = ("import sys, kdsl\n"
            "assert not [m for m in sys.modules if 'tensorboard' in m]\n"
            f"kdsl.train({KD_SPEC!r}, out={str(tmp_path / 'run')!r}, epochs=1, steps_per_epoch=1, threads=1)\n"
            "print(sorted(m for m in sys.modules if 'tensorboard' in m))\n")
    status, out, err = forked.run_python(code, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert status == 0, err
    assert out.strip().splitlines()[-1] == "[]"


def test_a_logger_is_two_methods():
    """The interface another integration implements (W&B, MLflow): log_scalars and close."""

    class Collect:
        def __init__(self):
            self.seen, self.closed = [], False

        def log_scalars(self, step, scalars):
            self.seen.append((step, dict(scalars)))

        def close(self):
            self.closed = True

    sink = Collect()
    log = RunLog([sink])
    log.epoch(7, {"epoch": 1, "stage": "main", "val_top1": 50.0, "train/kd": 0.5})
    log.close()
    log.close()  # closing twice is harmless
    assert sink.seen == [(7, {"epoch/epoch": 1.0, "epoch/val_top1": 50.0, "epoch/train/kd": 0.5})] and sink.closed


def test_a_scheduled_weight_moves(tmp_path):
    """fitnets.kd's hint term is weighted by linear(0.0, 10.0, epochs=5): its logged weight grows
    from step to step, and its weighted value is weight x unweighted."""
    pytest.importorskip("tensorboard")
    spec = str(ROOT / "specs" / "digits" / "fitnets.kd")
    kdsl.train(spec, out=str(tmp_path / "run"), epochs=2, steps_per_epoch=STEPS, threads=1, tensorboard=True)
    scalars = _scalars(tmp_path / "run" / "tensorboard")
    weights = [v for _, v in scalars["weight/hint"]]
    assert len(weights) == 4 and all(0.0 < a < b < 10.0 for a, b in zip(weights, weights[1:]))
    for (_, w), (_, raw), (_, weighted) in zip(scalars["weight/hint"], scalars["loss_unweighted/hint"],
                                               scalars["loss/hint"]):
        assert weighted == pytest.approx(w * raw, rel=1e-5)
    assert all(v == 1.0 for _, v in scalars["weight/task"])
