"""Where each setting of a run comes from: flags override the spec's train block, which overrides
kdsl's defaults; the settings table is the one list of settings, and every consumer agrees with it."""

from __future__ import annotations

import pytest
import torch

import kdsl
from kdsl.catalog.settings import BY_NAME, DATA_OPTIONS, FLAG_SETTINGS, SETTINGS, SPEC_SETTINGS
from kdsl.training.config import TrainConfig, resolve_config

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
PLAIN = "student\nrecord s = output of student\nloss t = cross_entropy(s, batch.target)\n"

# A value in a spec's train block for every setting the spec may set (data options inside dataset(...)),
# and the value it resolves to.
SPEC_VALUES = {
    "data": ('dataset("kdsl.data:digits", val_fraction=0.3)', ("kdsl.data:digits", {"val_fraction": 0.3})),
    "epochs": ("3", 3),
    "steps_per_epoch": ("7", 7),
    "batch_size": (None, 24),  # given inside dataset(...)
    "optimizer": ("adam(lr=0.01)", ("adam", {"lr": 0.01})),
    "lr": (None, None),  # not a train-block setting: stays the default
    "lr_schedule": ("constant()", ("constant", {})),
    "seed": ("5", 5),
    "device": ('"cpu"', "cpu"),
    "amp": ('"bf16"', "bf16"),
    "out": ('"somewhere"', "somewhere"),
    "num_workers": ("1", 1),
    "grad_clip": ("2.5", 2.5),
    "accumulate": ("4", 4),
    "batch_transform": ("rotations()", ("rotations", {})),
    "visualize": ('"s"', "s"),
    "contrast_negatives": ("8", 8),
    "collate": ('"sched_data:collate"', "sched_data:collate"),
    "batch_sampler": ('"sched_data:Batches"', "sched_data:Batches"),
    "visualize_channels": ('"top"', "top"),
    "zero_grad": ("\"after_step\"", "after_step"),
    "share_input": ("true", True),
    "eval_teachers": ("false", False),
    "allow_random_teacher": ("true", True),
    "threads": ("1", 1),
    "drop_last": (None, True),  # given inside dataset(...)
    "best_metric": ('"val_loss"', "val_loss"),
    "tensorboard": ("true", True),
    "log": ('["mlflow", "wandb"]', ["mlflow", "wandb"]),
    "progress_every": ("5.0", 5.0),
    "checkpoint_every": ("100", 100),
    "val_every": ("200", 200),
    "patience": ("3", 3),
    "inputs": ('["input_ids", "attention_mask"]', ["input_ids", "attention_mask"]),
    "task": ('"lm"', "lm"),
    "compile": ("true", True),
    "truncate": ("false", False),
    "teacher_cache": (None, None),  # a flag only: a store belongs to one machine's files
    "params": (None, None),  # --set: values for the spec's params (tests/language/test_given_params.py)
    "strategy": ('"fsdp"', "fsdp"),
    "shard_units": ('["blocks.*"]', ["blocks.*"]),
    "replicated": ('["student"]', ["student"]),
    "offloaded": ("[]", []),
    "collective_timeout": ("60.0", 60.0),
}
# What a caller (flag or kdsl.train keyword) gives for every setting, and what it resolves to.
GIVEN_VALUES = {
    "data": ("kdsl.data:digits(val_fraction=0.1)", ("kdsl.data:digits", {"val_fraction": 0.1})),
    "epochs": (2, 2),
    "steps_per_epoch": (5, 5),
    "batch_size": (16, 16),
    "optimizer": ("sgd(lr=0.3)", ("sgd", {"lr": 0.3})),
    "lr": (0.01, 0.01),
    "lr_schedule": ("step(milestones=[1])", ("step", {"milestones": [1]})),
    "seed": (9, 9),
    "device": ("cpu", "cpu"),
    "amp": ("bf16", "bf16"),
    "out": ("elsewhere", "elsewhere"),
    "num_workers": (2, 2),
    "grad_clip": (1.0, 1.0),
    "accumulate": (2, 2),
    "batch_transform": ("mixup(alpha=0.5)", ("mixup", {"alpha": 0.5})),
    "visualize": ("s,t", "s,t"),
    "contrast_negatives": (4, 4),
    "collate": ("a.b:c", "a.b:c"),
    "batch_sampler": ("a.b:D", "a.b:D"),
    "visualize_channels": ("top", "top"),
    "zero_grad": ("after_step", "after_step"),
    "share_input": (True, True),
    "eval_teachers": (False, False),
    "allow_random_teacher": (True, True),
    "threads": (1, 1),
    "drop_last": (True, True),
    "best_metric": ("val_top5", "val_top5"),
    "tensorboard": (True, True),
    "log": ("tensorboard,wandb", ["tensorboard", "wandb"]),
    "progress_every": (0.5, 0.5),
    "checkpoint_every": (50, 50),
    "val_every": (20, 20),
    "patience": (2, 2),
    "inputs": (["input_ids"], ["input_ids"]),
    "task": ("classification", "classification"),
    "compile": (True, True),
    "truncate": (False, False),
    "teacher_cache": ("stores/x", "stores/x"),
    "params": (None, None),  # given when the spec is loaded, not to resolve_config
    "strategy": ("ddp", "ddp"),
    "shard_units": (["layers.*"], ["layers.*"]),
    "replicated": ([], []),
    "offloaded": (["teacher"], ["teacher"]),
    "collective_timeout": (30.0, 30.0),
}


