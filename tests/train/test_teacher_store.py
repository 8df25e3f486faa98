"""The teacher-output store: bit-exact training from a float32 store, the compressed forms'
tolerances, the fingerprint refusing every kind of stale store, damaged stores, per-sample
augmentation seeds."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.training.teacher_store import TeacherStore
from kdsl.training.teacher_store_build import build_store
from kdsl.training.teacher_store_format import compress_topk, expand_topk, topk_error, uniform_rest
from train_helpers import KD_SPEC, ROOT, TEACHER_PT

import store_data

FLIPPED = "store_data:flipped_digits"


def _history(result):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in result.history]


def _train(tmp_path: Path, name: str, **settings):
    """A short run (6 steps an epoch: the store covers every sample, whichever the steps take)."""
    settings.setdefault("steps_per_epoch", 6)
    return kdsl.train(settings.pop("spec", KD_SPEC), out=str(tmp_path / name), threads=1, eval_teachers=False,
                      **settings)


def _refusal(tmp_path: Path, code: str, **settings) -> str:
    with pytest.raises(KdslError) as info:
        _train(tmp_path, "refused", **settings)
    diag = info.value.diagnostics[0]
    assert diag.code == code, diag.message
    return diag.message + " | " + " ".join(diag.hints)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "kd"
    build_store(KD_SPEC, out=str(out), threads=1, seed=7)
    return out


@pytest.fixture(scope="module")
def flipped_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "flipped"
    build_store(KD_SPEC, out=str(out), threads=1, seed=3, epochs=2, data=FLIPPED)
    return out


# ---------------------------------------------------------------------------------- exactness
def test_float32_store_trains_bit_exactly(tmp_path, store):
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["epochs"] == 1 and not manifest["epoch_dependent"]  # digits: no randomness
    assert manifest["fingerprint"]["seed"] is None
    assert os.path.getsize(store / "t_logits.bin") == 1438 * 10 * 4
    plain = _train(tmp_path, "plain", epochs=2, seed=7)
    cached = _train(tmp_path, "cached", epochs=2, seed=7, teacher_cache=str(store))
    assert _history(plain) == _history(cached)
    # an epoch-independent store serves any seed: the teachers' outputs do not depend on it
    assert _train(tmp_path, "seed2", epochs=1, seed=2, teacher_cache=str(store)).history


def test_augmented_store_replays_the_augmentations(tmp_path, flipped_store):
    manifest = json.loads((flipped_store / "manifest.json").read_text())
    assert manifest["epochs"] == 2 and manifest["epoch_dependent"] and manifest["fingerprint"]["seed"] == 3
    values = torch.from_file(str(flipped_store / "t_logits.bin"), size=2 * 1438 * 10).view(2, 1438, 10)
    assert not torch.equal(values[0], values[1])  # each epoch flips other images
    plain = _train(tmp_path, "plain", epochs=2, seed=3, data=FLIPPED)
    cached = _train(tmp_path, "cached", epochs=2, seed=3, data=FLIPPED, teacher_cache=str(flipped_store))
    assert _history(plain) == _history(cached)


def test_compressed_forms_within_stated_tolerance(tmp_path, store):
    half = tmp_path / "half"
    top = tmp_path / "top3"
    build_store(KD_SPEC, out=str(half), threads=1, dtype="float16")
    build_store(KD_SPEC, out=str(top), threads=1, topk=3)
    assert os.path.getsize(half / "t_logits.bin") == 1438 * 10 * 2
    # top-3 of 10: 3 float32 values, 3 int16 classes and 1 float32 log tail mass per sample
    assert sum(os.path.getsize(top / f"t_logits.{p}.bin") for p in ("values", "indices", "tail")) == 1438 * 22
    full = _train(tmp_path, "full", epochs=1, seed=7, teacher_cache=str(store)).history[0]
    f16 = _train(tmp_path, "f16", epochs=1, seed=7, teacher_cache=str(half)).history[0]
    assert abs(f16["train/kd"] - full["train/kd"]) <= 1e-4 * abs(full["train/kd"])  # the README's float16 bound
    # top-3: the served logits keep the teacher's 3 largest exactly; at the spec's tau = 4 the
    # reconstructed distribution is within KL 0.03 of the teacher's (measured 0.025 on digits)
    exact, approx = TeacherStore(str(store)), TeacherStore(str(top))
    index = torch.arange(0, 1438, 7)
    z = exact.values("teacher", 0, index, torch.device("cpu"))["t_logits"]
    r = approx.values("teacher", 0, index, torch.device("cpu"))["t_logits"]
    top3 = z.topk(3, -1).indices
    assert torch.equal(r.gather(-1, top3), z.gather(-1, top3))
    p, q = (z.double() / 4).log_softmax(-1), (r.double() / 4).log_softmax(-1)
    assert float((p.exp() * (p - q)).sum(-1).mean()) <= 0.03
    assert _train(tmp_path, "k3", epochs=1, seed=7, teacher_cache=str(top)).history[0]["train/kd"] > 0


def test_topk_reconstruction_keeps_top_logits_and_tail_mass():
    torch.manual_seed(0)
    z = torch.randn(5, 7, 50, dtype=torch.float64) * 3
    values, indices, tail = compress_topk(z, 8)
    p = z.softmax(-1)
    top = z.topk(8, -1).indices
    tail_p = 1 - p.gather(-1, top).sum(-1)
    assert torch.allclose(tail.double().exp(), tail_p, rtol=1e-6)  # the tail's mass, as a log
    full = expand_topk(values, indices, uniform_rest(values, tail, 50), 50, dtype=torch.float64)
    q = full.softmax(-1)
    assert torch.allclose(q.gather(-1, top), p.gather(-1, top), atol=1e-6)  # float32 storage of the logits
    others = q.scatter(-1, top, 0.0)
    assert torch.allclose(others.sum(-1), tail_p, atol=1e-6)
    assert torch.allclose(others.max(-1).values, tail_p / 42, atol=1e-6)  # spread uniformly over 42 classes
    assert topk_error(z, 49)["kl"] < 1e-5 < topk_error(z, 2)["kl"]
    with pytest.raises(ValueError):
        compress_topk(z, 50)


# ---------------------------------------------------------------------------------- the fingerprint
def test_changed_teacher_weights_refuse(tmp_path, store):
    state = torch.load(TEACHER_PT, map_location="cpu", weights_only=True)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key] + 1e-3
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "r"), teacher_ckpt=str(tmp_path / "other.pt"), threads=1,
                   epochs=1, teacher_cache=str(store))
    d = info.value.diagnostics[0]
    assert d.code == "KD711" and "teacher 'teacher': its weights differ" in d.message
    assert "kdsl teacher-cache" in d.hints[0] and f"--out {store}" in d.hints[0]


def test_changed_records_refuse(tmp_path, store):
    spec = Path(KD_SPEC).read_text().replace('from "teacher.pt"', f'from "{TEACHER_PT}"')
    changed = tmp_path / "kd_fc_input.kd"
    changed.write_text(spec.replace("record t_logits = output of teacher",
                                    "record t_logits = output of teacher.fc"))
    text = _refusal(tmp_path, "KD711", spec=str(changed), epochs=1, teacher_cache=str(store))
    assert "records: record 't_logits' is `output of teacher` in the store, `output of teacher.fc` in this spec" in text


def test_changed_data_refuses(tmp_path, store):
    text = _refusal(tmp_path, "KD711", epochs=1, data="kdsl.data:digits(val_fraction=0.3)", teacher_cache=str(store))
    assert "data: the store was built on kdsl.data:digits(), this run reads kdsl.data:digits(val_fraction=0.3)" in text


def test_changed_data_content_refuses(tmp_path, flipped_store, monkeypatch):
    monkeypatch.setattr(store_data, "CHANGED", True)
    text = _refusal(tmp_path, "KD711", epochs=2, seed=3, data=FLIPPED, teacher_cache=str(flipped_store))
    assert "data: the training samples' content differs" in text


def test_changed_seed_refuses_augmented_store(tmp_path, flipped_store):
    text = _refusal(tmp_path, "KD711", epochs=2, seed=4, data=FLIPPED, teacher_cache=str(flipped_store))
    assert "seed: the store was built with seed 3, this run's is 4" in text
    assert "--seed 4" in text  # the rebuild command


def test_changed_augmentation_refuses(tmp_path, flipped_store, monkeypatch):
    monkeypatch.setattr(store_data, "AUGMENT", False)
    text = _refusal(tmp_path, "KD711", epochs=2, seed=3, data=FLIPPED, teacher_cache=str(flipped_store))
    assert "augmentation: the store's samples differ per epoch (augmented) and this run's do not" in text


def test_longer_run_than_augmented_store_refuses(tmp_path, flipped_store):
    text = _refusal(tmp_path, "KD716", epochs=3, seed=3, data=FLIPPED, teacher_cache=str(flipped_store))
    assert "holds 2 epoch(s) of augmented data; this run trains 3" in text and "--epochs 3" in text


def test_unseeded_randomness_is_refused(tmp_path):
    with pytest.raises(KdslError) as info:
        build_store(KD_SPEC, out=str(tmp_path / "s"), threads=1, data=FLIPPED + "(python_random=true)")
    assert info.value.diagnostics[0].code == "KD718"
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------- what cannot be stored
def test_generator_spec_cannot_use_a_store(tmp_path):
    with pytest.raises(KdslError) as info:
        build_store(str(ROOT / "specs" / "digits" / "dafl.kd"), out=str(tmp_path / "s"), threads=1)
    d = info.value.diagnostics[0]
    assert d.code == "KD712" and "generated" in d.message


def test_topk_needs_a_logit_record(tmp_path):
    with pytest.raises(KdslError) as info:
        build_store(str(ROOT / "specs" / "digits" / "fitnets.kd"), out=str(tmp_path / "s"), threads=1, topk=3)
    d = info.value.diagnostics[0]
    assert d.code == "KD714" and "'t_feat' [64, 4, 4]" in d.message
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------- damaged stores
@pytest.mark.parametrize("damage", ["no_manifest", "bad_manifest", "truncated"])
def test_damaged_store_refuses(tmp_path, store, damage):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    if damage == "no_manifest":
        (copy / "manifest.json").unlink()
        expected = "its writing did not finish"
    elif damage == "bad_manifest":
        (copy / "manifest.json").write_bytes(b"{\"format\": \"kdsl-teacher-store\", \x00")
        expected = "is damaged"
    else:
        with open(copy / "t_logits.bin", "r+b") as fh:
            fh.truncate(1000)
        expected = "holds 1000 bytes; the manifest says 57520"
    text = _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(copy))
    assert expected in text


def test_per_sample_seed_depends_on_seed_epoch_and_index():
    from kdsl.training.data import sample_seed

    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450 and all(0 <= s < 2 ** 63 for s in seeds)
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    assert math.isfinite(float(sample_seed(2 ** 32 - 1, 10 ** 6, 10 ** 9)))


def test_interrupted_rebuild_keeps_the_previous_store(tmp_path, store, monkeypatch):
    import shutil

    from kdsl.training import teacher_store_build

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    before = sorted(os.listdir(copy))
    calls = []

    def killed(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would stop it, in the middle of the epoch

    monkeypatch.setattr(teacher_store_build, "_put", killed)
    with pytest.raises(KeyboardInterrupt):
        build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        build_store(KD_SPEC, out=str(tmp_path / "fresh"), threads=1)
    # the rebuild was written beside the store and removed when it stopped: the old store is whole
    assert sorted(os.listdir(tmp_path)) == ["copy"] and sorted(os.listdir(copy)) == before
    assert _train(tmp_path, "run", epochs=1, teacher_cache=str(copy)).history
