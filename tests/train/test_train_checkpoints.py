"""`kdsl.io.weights.load_into`: the checkpoint layouts people actually have, always weights_only."""

from __future__ import annotations

import sys
from collections import OrderedDict

import pytest
import torch

import kdsl.zoo
from kdsl.core.diagnostics import KdslError
from kdsl.io.weights import load_into, read_state_dict
from train_helpers import student_weights


def _source():
    torch.manual_seed(11)
    model = kdsl.zoo.digits_cnn()
    with torch.no_grad():  # make the buffers distinctive too
        model.bn1.running_mean.uniform_()
        model.bn1.num_batches_tracked.fill_(42)
    return model


def _assert_loaded(target, source):
    for (k, a), (k2, b) in zip(target.state_dict().items(), source.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def _code(info) -> str:
    return info.value.diagnostics[0].code


def _text(info) -> str:
    d = info.value.diagnostics[0]
    return " ".join([d.message, *d.hints])


@pytest.mark.parametrize("layout", ["plain", "ordered", "state_dict", "model", "student",
                                    "model_state_dict", "nested", "module_prefix", "wrapped_prefix"])
def test_accepted_layouts(tmp_path, layout):
    source = _source()
    sd = source.state_dict()
    obj = {
        "plain": dict(sd),
        "ordered": OrderedDict(sd),
        "state_dict": {"state_dict": sd, "epoch": 3, "best_acc": 91.5},
        "model": {"model": sd, "optimizer": {"lr": 0.1}},
        "student": {"student": sd},
        "model_state_dict": {"model_state_dict": sd, "epoch": 1},
        "nested": {"state_dict": {"model": sd}},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},  # DistributedDataParallel
        "wrapped_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    target = kdsl.zoo.digits_cnn()
    load_into(target, str(path))
    _assert_loaded(target, source)


def test_kdsl_run_checkpoint_gives_the_student(kd_run):
    """checkpoint.pt of `kdsl train` holds optimizer, RNG and the distiller; load_into takes the
    trained student out of it (the same weights as student.pt)."""
    target = kdsl.zoo.digits_cnn()
    load_into(target, str(kd_run / "checkpoint.pt"), what="student")
    expected = student_weights(kd_run)
    for k, v in target.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_kdsl_run_checkpoint_into_the_wrong_model_is_clear(kd_run):
    with pytest.raises(KdslError) as info:
        load_into(kdsl.zoo.digits_teacher(), str(kd_run / "checkpoint.pt"), what="teacher 'teacher'")
    assert _code(info) == "KD509"
    assert "does not fit the teacher 'teacher'" in _text(info) and "shape mismatches" in _text(info)


def test_kdsl_run_checkpoint_with_several_trained_models_is_refused(tmp_path):
    sd = _source().state_dict()
    state = {"format": "kdsl-run/1", "distiller": {**{f"models.student.{k}": v for k, v in sd.items()},
                                                   **{f"models.peer.{k}": v for k, v in sd.items()}}}
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(KdslError) as info:
        read_state_dict(str(tmp_path / "checkpoint.pt"))
    assert _code(info) == "KD509"
    assert "kdsl run checkpoint holding 2 trained models (student, peer)" in _text(info)
    assert "student.pt" in _text(info)


def test_wrong_keys_are_listed(tmp_path):
    sd = _source().state_dict()
    sd["head.weight"] = sd.pop("fc.weight")
    del sd["bn1.running_var"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(KdslError) as info:
        load_into(kdsl.zoo.digits_cnn(), str(tmp_path / "bad.pt"), what="student")
    text = _text(info)
    assert _code(info) == "KD509" and "does not fit the student" in text
    assert "missing keys: bn1.running_var, fc.weight" in text and "unexpected keys: head.weight" in text


def test_failed_load_leaves_the_model_untouched(tmp_path):
    sd = _source().state_dict()
    sd.pop("fc.bias")
    torch.save(sd, tmp_path / "bad.pt")
    target = kdsl.zoo.digits_cnn()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(KdslError):
        load_into(target, str(tmp_path / "bad.pt"))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


@pytest.mark.parametrize("what", ["object", "module", "garbage"])
def test_non_state_dicts_are_refused_by_weights_only(tmp_path, what):
    path = tmp_path / f"{what}.pt"
    if what == "object":
        torch.save({"fc.weight": _Pickled()}, path)
    elif what == "module":
        torch.save(kdsl.zoo.digits_cnn(), path)  # a whole pickled model: code, not weights
    else:
        path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(KdslError) as info:
        load_into(kdsl.zoo.digits_cnn(), str(path))
    text = _text(info)
    assert _code(info) == "KD509" and "cannot read checkpoint" in text and "weights_only" in text
    assert "\x1b" not in text and "\n" not in info.value.diagnostics[0].message
    if what == "module":
        assert "DigitsCNN" in text


class _Pickled:
    pass


def test_no_state_dict_inside(tmp_path):
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "meta.pt")
    with pytest.raises(KdslError) as info:
        read_state_dict(str(tmp_path / "meta.pt"))
    assert _code(info) == "KD509" and "holds no state dict (top-level keys: epoch, acc)" in _text(info)
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(KdslError) as info:
        read_state_dict(str(tmp_path / "list.pt"))
    assert "holds a list, not a state dict" in _text(info)


def test_missing_file(tmp_path):
    with pytest.raises(KdslError) as info:
        read_state_dict(str(tmp_path / "nope.pt"))
    assert _code(info) == "KD509" and "checkpoint not found" in _text(info)


def test_safetensors(tmp_path):
    pytest.importorskip("safetensors", reason="safetensors is not installed here (an optional extra)")
    from safetensors.torch import save_file

    source = _source()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    target = kdsl.zoo.digits_cnn()
    load_into(target, str(tmp_path / "w.safetensors"))
    _assert_loaded(target, source)


def test_safetensors_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails, installed or not
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(KdslError) as info:
        read_state_dict(str(path))
    assert _code(info) == "KD509" and "safetensors is not installed" in _text(info)
    assert "pip install safetensors" in _text(info)