def _spec_with_every_setting() -> kdsl.Spec:
    lines = [f"  {name} = {text}" for name, (text, _) in SPEC_VALUES.items() if text and name != "data"]
    data = 'dataset("kdsl.data:digits", val_fraction=0.3, batch_size=24, drop_last=true)'
    return kdsl.loads(PLAIN + "train {\n" + f"  data = {data}\n" + "\n".join(lines) + "\n}\n", "every.kd")


def test_the_tables_cover_every_setting():
    """Every setting is somewhere it can be set, and the tests below cover each one."""
    assert set(SPEC_VALUES) == set(GIVEN_VALUES) == set(BY_NAME)
    for s in SETTINGS:
        assert s.spec or s.flag or s.data_option, s.name
    assert [f.name for f in TrainConfig.__dataclass_fields__.values()] == [s.name for s in SETTINGS] + ["sources"]


def test_provenance_default_for_every_setting():
    cfg = resolve_config(kdsl.loads(PLAIN, "/some/dir/plain.kd"), {})
    assert cfg.sources == {s.name: "default" for s in SETTINGS}
    for s in SETTINGS:
        if s.name != "out":
            assert getattr(cfg, s.name) == s.default, s.name
    assert cfg.out == "runs/plain"  # the default of out is derived from the spec's name


def test_provenance_spec_for_every_setting_the_spec_may_set():
    cfg = resolve_config(_spec_with_every_setting(), {})
    for name, (_, value) in SPEC_VALUES.items():
        if name in SPEC_SETTINGS or name in DATA_OPTIONS:
            assert getattr(cfg, name) == value, name
            assert cfg.sources[name] == "spec", name
    assert cfg.sources["lr"] == "default"  # lr is not a train-block setting


def test_provenance_flag_for_every_setting():
    given = {name: value for name, (value, _) in GIVEN_VALUES.items()}
    cfg = resolve_config(_spec_with_every_setting(), given)
    for name, (_, value) in GIVEN_VALUES.items():
        if name == "params":  # the spec's record: tests/language/test_given_params.py
            continue
        assert getattr(cfg, name) == value, name
        assert cfg.sources[name] == "flag", name


def test_data_options_given_with_data_are_flags():
    """--data 'kdsl.data:digits(batch_size=16)' over a spec that sets batch_size: the value and its
    source both come from the flag (they once said "spec")."""
    cfg = resolve_config(kdsl.loads(SPEC, "s.kd"), {"data": "kdsl.data:digits(val_fraction=0.1, batch_size=16)"})
    assert cfg.data == ("kdsl.data:digits", {"val_fraction": 0.1}) and cfg.batch_size == 16
    assert cfg.sources["data"] == cfg.sources["batch_size"] == "flag"
    assert cfg.sources["num_workers"] == cfg.sources["drop_last"] == "default"
    assert cfg.sources["epochs"] == "spec"


