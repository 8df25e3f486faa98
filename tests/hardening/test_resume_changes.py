"""`--resume` that would change the run, and hand-edited run checkpoints (issue #13, items 2, 5):
each is refused with a KD703 that names what differs or what is damaged; never exit 3, never a run
that trains "epoch -4/4"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import kdsl

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "digits" / "kd.kd")
FLAGS = {"epochs": 2, "steps_per_epoch": 2, "seed": 5, "threads": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_changes") / "run"
    before = torch.get_num_threads()
    try:
        kdsl.train(SPEC, out=str(out), **FLAGS)
    finally:
        torch.set_num_threads(before)
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _refused(out: Path, *fragments: str, **changes) -> str:
    before = torch.get_num_threads()
    try:
        with pytest.raises(kdsl.KdslError) as info:
            kdsl.train(SPEC, out=str(out), resume=True, **dict(FLAGS, **changes))
    finally:
        torch.set_num_threads(before)
    text = str(info.value) + " " + " ".join(h for d in info.value.diagnostics for h in d.hints)
    assert info.value.diagnostics[0].code == "KD703", text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


@pytest.mark.parametrize("change, fragments", [
    ({"seed": 6}, ("seed = 5", "seed = 6", "--seed 5")),
    ({"batch_size": 16}, ("batch_size = 32", "batch_size = 16", "--batch-size 32")),
    ({"lr": 0.5}, ("lr = none", "lr = 0.5")),
    ({"epochs": 3}, ("epochs = 2", "epochs = 3", "resume with --epochs 2", "new run")),
    ({"optimizer": "adam(lr=0.001)"}, ("optimizer = sgd(", "optimizer = adam(lr=0.001)")),
    ({"steps_per_epoch": 3}, ("steps_per_epoch = 2", "steps_per_epoch = 3")),
])
def test_a_setting_that_changes_the_run_is_refused(finished, tmp_path, change, fragments):
    out = _copy(finished, tmp_path)
    before = (out / "student.pt").read_bytes()
    _refused(out, *fragments, **change)
    assert (out / "student.pt").read_bytes() == before  # nothing written


def test_settings_that_do_not_change_the_run_may_differ(finished, tmp_path):
    out = _copy(finished, tmp_path)
    before = torch.get_num_threads()
    try:
        result = kdsl.train(SPEC, out=str(out), resume=True, **dict(FLAGS, threads=2, eval_teachers=False))
    finally:
        torch.set_num_threads(before)
    assert result.summary["epochs_done"] == 2


def test_another_student_architecture_is_refused(finished, tmp_path):
    _refused(_copy(finished, tmp_path), "does not fit this run's models", "--student",
             student="kdsl.zoo:digits_cnn(width=4)")


def test_another_optimizer_over_the_cli_is_a_located_error_not_exit_3(finished, tmp_path):
    """Through the entry point `python -m kdsl` runs, in this process (an interpreter importing
    torch would cost seconds): the command line's own handling of the refusal is what is tested."""
    from tests.conftest import completed_in_process

    out = _copy(finished, tmp_path)
    proc = completed_in_process("train", SPEC, "--resume", "--out", str(out), "--epochs", "2",
                                "--steps-per-epoch", "2", "--seed", "5", "--batch-size", "32", "--threads", "1",
                                "--optimizer", "adam(lr=0.001)", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode not in (0, 3), proc.stderr
    assert proc.stderr.startswith("error[KD703]") and "optimizer = adam" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def _edit(state):
    """The hand edits: name -> (edit of the checkpoint's dict, a fragment of the error)."""
    def without(key):
        return lambda s: s.pop(key)

    def setting(key, value):
        return lambda s: s.__setitem__(key, value)

    return {
        "no optimization": (without("optimization"), "no 'optimization'"),
        "no distiller": (without("distiller"), "no 'distiller'"),
        "no history": (without("history"), "no 'history'"),
        "no config": (without("config"), "no 'config'"),
        # issue #26.14: a config without its settings disabled every guard of the resumption
        "config empty": (setting("config", {}), "is damaged: its 'config' lacks the setting 'data'"),
        "config without lr": (lambda s: s["config"].pop("lr"), "lacks the setting 'lr'"),
        # issue #26.12: a hand-edited lr 'x' (the refusal printed it Python-style)
        "config lr": (lambda s: s["config"].__setitem__("lr", "x"), 'holds lr = "x", which is not float | none'),
        "config epochs": (lambda s: s["config"].__setitem__("epochs", -3), "holds epochs = -3, which should be at least 1"),
        "epoch -5": (setting("epoch", -5), "must not be negative"),
        "epoch 99": (setting("epoch", 99), "one metrics row per epoch"),
        "epoch as text": (setting("epoch", "2"), "'epoch' should be a whole number, not str"),
        "epoch as bool": (setting("epoch", True), "'epoch' should be a whole number"),
        "format": (setting("format", "kdsl-run/9"), "not a kdsl run checkpoint"),
        "distiller list": (setting("distiller", [1, 2]), "'distiller' should be a state dict"),
        "distiller value": (lambda s: s["distiller"].__setitem__("models.student.fc.bias", 3), "not a tensor"),
        "no optimizer state": (lambda s: s["optimization"]["main"]["step"].pop("optimizer"), "optimization"),
        "optimizer state": (lambda s: s["optimization"]["main"]["step"]["optimizer"].__setitem__(
            "param_groups", []), "optimization"),
        "rng": (lambda s: s["rng"].__setitem__("torch", torch.zeros(3, dtype=torch.uint8)), "'rng'"),
        "shape": (lambda s: s["distiller"].__setitem__(next(iter(s["distiller"])), torch.zeros(1)),
                  "does not fit this run's models"),
    }


@pytest.mark.parametrize("name", list(_edit(None)))
def test_a_hand_edited_checkpoint_is_a_kd703_naming_what_is_wrong(finished, tmp_path, name):
    out = _copy(finished, tmp_path)
    edit, fragment = _edit(None)[name]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, out / "checkpoint.pt")
    _refused(out, fragment)


