"""torch's thread count when a run does not set one (issue #12, item 4): the rule as a pure
function, and the count and its reason recorded in summary.json by `kdsl.train` and `kdsl train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import kdsl
from kdsl.training.threads import choose_threads, omp_threads
from train_helpers import KD_SPEC, ROOT

FAST = {"epochs": 1, "steps_per_epoch": 1, "seed": 1}
SMALL = 60_400  # the digits teacher and student together


def test_given_threads_win_over_everything():
    env = {"OMP_NUM_THREADS": "3"}
    choice = choose_threads(5, "flag", env, 64, 0.0, 10**9)
    assert (choice.threads, choice.source) == (5, "flag")
    choice = choose_threads(2, "spec", env, 1, 9.0, 10)
    assert (choice.threads, choice.source) == (2, "spec")


def test_omp_num_threads_wins_over_the_rule():
    choice = choose_threads(None, "default", {"OMP_NUM_THREADS": "3"}, 2, 7.5, SMALL)
    assert (choice.threads, choice.source) == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("text", ["", "0", "-2", "two", "1.5", "99999", "\u0663"])
def test_an_unusable_omp_num_threads_is_ignored(text):
    assert omp_threads({"OMP_NUM_THREADS": text}) is None
    assert choose_threads(None, "default", {"OMP_NUM_THREADS": text}, 2, 0.0, SMALL).source.startswith("auto")


@pytest.mark.parametrize("cores, load, params, local, expected", [
    (2, 3.1, SMALL, 1, 1),          # the busy 2-core machine of the issue: one thread
    (2, 0.1, SMALL, 1, 2),          # the same machine idle: both cores
    (2, 1.2, SMALL, 1, 1),          # one core taken by other work
    (64, 0.0, SMALL, 1, 2),         # a small model on a big idle machine: the size cap
    (64, 0.0, 5_000_000, 1, 4),     # a mid-sized model
    (64, 0.0, 50_000_000, 1, 64),   # a large model: every free core
    (64, 40.4, 50_000_000, 1, 24),  # ... less what other work uses
    (64, 0.0, 50_000_000, 4, 16),   # torchrun with 4 processes here: a quarter each
    (4, 100.0, 50_000_000, 1, 1),   # never below one
    (8, None, 50_000_000, 1, 8),    # no load average (Windows): the cores
    (0, 0.0, SMALL, 1, 1),          # a machine that reports no cores
])
def test_the_automatic_rule(cores, load, params, local, expected):
    choice = choose_threads(None, "default", {}, cores, load, params, local)
    assert choice.threads == expected


def test_the_reason_names_the_facts():
    assert choose_threads(None, "default", {}, 2, 3.14, 60_412).source == "auto: 2 cores, load 3.1, 60.4k params"
    assert choose_threads(None, "default", {}, 1, None, 7_400_000).source == \
        "auto: 1 core, load unknown, 7.4M params"


def _summary(run) -> dict:
    with open(os.path.join(run, "summary.json"), encoding="utf-8") as fh:
        return json.load(fh)


def test_kdsl_train_records_the_automatic_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        result = kdsl.train(KD_SPEC, out=str(tmp_path / "run"), **FAST)
        chosen = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    config = _summary(tmp_path / "run")["config"]
    assert config["threads"] == chosen == result.config["threads"]
    source = config["sources"]["threads"]
    from kdsl.zoo import digits_cnn, digits_teacher

    params = sum(p.numel() for m in (digits_cnn(), digits_teacher()) for p in m.parameters())
    assert source.startswith("auto: ") and source.endswith(f", {params / 1e3:.1f}k params")
    env = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert env["sessions"][-1]["threads"] == chosen
    assert env["sessions"][-1]["settings"]["threads"] == chosen


def test_kdsl_train_records_omp_num_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    try:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), **FAST)
    finally:
        torch.set_num_threads(before)
    config = _summary(tmp_path / "run")["config"]
    assert (config["threads"], config["sources"]["threads"]) == (1, "OMP_NUM_THREADS")


def test_the_command_line_records_the_flag(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-m", "kdsl", "train", KD_SPEC, "--epochs", "1", "--steps-per-epoch", "1",
                           "--threads", "1", "--out", str(tmp_path / "run")],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    config = _summary(tmp_path / "run")["config"]
    assert (config["threads"], config["sources"]["threads"]) == (1, "flag")
