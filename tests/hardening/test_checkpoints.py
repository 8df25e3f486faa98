"""Checkpoint files a spec or a flag names (``teacher ... from "x.pt"``, a connector's ``from``,
``--teacher-ckpt``): only regular files of bounded size are opened, nothing in them runs, and every
kind of bad file gets a located KD509 that says what the file is, without quoting it (issue #13,
items 4 and 6: "cannot read checkpoint ...: 101", "EOFError", the dropped "GLOBAL posix.system")."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.io import checkpoint_file
from kdsl.io.weights import load_into, read_state_dict
from tests.conftest import completed_in_process

ROOT = Path(__file__).resolve().parents[2]
DIGITS_TEACHER = ROOT / "specs" / "digits" / "teacher.pt"

SPEC = """student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") from "{path}"
record s = output of student
record t = output of teacher
loss kd = kl_div(s, t)
"""


class _RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(tmp_path: Path):
    """name -> path of each kind of bad checkpoint, made in ``tmp_path``."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    zipped = good.read_bytes()
    legacy = tmp_path / "legacy_full.pt"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    files = {
        "text": b"SECRET_TOKEN=hunter2\nthis is not a checkpoint\n",
        "empty": b"",
        "truncated_zip": zipped[: len(zipped) // 2],
        "truncated_legacy": legacy.read_bytes()[: len(legacy.read_bytes()) // 2],
        "binary": bytes(range(1, 255)) * 4,
        "plain_pickle": pickle.dumps({"w": [1, 2, 3]}, protocol=4),
    }
    out = {}
    for name, data in files.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        out[name] = path
    marker = tmp_path / "code_ran"
    evil = tmp_path / "runs_code.pt"
    torch.save({"w": _RunsCode(str(marker))}, evil)
    out["runs_code"] = evil
    return out, marker


# name -> (words the message must hold, words a hint must hold)
EXPECTED = {
    "text": ("is a text file, not a PyTorch checkpoint", "weights_only=True"),
    "empty": ("is empty (0 bytes)", "torch.save(model.state_dict(), path)"),
    "truncated_zip": ("is a damaged or truncated checkpoint archive", "cut short"),
    "truncated_legacy": ("is a damaged or truncated checkpoint", "cut short"),
    "binary": ("is not a PyTorch checkpoint", "weights_only=True"),
    "plain_pickle": ("is a pickle that cannot be loaded safely", "runs no code"),
    "runs_code": ("tries to run code when loaded, and is refused", "'posix.system'"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_checkpoint_in_a_spec_is_a_located_kd509(tmp_path, name):
    files, marker = _bad_files(tmp_path)
    spec = kdsl.loads(SPEC.format(path=files[name]), str(tmp_path / "s.kd"))
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(spec)
    (diag,) = info.value.errors
    message, hint = EXPECTED[name]
    assert diag.code == "KD509" and message in diag.message, diag.message
    assert diag.message.startswith(f"cannot read checkpoint {files[name]}: it ")
    assert any(hint in h for h in diag.hints), diag.hints
    line = SPEC.format(path=files[name]).splitlines()[1]
    assert (diag.span.line, diag.span.column) == (2, line.index('"', line.index(" from ")) + 1)
    assert "hunter2" not in str(info.value) and "\n" not in diag.message and "\x1b" not in diag.message
    assert not marker.exists()  # nothing in the file ran


def test_blocked_global_keeps_torchs_informative_line(tmp_path):
    files, marker = _bad_files(tmp_path)
    with pytest.raises(kdsl.KdslError) as info:
        read_state_dict(str(files["runs_code"]))
    message = info.value.errors[0].message
    assert "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" in message
    assert not marker.exists()


def test_a_whole_pickled_model_names_its_class(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(kdsl.zoo.digits_cnn(), path)
    with pytest.raises(kdsl.KdslError) as info:
        load_into(kdsl.zoo.digits_cnn(), str(path))
    diag = info.value.errors[0]
    assert "tries to run code" in diag.message and "DigitsCNN" in diag.message
    assert any("load it in Python and save a state dict" in h for h in diag.hints)


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "nul"])
def test_non_regular_paths_are_refused_unopened(tmp_path, kind):
    if kind == "directory":
        path, words = str(tmp_path), "is a directory, not a checkpoint file"
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs FIFOs")
        path, words = str(tmp_path / "pipe.pt"), "is not a regular file"
        os.mkfifo(path)  # opening it for reading would block until a writer came
    elif kind == "device":
        path, words = "/dev/zero", "is not a regular file"  # would be read without end
    else:
        path, words = str(tmp_path / "a\x00b.pt"), "contains a NUL character"
    if kind == "nul":  # a spec's strings cannot hold one; a caller's path can
        with pytest.raises(kdsl.KdslError) as info:
            read_state_dict(path)
    else:
        with pytest.raises(kdsl.KdslError) as info:
            kdsl.compile(kdsl.loads(SPEC.format(path=path), str(tmp_path / "s.kd")))
    (diag,) = info.value.errors
    assert diag.code == "KD509" and words in diag.message, diag.message
    assert kind == "nul" or diag.span.line == 2


def test_size_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    monkeypatch.setattr(checkpoint_file, "MAX_CHECKPOINT_BYTES", 1024)
    with pytest.raises(kdsl.KdslError) as info:
        read_state_dict(str(path))
    assert "is larger than" in info.value.errors[0].message


def test_connector_weights_from_a_bad_file_are_located(tmp_path):
    (tmp_path / "para.pt").write_text("not weights\n")
    spec = kdsl.loads(SPEC.format(path=DIGITS_TEACHER).replace(
        "loss kd = kl_div(s, t)",
        'connector c = linear(out_features=10) from "para.pt"\nloss kd = kl_div(c(s), t)'),
        str(tmp_path / "s.kd"))
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(spec, example_input=torch.zeros(2, 1, 8, 8))
    (diag,) = info.value.errors
    assert diag.code == "KD509" and "is a text file" in diag.message and diag.span.line == 5


def test_good_checkpoints_still_load(tmp_path):
    state = read_state_dict(str(DIGITS_TEACHER))
    model = kdsl.zoo.digits_teacher()
    load_into(model, str(DIGITS_TEACHER))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    legacy = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    load_into(kdsl.zoo.digits_teacher(), str(legacy))


def _kdsl(*args):
    """``kdsl ARGS`` through the entry point, in this process."""
    return completed_in_process(*args, env={"OMP_NUM_THREADS": "1"})


def test_teacher_ckpt_flag_gets_the_same_messages(tmp_path):
    files, marker = _bad_files(tmp_path)
    spec = str(ROOT / "specs" / "digits" / "kd.kd")
    for name in ("text", "empty", "runs_code", "truncated_zip"):
        # check reads no weights unless asked to: --load-weights makes it read the flag's file
        done = _kdsl("check", spec, "--teacher-ckpt", str(files[name]), "--load-weights")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "KD509" in done.stdout and EXPECTED[name][0] in done.stdout, done.stdout
        assert "internal error" not in done.stdout + done.stderr and "Traceback" not in done.stderr
        assert "UserWarning" not in done.stderr  # torch's pickle-protocol warning stays quiet
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.pt"
        os.mkfifo(fifo)
        done = _kdsl("check", spec, "--teacher-ckpt", str(fifo), "--load-weights")
        assert done.returncode == 1 and "is not a regular file" in done.stdout + done.stderr
    assert not marker.exists()