@pytest.mark.parametrize("content, fragment", [
    (lambda b: b[: len(b) // 2], "cannot read checkpoint"),
    (lambda b: b"", "empty"),
    (lambda b: b"epoch = 3\n", "cannot read checkpoint"),
])
def test_a_truncated_or_foreign_checkpoint_file_is_a_kd703(finished, tmp_path, content, fragment):
    out = _copy(finished, tmp_path)
    (out / "checkpoint.pt").write_bytes(content((out / "checkpoint.pt").read_bytes()))
    _refused(out, fragment)


def _halfway(state):
    """The checkpoint as it was after epoch 1 of 2 (so that resuming loads its optimizer)."""
    state["epoch"], state["history"] = 1, state["history"][:1]


@pytest.mark.parametrize("edit", [
    lambda opt: opt["param_groups"].append(dict(opt["param_groups"][0])),
    lambda opt: [buffers.__setitem__("momentum_buffer", torch.zeros(7)) for buffers in opt["state"].values()],
    lambda opt: opt["param_groups"][0].__setitem__("lr", "x"),  # issue #26.12: exit 3 at the first step
    lambda opt: opt["param_groups"][0].__setitem__("momentum", float("nan")),
])
def test_an_optimizer_state_that_does_not_fit_is_a_kd703(finished, tmp_path, edit):
    out = _copy(finished, tmp_path)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    _halfway(state)
    edit(state["optimization"]["main"]["step"]["optimizer"])
    torch.save(state, out / "checkpoint.pt")
    _refused(out, "does not fit this run's optimizer")


def test_a_halfway_checkpoint_resumes(finished, tmp_path):
    """The control for the test above: the same edit without damage trains epoch 2 again."""
    out = _copy(finished, tmp_path)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    _halfway(state)
    torch.save(state, out / "checkpoint.pt")
    before = torch.get_num_threads()
    try:
        result = kdsl.train(SPEC, out=str(out), resume=True, **FLAGS)
    finally:
        torch.set_num_threads(before)
    assert [r["epoch"] for r in result.history] == [1, 2]