def test_the_spec_overrides_defaults():
    cfg = resolve_config(kdsl.loads(SPEC, "s.kd"), {})
    assert cfg.data == ("kdsl.data:digits", {"val_fraction": 0.25})  # loader options taken out
    assert cfg.batch_size == 32 and cfg.epochs == 7 and cfg.seed == 3 and cfg.threads == 2
    assert cfg.optimizer == ("sgd", {"lr": 0.2, "momentum": 0.5})
    assert cfg.lr_schedule == ("step", {"milestones": [3], "gamma": 0.5})
    assert cfg.sources["epochs"] == cfg.sources["batch_size"] == cfg.sources["threads"] == "spec"
    assert cfg.describe()["sources"]["lr"] == "default"


def test_flags_override_the_spec():
    given = dict(data="kdsl.data:digits(val_fraction=0.1, batch_size=16)", epochs=2, seed=9, lr=0.01,
                 optimizer="adam(lr=0.5)", threads=1, out="elsewhere")
    cfg = resolve_config(kdsl.loads(SPEC, "s.kd"), given)
    assert cfg.data == ("kdsl.data:digits", {"val_fraction": 0.1}) and cfg.batch_size == 16
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.threads, cfg.out) == (2, 9, 0.01, 1, "elsewhere")
    assert cfg.optimizer == ("adam", {"lr": 0.5}) and cfg.sources["optimizer"] == "flag"
    assert cfg.sources["lr"] == cfg.sources["threads"] == "flag"


@pytest.mark.parametrize("given, text", [
    ({"threads": 0}, "--threads must be at least 1, got 0"),
    ({"epochs": 0}, "--epochs must be at least 1, got 0"),
    ({"lr": float("nan")}, "--lr must be a finite number"),
    ({"lr": -0.5}, "--lr must be a positive number, got -0.5"),
    ({"lr": 1e308}, "--lr must be at most 1000000, got 1e+308"),  # issue #26.12: torch overflowed
    ({"grad_clip": -1.0}, "grad_clip must be a positive number, got -1.0"),  # #26.13: reversed the step
    ({"grad_clip": 0.0}, "grad_clip must be a positive number, got 0.0"),  # #26.13: stopped learning
    ({"progress_every": float("inf")}, "--progress-every must be a finite number"),
    ({"epochs": "3"}, '--epochs must be int, got "3"'),  # printed as the language writes it
    ({"device": "tpu"}, "--device must be \"cpu\" | \"cuda\" | \"auto\""),
    ({"data": "kdsl.data:digits(batch_size=0)"}, "--data option 'batch_size' must be at least 1"),
    ({"optimizer": "adam(lr='x')"}, "cannot read"),
    ({"optimizer": "sgdd()"}, "did you mean 'sgd'?"),
    ({"optimizer": 'sgd(lr="fast")'}, "must be float"),
    ({"lr_schedule": "cosin()"}, "did you mean 'cosine'?"),
    ({"epoch": 3}, "unknown training setting 'epoch'"),
])
def test_bad_values(given, text):
    with pytest.raises(kdsl.KdslError) as info:
        resolve_config(kdsl.loads(SPEC, "s.kd"), given)
    assert info.value.diagnostics[0].code == "KD701"
    assert text in str(info.value)


def test_the_verifier_checks_data_options_from_the_table():
    bad = PLAIN + 'train {\n  data = dataset("kdsl.data:digits", batch_size=0, drop_last=1)\n}\n'
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.loads(bad, "bad.kd")
    messages = [d.message for d in info.value.diagnostics]
    assert "'batch_size' must be at least 1" in messages and "'drop_last' must be bool" in messages


def test_train_flags_come_from_the_table():
    """`kdsl train --help` lists one flag per flag setting, with the table's help text."""
    from typer.testing import CliRunner

    from kdsl.cli.app import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"NO_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the help wraps each flag's text beside it
    for s in FLAG_SETTINGS:
        assert s.flag in text, s.flag
        assert s.help.split(" (")[0].split(":")[0] in text, s.help


def test_threads_setting_reaches_torch(tmp_path):
    """kdsl.train sets torch's threads before anything else can fail (here: no data)."""
    before = torch.get_num_threads()
    spec = kdsl.loads(PLAIN + "train {\n  threads = 1\n}\n", "s.kd")
    torch.set_num_threads(2)
    try:
        with pytest.raises(kdsl.KdslError) as info:
            kdsl.train(spec, epochs=1, out=str(tmp_path / "r"))
        assert info.value.diagnostics[0].code == "KD702" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
