"""Progress of `kdsl train` (issue #14, item 4): plain lines within an epoch where the output is
not a terminal, ETA and samples/s, and what Ctrl-C says (the epoch saved, the command that
continues the run, exit 130)."""

from __future__ import annotations

import re
import shlex
import signal
import time

import pytest
import torch

import forked
import kdsl
from kdsl.cli.train_view import clock, interrupted_text, progress_line, resume_command
from kdsl.training import loop
from kdsl.training.report import RunInterrupted
from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC

LINE = re.compile(r"^epoch (\d+)/(\d+) step (\d+)/(\d+) (\d+)% loss (\S+) kd (\S+) task (\S+) "
                  r"(\d+) samples/s eta (\d+:\d\d:\d\d)( \(run \d+:\d\d:\d\d\))?$", re.M)


def test_plain_progress_lines_in_a_log(tmp_path):
    """Output to a pipe (not a terminal; here a buffer, the command run in this process): a line at
    each step event once the interval has passed; digits has 23 steps an epoch and events every 10
    steps, so lines at steps 10 and 20."""
    rc, out, err = run_cli_in_process("train", KD_SPEC, "--epochs", "2", "--threads", "1", "--progress-every", "0.000001",
                                      "--out", str(tmp_path / "run"))
    assert rc == 0, err
    lines = LINE.findall(out)
    assert [(m[0], m[2], m[3], m[4]) for m in lines] == [("1", "10", "23", "43"), ("1", "20", "23", "86"),
                                                         ("2", "10", "23", "43"), ("2", "20", "23", "86")]
    for m in lines:
        assert m[1] == "2" and int(m[8]) > 0
        assert abs(float(m[5]) - float(m[6]) - float(m[7])) < 2e-3 * float(m[5])  # loss = kd + task
        assert bool(m[10]) == (m[0] == "1")  # the run's eta while an epoch is still to come
    # the plain lines come before their epoch's line
    assert out.index("epoch 1/2 step 20/23") < out.index("epoch   1/2  loss")


def test_no_progress_lines_at_the_default_interval(kd_run):
    printed = (kd_run.parent / "printed.txt").read_text()
    assert not LINE.search(printed)  # a 1-second epoch stays at its one line


def test_progress_line_and_clock():
    assert clock(0) == "0:00:00" and clock(62.4) == "0:01:02" and clock(3 * 3600 + 5) == "3:00:05"
    line = progress_line(2, 30, 120, 450, {"kd": 0.4, "task": 0.412}, 412.3, 62, 1870)
    assert line == "epoch 3/30 step 120/450 26% loss 0.812 kd 0.4 task 0.412 412 samples/s eta 0:01:02 (run 0:31:10)"
    assert progress_line(0, 1, 5, 10, {}, 10, 5, None).endswith("10 samples/s eta 0:00:05")


def test_resume_command_keeps_the_settings_the_run_started_with():
    argv = ["train", "specs/digits/kd.kd", "--epochs", "5", "--threads", "1", "--overwrite"]
    assert resume_command(argv, "runs/kd") == \
        "kdsl train specs/digits/kd.kd --epochs 5 --threads 1 --resume --out runs/kd"
    argv = ["train", "my spec.kd", "--out=dir x", "--resume", "--data", "kdsl.data:digits(batch_size=8)"]
    assert resume_command(argv, "dir x") == \
        "kdsl train 'my spec.kd' '--out=dir x' --resume --data 'kdsl.data:digits(batch_size=8)'"
    assert resume_command(["-m", "pytest"], "x") == ""  # not kdsl train's own command line


def test_interrupted_text():
    assert "nothing is saved in runs/x" in interrupted_text(RunInterrupted("runs/x", 0, 30), ["train", "a.kd"])
    text = interrupted_text(RunInterrupted("runs/x", 3, 30), ["train", "a.kd"])
    assert "epoch 3 of 30 is saved in runs/x" in text and text.endswith("kdsl train a.kd --resume --out runs/x")


def _interrupt_at(monkeypatch, epoch: int):
    real = loop.Trainer.step

    def step(self, e, i, batch):
        if e == epoch:
            raise KeyboardInterrupt
        return real(self, e, i, batch)

    monkeypatch.setattr(loop.Trainer, "step", step)


@pytest.mark.parametrize("at, saved", [(0, 0), (2, 2)])
def test_kdsl_train_says_what_an_interrupted_run_kept(tmp_path, monkeypatch, at, saved):
    _interrupt_at(monkeypatch, at)
    with pytest.raises(RunInterrupted) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=4, steps_per_epoch=2, threads=1)
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.saved, info.value.epochs, info.value.out) == (saved, 4, str(tmp_path / "run"))
    if saved:
        state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state["epoch"] == saved
    else:
        assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("within", [False, True], ids=["epoch", "within an epoch"])
def test_a_ctrl_c_just_after_the_checkpoint_lands_reports_it_saved(tmp_path, monkeypatch, within):
    """A real SIGINT at the instant after checkpoint.pt's rename (its write point "renamed"),
    before the run could record the epoch (or the steps) as saved: the interruption reports what
    is on disk. It once said "nothing is saved" of a run whose first epoch was."""
    from kdsl.training import rundir

    real = rundir.write_point

    def ctrl_c_after_the_rename(what, path):
        real(what, path)
        if what == "renamed" and path.endswith("checkpoint.pt"):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(rundir, "write_point", ctrl_c_after_the_rename)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal
    try:
        with pytest.raises(RunInterrupted) as info:
            kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=3, steps_per_epoch=4, threads=1,
                       **({"checkpoint_every": 2} if within else {}))
    finally:
        signal.signal(signal.SIGINT, previous)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    steps = state["within"]["steps"] if "within" in state else 0
    assert (info.value.saved, info.value.steps) == (state["epoch"], steps) == ((0, 2) if within else (1, 0))


def test_ctrl_c_names_the_saved_epoch_and_the_resume_command(tmp_path):
    """A real SIGINT to `kdsl train` once an epoch is saved: exit 130, the message names the
    epoch in the checkpoint, and the command it prints finishes the run."""
    out = tmp_path / "run"
    args = ["train", "specs/digits/kd.kd", "--epochs", "6", "--steps-per-epoch", "2", "--threads", "1",
            "--out", str(out)]
    # a process of its own, which waits for the signal before its last epoch (tests/train/ctrl_c_entry.py)
    with forked.Child(args, env={"OMP_NUM_THREADS": "1"}, entry="ctrl_c_entry") as proc:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        stdout, stderr = proc.output()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["epoch"]
    assert 1 <= saved < 6
    assert f"interrupted: epoch {saved} of 6 is saved in {out}" in stderr
    command = stderr.strip().splitlines()[-1].strip()
    assert command == "kdsl " + " ".join(shlex.quote(a) for a in args) + " --resume"
    code, again, err = run_cli_in_process(*shlex.split(command)[1:])  # the printed command, in this process
    assert code == 0, err
    assert f"resuming {out} after epoch {saved}" in again
    done = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert done["epoch"] == 6


def test_progress_every_must_be_positive(tmp_path):
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), progress_every=0)
    assert info.value.diagnostics[0].code == "KD701" and "--progress-every" in str(info.value)
