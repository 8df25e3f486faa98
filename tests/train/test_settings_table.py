"""The settings table drives every list of settings (issue #19.4): the config's fields, what a
resumption must keep, what environment.json records, what a teacher store's fingerprint reads,
and the rebuild command it prints; values are printed as the language writes them."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

import kdsl
from kdsl.catalog.settings import BY_NAME, FINGERPRINTED, RECORDED, RUN_SETTINGS, SETTINGS
from kdsl.core.diagnostics import KdslError
from kdsl.training import teacher_store_build
from kdsl.training.config import TrainConfig, flag_words, resolve_config
from kdsl.training.environment import session
from kdsl.training.teacher_store import rebuild_command
from train_helpers import KD_SPEC


def test_the_config_has_one_statically_typed_field_per_setting_in_the_tables_order():
    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields] == [s.name for s in SETTINGS] + ["sources"]
    hints = typing.get_type_hints(TrainConfig)
    assert all(hints[f.name] is not typing.Any for f in fields)  # not make_dataclass's Any
    cfg = TrainConfig()
    assert all(getattr(cfg, s.name) == s.default for s in SETTINGS)  # the defaults are the table's
    cfg.optimizer[1]["lr"] = 9.0
    assert TrainConfig().optimizer == ("sgd", {})  # each config its own copy of the default


def test_what_a_resumption_keeps_is_every_setting_that_is_not_resumable():
    assert set(RUN_SETTINGS) == {s.name for s in SETTINGS if not s.resumable}
    assert {"epochs", "data", "optimizer", "lr", "seed", "task", "best_metric"} <= set(RUN_SETTINGS)
    assert not {"threads", "device", "tensorboard", "out", "progress_every"} & set(RUN_SETTINGS)


def test_environment_json_records_the_tables_recorded_settings():
    cfg = resolve_config(kdsl.load(KD_SPEC), {"threads": 1})
    facts = session(cfg, torch.device("cpu"), False, KD_SPEC)
    assert list(facts["settings"]) == list(RECORDED)


def test_the_store_fingerprint_reads_exactly_the_fingerprinted_settings(tmp_path, monkeypatch):
    """Run the fingerprint of a real store build with a config that notes what is read (augmented
    data: the seed counts only where samples differ per epoch)."""
    read = set()

    class Noting:
        def __init__(self, cfg):
            self._cfg = cfg

        def __getattr__(self, name):
            read.add(name)
            return getattr(self._cfg, name)

    original = teacher_store_build.fingerprint
    monkeypatch.setattr(teacher_store_build, "fingerprint",
                        lambda spec, cfg, *rest: original(spec, Noting(cfg), *rest))
    before = torch.get_num_threads()
    try:
        with pytest.raises(KdslError) as info:  # refused by size after the fingerprint: nothing written
            teacher_store_build.build_store(KD_SPEC, out=str(tmp_path / "s"), threads=1, max_size=1,
                                            data="store_data:flipped_digits", epochs=1)
    finally:
        torch.set_num_threads(before)
    assert info.value.diagnostics[0].code == "KD715"
    assert read == set(FINGERPRINTED)


def test_the_rebuild_command_repeats_the_runs_teacher_cache_flags_as_the_language_writes_them():
    spec = kdsl.load(KD_SPEC)
    cfg = resolve_config(spec, {"data": 'kdsl.data:digits(val_fraction=0.25, batch_size=32)', "seed": 3,
                                "amp": "bf16", "lr": 0.5, "tensorboard": True})
    text = rebuild_command(KD_SPEC, "S", cfg)
    assert "--data 'kdsl.data:digits(val_fraction=0.25)' --batch-size 32 --seed 3 --amp bf16" in text
    assert "--lr" not in text and "tensorboard" not in text  # not teacher-cache's flags


@pytest.mark.parametrize("name, value, words", [
    ("optimizer", ("sgd", {"lr": 0.05, "nesterov": True}), ["--optimizer", "sgd(lr=0.05, nesterov=true)"]),
    ("data", ("kdsl.data:text", {"path": 'a "b"'}), ["--data", 'kdsl.data:text(path="a \\"b\\"")']),
    ("best_metric", "val_loss", ["--best-metric", "val_loss"]),
    ("tensorboard", False, ["--no-tensorboard"]),
    ("lr", None, []),  # no flag value means none: the flag is left out
    ("grad_clip", 1.0, []),  # no flag at all
])
def test_flag_words_paste_back(name, value, words):
    assert flag_words(BY_NAME[name], value) == words


def test_batch_size_is_defaulted_once_and_handed_to_the_compiler(tmp_path, monkeypatch):
    """The Distiller had a default of its own (64) that kdsl.train overwrote after compiling; now
    the table defaults it and the run's resolved value goes to the compiler."""
    import dataclasses

    from kdsl.compiler import compiler
    from kdsl.runtime.compiled import Compiled

    # the runtime's hand-off has no batch size of its own: the compiler always gives one
    assert {f.name: f for f in dataclasses.fields(Compiled)}["batch_size"].default is dataclasses.MISSING
    seen = []
    original = compiler.compile

    def spy(*args, **kwargs):
        distiller = original(*args, **kwargs)
        seen.append((kwargs.get("batch_size"), distiller.batch_size))
        return distiller

    monkeypatch.setattr(compiler, "compile", spy)
    before = torch.get_num_threads()
    try:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), batch_size=16, epochs=1, steps_per_epoch=1, threads=1,
                   eval_teachers=False)
    finally:
        torch.set_num_threads(before)
    assert seen == [(16, 16)]


def test_every_numeric_setting_has_a_range():
    """Issue #26.13's audit: grad_clip = -1 was accepted (and reversed the gradient); every number
    a run takes now has a lower bound, and none may be infinite or NaN."""
    numeric = [s for s in SETTINGS if s.type is not None and s.type.name in ("int", "float")]
    assert {s.name for s in numeric} >= {"epochs", "batch_size", "lr", "grad_clip", "threads", "progress_every"}
    for s in numeric:
        assert s.minimum is not None or s.positive, s.name
        assert s.range_problem(float("inf")) and s.range_problem(float("nan")), s.name


def test_a_spec_grad_clip_out_of_range_is_located():
    bad = ('student = model("kdsl.zoo:digits_cnn")\nrecord s = output of student\n'
           'loss ce = cross_entropy(s, batch.target)\ntrain {\n  grad_clip = 0\n}\n')
    with pytest.raises(KdslError) as info:
        kdsl.loads(bad, "clip.kd")
    diag = info.value.diagnostics[0]
    assert diag.message == "'grad_clip' must be a positive number" and diag.span.line == 5
