"""A run directory is kdsl's by its manifest (kdsl-run.json, every path kdsl wrote there): a
non-empty directory without one is refused, --overwrite and a fresh start remove only what it
lists, a failed run leaves nothing behind, and a run killed before its first checkpoint resumes as
a fresh run (issue #27 items 7, 8, 19, 22; issue #26 item 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdsl
from kdsl.training.rundir import MANIFEST
from train_helpers import BASELINE_SPEC, train_in_process

QUICK = dict(epochs=1, steps_per_epoch=3, threads=1, eval_teachers=False)


def _tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _listed(run: Path) -> set:
    return set(json.loads((run / MANIFEST).read_text())["written"])


def _foreign_project(folder: Path) -> dict:
    """A folder of the user's, named like a run's files but not written by kdsl (issue #27.22)."""
    for name, text in {"student.pt": "mine", "summary.json": "{}", "spec/README": "my readme",
                       "spec/notes/thesis.tex": "\\chapter{}", "paper.md.tmp-999999": "draft",
                       "models/x.tmp-999998": "half"}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return _tree(folder)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_kdsl_did_not_make_is_refused_and_untouched(tmp_path, overwrite):
    before = _foreign_project(tmp_path / "proj")
    with pytest.raises(kdsl.KdslError, match="not a kdsl run directory") as caught:
        kdsl.train(BASELINE_SPEC, out=str(tmp_path / "proj"), overwrite=overwrite, **QUICK)
    assert caught.value.diagnostics[0].code == "KD706"
    assert _tree(tmp_path / "proj") == before


def test_the_manifest_lists_every_file_of_a_run(tmp_path):
    run = tmp_path / "run"
    train_in_process(BASELINE_SPEC, out=str(run), tensorboard=True, **QUICK)
    files = {p for p in _tree(run) if p != MANIFEST and not p.startswith("tensorboard/")}
    assert _listed(run) == files | {"tensorboard/"}


def test_overwrite_replaces_the_run_and_keeps_the_users_files(tmp_path):
    run = tmp_path / "run"
    train_in_process(BASELINE_SPEC, out=str(run), tensorboard=True, **QUICK)
    (run / "notes.txt").write_text("my notes")
    (run / "spec" / "why.md").write_text("why I ran it")
    _, printed = train_in_process(BASELINE_SPEC, out=str(run), overwrite=True, **QUICK)
    # nothing of the old run survives unannounced (its tensorboard/ is gone, issue #27.7) ...
    assert not (run / "tensorboard").exists() and "tensorboard" not in printed
    # ... and what the user put there stays (issue #27.22)
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "spec" / "why.md").read_text() == "why I ran it"
    assert "notes.txt" not in _listed(run) and "spec/why.md" not in _listed(run)


def test_a_file_kdsl_did_not_write_is_never_replaced(tmp_path):
    run = tmp_path / "run"
    train_in_process(BASELINE_SPEC, out=str(run), **QUICK)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "mine.txt").write_text("mine")
    with pytest.raises(kdsl.KdslError, match="was not written by kdsl"):
        kdsl.train(BASELINE_SPEC, out=str(run), overwrite=True, tensorboard=True, **QUICK)
    assert (run / "tensorboard" / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize("nested", [False, True])
def test_a_failed_run_leaves_no_directory(tmp_path, nested):
    out = tmp_path / "new" / "run" if nested else tmp_path / "run"
    with pytest.raises(kdsl.KdslError) as caught:  # KD503: the data factory does not exist
        kdsl.train(BASELINE_SPEC, out=str(out), data="kdsl.data:digitz", **QUICK)
    assert caught.value.diagnostics[0].code == "KD503"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_overwrite_leaves_the_old_run(tmp_path):
    run = tmp_path / "run"
    train_in_process(BASELINE_SPEC, out=str(run), **QUICK)
    before = _tree(run)
    with pytest.raises(kdsl.KdslError):
        kdsl.train(BASELINE_SPEC, out=str(run), overwrite=True, data="kdsl.data:digitz", **QUICK)
    assert _tree(run) == before


def _killed_before_its_first_checkpoint(run: Path) -> None:
    """What a run killed during its first epoch leaves: everything but its checkpoint."""
    train_in_process(BASELINE_SPEC, out=str(run), tensorboard=True, **QUICK)
    (run / "checkpoint.pt").unlink()


@pytest.mark.parametrize("written", ["nothing", "files"])
def test_resume_before_the_first_checkpoint_is_a_fresh_run(tmp_path, written):
    run = tmp_path / "run"
    if written == "files":
        _killed_before_its_first_checkpoint(run)
    summary, printed = train_in_process(BASELINE_SPEC, out=str(run), resume=True, **QUICK)
    printed = " ".join(printed.split())
    assert "nothing to resume" in printed and "starting the run from its first epoch" in printed
    assert summary["epochs_done"] == 1 and (run / "checkpoint.pt").is_file()
    assert not (run / "tensorboard").exists()  # the killed run's, removed with the rest of it


def test_a_fresh_run_after_a_kill_does_not_duplicate_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    _killed_before_its_first_checkpoint(run)
    train_in_process(BASELINE_SPEC, out=str(run), tensorboard=True, **QUICK)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("loss/total")]
    assert steps == sorted(set(steps)) == [3]  # issue #26.15: once, not once per run
