"""`kdsl train --resume` through the command line (issue #14, item 11): what may change on a
resume (where and how fast it runs, what it reports), what is refused (what it trains, and a
longer run: the cosine schedule's length is the run's epochs), and that a refusal writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kdsl
from tests.conftest import run_cli_in_process
from train_helpers import KD_SPEC, assert_usage_error

# The resumptions run the command line in this process (`kdsl.cli.app.main`, what `python -m kdsl`
# calls): a refusal is the CLI's own message and exit code either way, and an interpreter start
# that imports torch costs seconds on a busy machine. (The conftest's autouse fixture puts back
# the thread count a `--threads 2` changes.)

FLAGS = {"epochs": 2, "steps_per_epoch": 2, "seed": 5, "threads": 1}
ARGS = ["--epochs", "2", "--steps-per-epoch", "2", "--seed", "5", "--threads", "1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume_ux") / "run"
    before = torch.get_num_threads()
    try:
        kdsl.train(KD_SPEC, out=str(out), **FLAGS)
    finally:
        torch.set_num_threads(before)
    return out


def _files(run: Path):
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}


def _resume(run: Path, *changes: str, switches=()):
    """``kdsl train ... --resume`` with the run's flags, ``changes`` (FLAG VALUE pairs) replacing or
    adding to them, and ``switches`` (flags without a value) added."""
    args = list(ARGS)
    for flag, value in zip(changes[::2], changes[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return run_cli_in_process("train", KD_SPEC, *args, *switches, "--out", str(run), "--resume")


def test_a_longer_run_is_refused_with_the_way_to_train_longer(finished):
    before = _files(finished)
    text = assert_usage_error(_resume(finished, "--epochs", "4"), "KD703", "epochs = 2", "epochs = 4",
                              "resume with --epochs 2", "start a new run", f'from "{finished}/student.pt"')
    assert "schedule" in text
    assert _files(finished) == before  # environment.json included: a refused resume records nothing


# (tests/hardening/test_resume_changes.py refuses every other setting of RUN_SETTINGS in-process)
@pytest.mark.parametrize("flag, value, shown", [("--seed", "9", "seed = 5"),
                                                ("--best-metric", "val_loss", "best_metric = none")])
def test_what_the_run_trains_may_not_change(finished, flag, value, shown):
    before = _files(finished)
    assert_usage_error(_resume(finished, flag, value), "KD703", shown, "would change the run")
    assert _files(finished) == before


def test_where_and_how_it_runs_may_change(finished, tmp_path):
    """threads, device, tensorboard and the progress interval may differ; environment.json records
    the resumed session's."""
    import shutil

    pytest.importorskip("tensorboard", reason="--tensorboard needs the tensorboard package (the [test] extra has it)")

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    rc, out, err = _resume(run, "--threads", "2", "--device", "cpu", "--progress-every", "5",
                           switches=["--tensorboard"])
    assert rc == 0, err
    assert "the run is complete (2 epochs); nothing to resume" in out
    sessions = json.loads((run / "environment.json").read_text())["sessions"]
    assert [(s["resumed"], s["threads"]) for s in sessions] == [(False, 1), (True, 2)]
    assert sessions[1]["argv"][-1] == "--resume" and "--tensorboard" in sessions[1]["argv"]


# ---------------------------------------------------------------------- hints that paste back
# Issue #19.4 / #27.10: a refusal's hint printed values as Python writes them (`nesterov=True`,
# `--lr none`), which the command line refuses (KD701). Each case: the flags the run started with,
# the change a resumption tries, and what the message shows.
STARTS = {
    "a call with a bool": (["--optimizer", "sgd(lr=0.05, nesterov=true)"], ["--optimizer", "adam(lr=0.001)"],
                           "optimizer = sgd(lr=0.05, nesterov=true)"),
    "a choice": (["--best-metric", "val_loss"], ["--best-metric", "val_top1"], 'best_metric = "val_loss"'),
    "a data reference": (["--data", "kdsl.data:digits(val_fraction=0.25)"], ["--data", "kdsl.data:digits"],
                         "data = kdsl.data:digits(val_fraction=0.25)"),
}


def _pasted(args, hint: str):
    """``args`` with the flag of the hint's ``resume with FLAG VALUE`` replaced by the hint's words."""
    import re
    import shlex

    found = re.search(r"resume with (.*?) \(what the run started with\)", hint)
    assert found, hint
    words = shlex.split(found.group(1))
    out = list(args)
    out[out.index(words[0]) + 1] = words[1]
    return out


@pytest.mark.parametrize("case", list(STARTS))
def test_a_refusals_hint_pastes_back_and_resumes(tmp_path, case):
    start, change, shown = STARTS[case]
    run = tmp_path / "run"
    base = ["--epochs", "1", "--steps-per-epoch", "1", "--seed", "5", "--threads", "1", "--out", str(run)]
    rc, _, err = run_cli_in_process("train", KD_SPEC, *base, *start)
    assert rc == 0, err
    changed = list(start)
    changed[changed.index(change[0]) + 1] = change[1]
    text = assert_usage_error(run_cli_in_process("train", KD_SPEC, *base, *changed, "--resume"), "KD703", shown)
    rc, out, err = run_cli_in_process("train", KD_SPEC, *base, *_pasted(changed, text), "--resume")
    assert rc == 0, err
    assert "the run is complete (1 epoch); nothing to resume" in out


def test_an_unset_lr_is_shown_with_the_optimizers_and_the_hint_drops_the_flag(finished):
    text = assert_usage_error(_resume(finished, "--lr", "0.5"), "KD703",
                              "started with lr = none (the optimizer's lr 0.05)", "resume without --lr")
    assert "--lr none" not in text
