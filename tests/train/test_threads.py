"""torch's thread count when a run does not set one (issue #12, item 4; issue #27, items 4-5): the
rule as a pure function of the cores and the models' size, never of the machine's momentary load;
the count and its reason recorded in summary.json by `kdsl.train` and `kdsl train`; the same rule
in `kdsl teacher-cache`."""

from __future__ import annotations

import json
import os

import pytest
import torch

import kdsl
from kdsl.training.threads import choose_threads, machine_facts, omp_threads
from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC

FAST = {"epochs": 1, "steps_per_epoch": 1, "seed": 1}
SMALL = 60_400  # the digits teacher and student together


def test_given_threads_win_over_everything():
    env = {"OMP_NUM_THREADS": "3"}
    choice = choose_threads(5, "flag", env, 64, 10**9)
    assert (choice.threads, choice.source) == (5, "flag")
    choice = choose_threads(2, "spec", env, 1, 10)
    assert (choice.threads, choice.source) == (2, "spec")


def test_omp_num_threads_wins_over_the_rule():
    choice = choose_threads(None, "default", {"OMP_NUM_THREADS": "3"}, 2, SMALL)
    assert (choice.threads, choice.source) == (3, "OMP_NUM_THREADS")


@pytest.mark.parametrize("text", ["", "0", "-2", "two", "1.5", "99999", "\u0663"])
def test_an_unusable_omp_num_threads_is_ignored(text):
    assert omp_threads({"OMP_NUM_THREADS": text}) is None
    assert choose_threads(None, "default", {"OMP_NUM_THREADS": text}, 2, SMALL).source.startswith("auto")


@pytest.mark.parametrize("cores, params, local, expected", [
    (2, SMALL, 1, 2),            # the README's main job on a 2-core machine: both cores
    (1, SMALL, 1, 1),            # a 1-core machine (or affinity mask)
    (64, SMALL, 1, 2),           # a small model on a big machine: the size cap
    (64, 5_000_000, 1, 4),       # a mid-sized model
    (64, 50_000_000, 1, 64),     # a large model: every core
    (64, 50_000_000, 4, 16),     # torchrun with 4 processes here: a quarter each
    (2, 50_000_000, 4, 1),       # never below one
    (0, SMALL, 1, 1),            # a machine that reports no cores
])
def test_the_automatic_rule(cores, params, local, expected):
    choice = choose_threads(None, "default", {}, cores, params, local)
    assert choice.threads == expected


def test_the_reason_names_the_facts():
    assert choose_threads(None, "default", {}, 2, 60_412).source == "auto: 2 cores, 60.4k params"
    assert choose_threads(None, "default", {}, 1, 7_400_000).source == "auto: 1 core, 7.4M params"


@pytest.mark.parametrize("load", [0.0, 1.2, 3.1, 40.0])
def test_the_momentary_load_never_changes_the_count(monkeypatch, load):
    """Issue #27.4: 1 thread at load 3.1 and 2 at load 0.1 ended the same seed's run at different
    accuracies; the machine's facts the rule reads hold no load."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    facts = machine_facts()
    assert choose_threads(None, "default", {}, *facts[:1], SMALL, *facts[1:]) == \
        choose_threads(None, "default", {}, len(os.sched_getaffinity(0)), SMALL, 1)


def test_teacher_cache_follows_the_rule(tmp_path, monkeypatch):
    """Issue #27.5: `kdsl teacher-cache` ran with torch's default (every core), not the rule."""
    from kdsl.training import threads
    from kdsl.training.teacher_store_build import build_store

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "machine_facts", lambda: (1, 1))  # a 1-core machine: the rule gives 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        build_store(KD_SPEC, out=str(tmp_path / "store"), seed=7)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


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


def test_the_command_line_records_the_flag(tmp_path, monkeypatch):
    """`kdsl train ... --threads 1` through the entry point, in this process (conftest's autouse
    fixture puts the thread count back)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    code, out, err = run_cli_in_process("train", KD_SPEC, "--epochs", "1", "--steps-per-epoch", "1",
                                        "--threads", "1", "--out", str(tmp_path / "run"))
    assert code == 0, err + out
    config = _summary(tmp_path / "run")["config"]
    assert (config["threads"], config["sources"]["threads"]) == (1, "flag")
