"""Hostile command lines end in located, coded errors (exit 1 or 2), never an internal error (3) or
a crash; a closed stdout ends kdsl quietly."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from tests.conftest import completed_in_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
KD = str(ROOT / "specs" / "digits" / "kd.kd")


def _kdsl(*args):
    """``kdsl ARGS`` through the entry point, in this process (the closed-pipe tests below run real
    processes: they are about the process's streams)."""
    return completed_in_process(*args, env={"OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("flag, value, expected", [
    ("--batch-size", "99999999999999999999", "must be at most"),
    ("--seed", "99999999999999999999999", "must be at most"),
    ("--threads", "100000", "must be at most"),
    ("--epochs", "99999999999", "must be at most"),
    ("--optimizer", "sgd(lr=-1)", "must be in (0, 1000000]"),
    ("--optimizer", "adam(betas=[0.9])", "must have 2 items"),
    ("--data", "kdsl.data:digits(num_workers=-1)", "must be at least 0"),
])
def test_absurd_flag_values_are_usage_errors(tmp_path, flag, value, expected):
    done = _kdsl("train", KD, "--out", str(tmp_path / "run"), flag, value)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "KD701" in done.stderr and expected in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["list"], ["check", KD, "--format", "json"], ["schema"]])
def test_closed_stdout_ends_quietly(args):
    proc = subprocess.Popen([sys.executable, "-m", "kdsl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # the reader is gone before kdsl writes anything
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 141), err
    assert b"Traceback" not in err and b"internal error" not in err and b"Exception ignored" not in err


def test_closed_stdout_on_a_long_listing_exits_141():
    # `kdsl list | head -1`: the pipe closes while kdsl is still writing
    done = subprocess.run(f"{sys.executable} -m kdsl list | head -c 10 >/dev/null; echo $" + "{PIPESTATUS[0]}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.stdout.strip() in ("0", "141"), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


# ------------------------------------------------------------------ #26.15: files that are no spec
def test_check_names_a_device_for_what_it_is():
    done = _kdsl("check", "/dev/zero")
    assert done.returncode == 2 and "not a regular file" in done.stdout + done.stderr
    assert "no such spec file" not in done.stdout + done.stderr


def test_a_binary_file_gets_one_exit_code_from_check_and_fmt(tmp_path):
    binary = tmp_path / "blob.kd"
    binary.write_bytes(b"student\n\x00\x01\x02")
    checked = _kdsl("check", str(binary))
    formatted = _kdsl("fmt", "--check", str(binary))
    assert checked.returncode == formatted.returncode == 2, (checked.stdout, formatted.stderr)
    assert "binary data" in checked.stdout and "binary data" in formatted.stderr


def test_fmt_on_a_symlink_formats_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.kd"
    target.write_text("student\nrecord  s   =   output of student\n")
    link = tmp_path / "link.kd"
    link.symlink_to(target.name)
    done = _kdsl("fmt", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == "real.kd"
    assert target.read_text() == "student\nrecord s = output of student\n"


def test_a_failing_factory_shows_no_cpp_stack():
    done = _kdsl("modules", "kdsl.zoo:digits_cnn(width=99999999999999999999)")
    assert done.returncode == 1 and "KD508" in done.stderr and "Overflow" in done.stderr
    assert "frame #" not in done.stderr and "Exception raised from" not in done.stderr
    assert len(done.stderr.splitlines()) <= 3
