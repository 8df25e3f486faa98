"""The teacher store never serves wrong values: altered contents (checked per chunk), a rebuild
while a run reads the store, data changed beyond any sample checked up front, a teacher changed by
`init`, hand-edited manifests, directories kdsl did not write; and the refusals and acceptances an
adversarial trial confirmed (symbolic link to /dev/zero, FIFO, precision, batch size, drop_last)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.training import teacher_store_format
from kdsl.training.report import Reporter
from kdsl.training.teacher_store import CHECKED_AT_OPEN, TeacherStore, _spaced
from kdsl.training.teacher_store_build import build_store
from train_helpers import KD_SPEC, TEACHER_PT

import store_data

FLIPPED = "store_data:flipped_digits"
ROWS = 1438  # digits' training samples


def _history(result):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in result.history]


def _train(tmp_path: Path, name: str, **settings):
    settings.setdefault("steps_per_epoch", 6)
    return kdsl.train(settings.pop("spec", KD_SPEC), out=str(tmp_path / name), threads=1, eval_teachers=False,
                      **settings)


def _diagnostic(call, code: str):
    with pytest.raises(KdslError) as info:
        call()
    diag = info.value.diagnostics[0]
    assert diag.code == code, diag.message
    return diag


def _refusal(tmp_path: Path, code: str, **settings) -> str:
    diag = _diagnostic(lambda: _train(tmp_path, "refused", **settings), code)
    return diag.message + " | " + " ".join(diag.hints)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("integrity") / "kd"
    build_store(KD_SPEC, out=str(out), threads=1, seed=7)
    return out


@pytest.fixture()
def copy(tmp_path, store) -> Path:
    shutil.copytree(store, tmp_path / "copy")
    return tmp_path / "copy"


def _other_teacher(tmp_path: Path) -> str:
    state = torch.load(TEACHER_PT, map_location="cpu", weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0
    torch.save(state, tmp_path / "other.pt")
    return str(tmp_path / "other.pt")


# ---------------------------------------------------------------------------------- contents (#26.1)
def _flip_bytes(logits: np.ndarray, path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[100:104] = bytes(255 - b for b in raw[100:104])
    path.write_bytes(bytes(raw))


ALTERATIONS = {
    "flip 4 bytes at offset 100": _flip_bytes,
    "negate": lambda logits, path: (-logits).tofile(path),
    "permute rows": lambda logits, path: logits[np.random.default_rng(0).permutation(ROWS)].tofile(path),
}


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
def test_altered_contents_are_refused_with_the_part_named(tmp_path, copy, alteration):
    path = copy / "t_logits.bin"
    ALTERATIONS[alteration](np.fromfile(path, dtype=np.float32).reshape(ROWS, 10), path)
    text = _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(copy))
    assert f"{path} was altered after it was written: chunk 1 of 1 (rows 0..1437, epoch 1)" in text


def test_a_read_verifies_only_the_chunks_it_touches(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_store_format, "CHUNK_BYTES", 400)  # 10 rows of 10 float32 logits
    out = tmp_path / "small_chunks"
    build_store(KD_SPEC, out=str(out), threads=1)
    with open(out / "t_logits.bin", "r+b") as fh:  # row 705, in chunk 71 of 144
        fh.seek(705 * 40)
        fh.write(b"\x00\x00\x80\x7f")
    reader = TeacherStore(str(out))
    logits = reader.arrays["t_logits"]["values"]
    reader.values("teacher", 0, torch.arange(3, 9), torch.device("cpu"))
    assert int(logits.verified.sum()) == 1 and len(logits.verified) == 144
    reader.values("teacher", 0, torch.tensor([0, 1000, 1437]), torch.device("cpu"))
    assert int(logits.verified.sum()) == 3  # each chunk is hashed once, when first read
    diag = _diagnostic(lambda: reader.values("teacher", 0, torch.tensor([701]), torch.device("cpu")), "KD710")
    assert "chunk 71 of 144 (rows 700..709, epoch 1) does not match the manifest's sha256" in diag.message


def test_a_file_written_in_place_during_a_run_is_refused(copy):
    reader = TeacherStore(str(copy))
    first = reader.values("teacher", 0, torch.arange(5), torch.device("cpu"))["t_logits"]
    with open(copy / "t_logits.bin", "r+b") as fh:
        fh.write(np.zeros(10, dtype=np.float32).tobytes())
    stamp = os.stat(copy / "t_logits.bin").st_mtime_ns
    os.utime(copy / "t_logits.bin", ns=(stamp + 10 ** 9, stamp + 10 ** 9))
    diag = _diagnostic(lambda: reader.values("teacher", 0, torch.arange(5), torch.device("cpu")), "KD710")
    assert "was changed while this run read it" in diag.message
    assert torch.isfinite(first).all()


# ---------------------------------------------------------------------------------- rebuilds (#26.2)
class _RebuildAfterFirstEpoch(Reporter):
    def __init__(self, **build) -> None:
        super().__init__()
        self.build = build

    def epoch_end(self, row, total_epochs) -> None:
        if row["epoch"] == 1:
            build_store(KD_SPEC, threads=1, overwrite=True, **self.build)


def test_a_rebuild_during_a_run_leaves_the_run_on_its_store(tmp_path, copy):
    undisturbed = _train(tmp_path, "undisturbed", epochs=2, seed=7, teacher_cache=str(copy))
    rebuild = _RebuildAfterFirstEpoch(out=str(copy), teacher_ckpt=_other_teacher(tmp_path))
    during = _train(tmp_path, "during", epochs=2, seed=7, teacher_cache=str(copy), reporter=rebuild)
    assert _history(during) == _history(undisturbed)
    # the new store is in place, whole, and holds the other teacher
    assert not [n for n in os.listdir(tmp_path) if "kdsl-" in n]
    text = _refusal(tmp_path, "KD711", epochs=1, teacher_cache=str(copy))
    assert "teacher 'teacher': its weights differ" in text


def test_a_reader_keeps_the_store_it_opened(tmp_path, copy):
    before = TeacherStore(str(copy))
    index = torch.arange(0, ROWS, 3)
    old = before.values("teacher", 0, index[:10], torch.device("cpu"))["t_logits"]
    build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True, teacher_ckpt=_other_teacher(tmp_path))
    kept = before.values("teacher", 0, index, torch.device("cpu"))["t_logits"]
    new = TeacherStore(str(copy)).values("teacher", 0, index, torch.device("cpu"))["t_logits"]
    assert torch.equal(kept[:10], old) and torch.allclose(new, kept + 1.0, atol=1e-4)


def test_a_reader_opening_during_a_swap_refuses_rather_than_mixing_stores(tmp_path, copy, monkeypatch):
    other = _other_teacher(tmp_path)
    parse = teacher_store_format.parse_manifest

    def parse_then_rebuild(path, raw):  # the old manifest is read; the swap happens before the files are
        manifest = parse(path, raw)
        monkeypatch.setattr(teacher_store_format, "parse_manifest", parse)
        build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True, teacher_ckpt=other)
        return manifest

    monkeypatch.setattr(teacher_store_format, "parse_manifest", parse_then_rebuild)
    diag = _diagnostic(lambda: TeacherStore(str(copy)), "KD710")
    assert "lacks t_logits.bin" in diag.message  # the old store's files, never the new one's under the old manifest


# ---------------------------------------------------------------------------------- data (#26.3)
def test_data_changed_beyond_the_samples_checked_up_front_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "flipped"
    build_store(KD_SPEC, out=str(out), threads=1, seed=3, epochs=1, data=FLIPPED)
    assert len(_spaced(ROWS, CHECKED_AT_OPEN)) == 1024  # the 414 others are checked as they are served
    monkeypatch.setattr(store_data, "NOISE_BEYOND", frozenset(_spaced(ROWS, CHECKED_AT_OPEN)))
    text = _refusal(tmp_path, "KD711", epochs=1, seed=3, data=FLIPPED, teacher_cache=str(out))
    assert "data: the training samples' content differs" in text and "(epoch 1)" in text
    assert int(text.split("sample ")[1].split("'")[0]) not in store_data.NOISE_BEYOND


# ---------------------------------------------------------------------------------- init (#26.4)
def test_a_teacher_changed_by_init_cannot_use_a_store(tmp_path, store):
    spec = tmp_path / "init_teacher.kd"
    spec.write_text(
        'student = model("kdsl.zoo:digits_teacher")\n'
        f'teacher = model("kdsl.zoo:digits_teacher") from "{TEACHER_PT}"\n'
        "init teacher.fc from student.fc\n"
        "record s_logits = output of student\nrecord t_logits = output of teacher\n"
        "loss kd = kl_div(s_logits, t_logits, tau=4)\n"
        'train {\n  data = dataset("kdsl.data:digits", batch_size=64)\n  epochs = 1\n'
        "  optimizer = sgd(lr=0.05)\n  seed = 0\n}\n")
    for attempt in (lambda: _train(tmp_path, "run", spec=str(spec), teacher_cache=str(store)),
                    lambda: build_store(str(spec), out=str(tmp_path / "s"), threads=1)):
        diag = _diagnostic(attempt, "KD712")
        assert "`init teacher.fc from student.fc` changes teacher 'teacher'" in diag.message
        assert diag.span is not None and (diag.span.file, diag.span.line) == (str(spec), 3)
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------------------------- manifest (#26.5)
def _edit(manifest: dict, edit: str) -> str:
    if edit == "deep brackets":
        manifest["command"] = "@@"
        return json.dumps(manifest, indent=1, sort_keys=True).replace('"@@"', "[" * 5000 + "]" * 5000)
    if edit == "record dtype int64":
        manifest["records"]["t_logits"]["dtype"] = "int64"
    elif edit == "no teachers":
        del manifest["fingerprint"]["teachers"]
    elif edit == "records a list":
        manifest["records"] = ["t_logits"]
    elif edit == "k on a full record":
        manifest["records"]["t_logits"]["k"] = 3
    elif edit == "epochs a string":
        manifest["epochs"] = "1"
    elif edit == "part in another folder":
        manifest["records"]["t_logits"]["parts"]["values"]["file"] = "../t_logits.bin"
    elif edit == "unknown key":
        manifest["records"]["t_logits"]["scale"] = 2.0
    return json.dumps(manifest, indent=1, sort_keys=True)


EDITS = {  # edit -> (a line the diagnostic points at, words of the message)
    "deep brackets": ('"command": [[[', "nested deeper than 32 levels"),
    "record dtype int64": ('"dtype": "int64"', "records.t_logits.dtype: Input should be"),
    "no teachers": ('"fingerprint": {', "fingerprint.teachers: Field required"),
    "records a list": ('"records": [', "records: Input should be a valid dictionary"),
    "k on a full record": ('"t_logits": {', "records.t_logits: Value error, a full record has"),
    "epochs a string": ('"epochs": "1"', "epochs: Input should be a valid integer"),
    "part in another folder": ('"file": "../t_logits.bin"', "records.t_logits.parts.values.file: String should match"),
    "unknown key": ('"scale": 2.0', "records.t_logits.scale: Extra inputs are not permitted"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_manifest_is_refused_where_it_was_edited(tmp_path, copy, edit):
    manifest = json.loads((copy / "manifest.json").read_text())
    text = _edit(manifest, edit)
    (copy / "manifest.json").write_text(text)
    line, words = EDITS[edit]
    diag = _diagnostic(lambda: _train(tmp_path, "run", epochs=1, teacher_cache=str(copy)), "KD710")
    assert words in diag.message
    assert diag.span is not None and diag.span.file == str(copy / "manifest.json")
    assert line in text.splitlines()[diag.span.line - 1], (diag.span, text.splitlines()[diag.span.line - 1][:80])


# ---------------------------------------------------------------------------------- directories (#26.6, #27.22)
def test_a_folder_with_a_manifest_kdsl_did_not_write_is_not_a_store(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"my": "data"}')
    diag = _diagnostic(lambda: build_store(KD_SPEC, out=str(mine), threads=1, overwrite=True), "KD706")
    assert "not a teacher store (it lacks kdsl's .kdsl-teacher-store marker)" in diag.message
    assert (mine / "manifest.json").read_text() == '{"my": "data"}'
    assert "lacks the .kdsl-teacher-store marker" in _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(mine))


def test_overwrite_replaces_only_what_the_store_wrote(tmp_path, copy):
    (copy / "notes.txt").write_text("mine")
    diag = _diagnostic(lambda: build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True), "KD706")
    assert "holds files the teacher store did not write (notes.txt)" in diag.message
    assert (copy / "notes.txt").read_text() == "mine"
    (copy / "notes.txt").unlink()
    files = sorted(os.listdir(copy))
    build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True)
    assert sorted(os.listdir(copy)) == files and sorted(os.listdir(copy.parent)) == ["copy"]


def test_a_file_added_during_a_rebuild_is_kept(tmp_path, copy, monkeypatch):
    from kdsl.training import teacher_store_build

    put = teacher_store_build._put

    def put_and_add_a_note(*args):
        (copy / "notes.txt").write_text("written while the store was rebuilt")
        put(*args)

    monkeypatch.setattr(teacher_store_build, "_put", put_and_add_a_note)
    diag = _diagnostic(lambda: build_store(KD_SPEC, out=str(copy), threads=1, overwrite=True), "KD706")
    assert "(notes.txt)" in diag.message and (copy / "notes.txt").exists()
    assert sorted(os.listdir(copy.parent)) == ["copy"]  # the rebuild's directory is gone, the store kept
    assert TeacherStore(str(copy)).values("teacher", 0, torch.arange(3), torch.device("cpu"))["t_logits"].shape == (3, 10)


def test_fp16_on_a_cpu_is_refused_before_writing(tmp_path):
    diag = _diagnostic(lambda: build_store(KD_SPEC, out=str(tmp_path / "s"), threads=1, amp="fp16"), "KD705")
    assert "--amp fp16 needs a GPU" in diag.message
    assert not os.listdir(tmp_path)


# ---------------------------------------------------------------------------------- kept (#27.20)
def test_a_link_to_dev_zero_is_refused(tmp_path, copy):
    (copy / "t_logits.bin").unlink()
    os.symlink("/dev/zero", copy / "t_logits.bin")
    assert "t_logits.bin is not a regular file" in _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(copy))


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, copy):
    (copy / "t_logits.bin").unlink()
    os.mkfifo(copy / "t_logits.bin")
    assert "t_logits.bin is not a regular file" in _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(copy))
    (copy / "manifest.json").unlink()
    os.mkfifo(copy / "manifest.json")
    assert "manifest.json is not a regular file" in _refusal(tmp_path, "KD710", epochs=1, teacher_cache=str(copy))


def test_another_precision_is_refused(tmp_path, store):
    text = _refusal(tmp_path, "KD711", epochs=1, amp="bf16", teacher_cache=str(store))
    assert "precision: the store was computed in float32, this run uses bf16" in text


@pytest.mark.parametrize("settings", [{"batch_size": 32}, {"drop_last": True}, {"seed": 11}],
                         ids=["batch size", "drop_last", "seed"])
def test_runs_the_store_fits_are_accepted(tmp_path, store, settings):
    settings["steps_per_epoch"] = None  # whole epochs: the last, short batch too
    plain = _train(tmp_path, "plain", epochs=1, **settings)
    cached = _train(tmp_path, "cached", epochs=1, teacher_cache=str(store), **settings)
    assert _history(plain) == _history(cached)
