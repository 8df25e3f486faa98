"""Where each setting of a run comes from: flags override the spec's train block, which overrides
kdsl's defaults."""

from __future__ import annotations

import pytest
import torch

import kdsl
from kdsl.training.trainer import Flags, TrainConfig, resolve_config

SPEC = """
student = model("kdsl.zoo:digits_cnn")
record s = output of student
loss task = cross_entropy(s, batch.target)
train {
  data = dataset("kdsl.data:digits", batch_size=32, val_fraction=0.25)
  epochs = 7
  optimizer = sgd(lr=0.2, momentum=0.5)
  lr_schedule = step(milestones=[3], gamma=0.5)
  seed = 3
  threads = 2
}
"""


def test_defaults_apply_without_a_train_block():
    cfg = resolve_config(kdsl.loads("student\nrecord s = output of student\nloss t = cross_entropy(s, batch.target)\n",
                                    "/some/dir/plain.kd"), Flags())
    d = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr_schedule, cfg.seed) == \
        (d.epochs, d.batch_size, d.optimizer, d.lr_schedule, d.seed)
    assert cfg.data is None and cfg.out == "runs/plain" and cfg.sources["epochs"] == "default"


def test_the_spec_overrides_defaults():
    cfg = resolve_config(kdsl.loads(SPEC, "s.kd"), Flags())
    assert cfg.data == ("kdsl.data:digits", {"val_fraction": 0.25})  # loader options taken out
    assert cfg.batch_size == 32 and cfg.epochs == 7 and cfg.seed == 3 and cfg.threads == 2
    assert cfg.optimizer == ("sgd", {"lr": 0.2, "momentum": 0.5})
    assert cfg.lr_schedule == ("step", {"milestones": [3], "gamma": 0.5})
    assert cfg.sources["epochs"] == "spec"


def test_flags_override_the_spec():
    flags = Flags(data="kdsl.data:digits(val_fraction=0.1, batch_size=16)", epochs=2, seed=9, lr=0.01,
                  optimizer="adam(lr=0.5)", threads=1, out="elsewhere")
    cfg = resolve_config(kdsl.loads(SPEC, "s.kd"), flags)
    assert cfg.data == ("kdsl.data:digits", {"val_fraction": 0.1}) and cfg.batch_size == 16
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.threads, cfg.out) == (2, 9, 0.01, 1, "elsewhere")
    assert cfg.optimizer == ("adam", {"lr": 0.5}) and cfg.sources["optimizer"] == "flag"


@pytest.mark.parametrize("flags, text", [
    (Flags(threads=0), "--threads must be at least 1"),
    (Flags(optimizer="adam(lr='x')"), "cannot read"),
    (Flags(optimizer="sgdd()"), "did you mean 'sgd'?"),
    (Flags(optimizer="sgd(lr=\"fast\")"), "must be float"),
])
def test_bad_flags(flags, text):
    with pytest.raises(kdsl.KdslError) as info:
        resolve_config(kdsl.loads(SPEC, "s.kd"), flags)
    assert text in str(info.value)


def test_threads_setting_reaches_torch(tmp_path):
    from rich.console import Console
    import io

    from kdsl.training.trainer import Trainer

    before = torch.get_num_threads()
    try:
        Trainer(kdsl.loads(SPEC, "s.kd"), Flags(threads=1, epochs=1, out=str(tmp_path / "r")),
                Console(file=io.StringIO()))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
