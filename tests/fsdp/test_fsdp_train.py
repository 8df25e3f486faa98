"""`kdsl train --strategy fsdp` on 2 CPU processes (gloo), FSDP2 on kdsl.zoo:gpt: the ranks are
processes of their own with torchrun's environment, forked ready-imported (tests/forked.run_ranks:
torchrun's own behaviour is tested in test_fsdp_launch.py and test_rendezvous.py).

One set of runs of tests/fsdp/gpt_kd_hint.kd (KD + hint through a connector + a delivery into
a patched method, gradient clipping; 2 epochs of 10 steps) serves every test here: the single
process with the global batch (8), 2-process fsdp and ddp (4 per process), an fsdp run whose
rank 1 is killed with SIGKILL mid-epoch, its resumption killed again while rank 1 writes its
checkpoint shards (DCP), then resumed to the end; the killed run's sharded checkpoint resumed in
one process (2 -> 1), and the single process's checkpoint of epoch 1 resumed by 2 fsdp processes
(1 -> 2). The two killed runs are launches of their own; the four runs that end well share one."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from forked import run_ranks
from fsdp_helpers import SPEC, corpus

REL = 1e-5  # float32 sums in another order (reduce-scatter vs all-reduce vs one batch)
TERMS = ("train_loss", "train/kd", "train/hint", "train/task", "val_loss")

pytestmark = pytest.mark.slow(seconds=20)  # one module fixture: its 3 launches of 2 ranks and in-process runs


def _in_process(out, data, epoch1=None, **settings):
    """``kdsl.train`` in this process; ``epoch1``: where to copy the run directory as it is after
    epoch 1 (its checkpoint, for the 1 -> 2 resumption)."""
    import kdsl
    from kdsl.training.loop import Trainer

    real = Trainer.run_epoch

    def run_epoch(self, epoch):
        real(self, epoch)
        if epoch == 0 and epoch1 is not None:
            shutil.copytree(out, epoch1)

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.delenv(key, raising=False)
        env.setattr(Trainer, "run_epoch", run_epoch)
        return kdsl.train(SPEC, out=str(out), data=data, allow_random_teacher=True, threads=1, **settings)


def _train(out, data, *flags):
    return ("train", SPEC, "--data", data, "--out", str(out), "--allow-random-teacher", *flags)


def _launch(*commands, env=None):
    """The commands (each ``_train``'s) on 2 ranks: one command through tests/fsdp/fsdp_entry.py,
    several one after another in one process group through fsdp_runs_entry.py."""
    args = [arg for command in commands for arg in ("+", *command)][1:]
    code, stdout, stderr = run_ranks(*args, env=env, entry="fsdp_entry" if len(commands) == 1 else "fsdp_runs_entry")
    return code, stdout + stderr


def _listing(run):
    return {os.path.relpath(os.path.join(root, f), run) for root, _, files in os.walk(run / "shards") for f in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    data = corpus(tmp)
    single = _in_process(tmp / "single", data.replace("batch_size=4", "batch_size=8"), strategy="fsdp",
                         epoch1=tmp / "single_to_2")
    code, killed_log = _launch(_train(tmp / "killed", data, "--strategy", "fsdp"), env={"KDSL_TEST_KILL_AT": "15"})
    assert code != 0
    shutil.copytree(tmp / "killed", tmp / "killed_to_1")
    # resumed, then rank 1 killed at its first write point: its shards of epoch 2 written, no metadata yet
    code, write_killed_log = _launch(_train(tmp / "killed", data, "--strategy", "fsdp", "--resume"),
                                     env={"KDSL_TEST_RANK1_KILL_AT": "1"})
    assert code != 0
    after_write_kill = {"epoch": torch.load(tmp / "killed" / "checkpoint.pt", weights_only=True)["epoch"],
                        "shards": _listing(tmp / "killed")}
    # the runs that end well share one launch and process group (a run in processes of its own, kdsl
    # starting and ending the group: the killed runs above, and tests/hubs/test_fsdp_gpt2.py to the end)
    code, log = _launch(_train(tmp / "fsdp", data, "--strategy", "fsdp"), _train(tmp / "ddp", data),
                        _train(tmp / "killed", data, "--strategy", "fsdp", "--resume"),
                        _train(tmp / "single_to_2", data, "--strategy", "fsdp", "--resume"))
    assert code == 0, log[-3000:]
    return {"tmp": tmp, "single": single, "log": log, "killed_log": killed_log,
            "write_killed_log": write_killed_log, "after_write_kill": after_write_kill, "data": data}


def _history(run):
    return json.loads((run / "summary.json").read_text())["history"]


def _rows(run):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in _history(run)]


def _student(run):
    return torch.load(run / "student.pt", map_location="cpu", weights_only=True)


def _assert_losses_close(a, b, what):
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in TERMS:
            assert ra[key] == pytest.approx(rb[key], rel=REL), f"{what}: epoch {ra['epoch']} {key}"


def test_fsdp_equals_single_process_and_ddp(runs):
    tmp = runs["tmp"]
    single, fsdp, ddp = _history(tmp / "single"), _history(tmp / "fsdp"), _history(tmp / "ddp")
    _assert_losses_close(fsdp, single, "fsdp vs one process")
    _assert_losses_close(fsdp, ddp, "fsdp vs ddp")
    # student.pt is a plain, whole state dict (gathered on rank 0), loadable without kdsl
    a, b = _student(tmp / "fsdp"), _student(tmp / "ddp")
    assert list(a) == list(b) and all(type(v) is torch.Tensor for v in a.values())
    for k in a:
        assert a[k].shape == b[k].shape
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=k)
    assert "Traceback" not in runs["log"]


def test_single_process_notes_that_fsdp_needs_processes(runs):
    summary = runs["single"].summary
    assert summary["ranks"]["strategy"] == "single"
    assert summary["config"]["strategy"] == "fsdp"


def test_each_rank_holds_its_shards(runs):
    ranks = json.loads((runs["tmp"] / "fsdp" / "summary.json").read_text())["ranks"]
    assert ranks["strategy"] == "fsdp" and ranks["world"] == 2
    student, teacher = ranks["models"]["student"], ranks["models"]["teacher"]
    assert student["placement"] == teacher["placement"] == "sharded"
    assert student["units"] == 2 and teacher["units"] == 3  # each transformer block
    whole = json.loads((runs["tmp"] / "ddp" / "summary.json").read_text())["ranks"]["models"]
    for name, model in (("student", student), ("teacher", teacher)):
        full = whole[name]["param_bytes"][0]
        assert sum(model["param_bytes"]) >= full * 0.99  # tied weights count once in the shards
        for part in model["param_bytes"]:
            assert 0.4 * full < part < 0.6 * full, (name, model["param_bytes"], full)
    assert len(ranks["peak_bytes"]) == 2 and min(ranks["peak_bytes"]) > 0
    # what `kdsl explain --world-size 2 --strategy fsdp` plans is what rank 0 held
    import kdsl.zoo
    from kdsl.reports.memory_plan import shard_bytes

    for name, layers, model in (("student", 2, student), ("teacher", 3, teacher)):
        built = kdsl.zoo.gpt(vocab_size=256, seq_len=16, d_model=32, n_layers=layers, n_heads=2)
        assert shard_bytes(list(built.parameters()), 2) == model["param_bytes"][0]


def test_killed_rank_then_resume_is_bit_exact(runs):
    """Rank 1 killed mid-epoch, then resumed and killed again while writing its checkpoint shards
    (DCP): the last complete checkpoint stays the current one, and the run ends, tensor for tensor,
    as the run never interrupted."""
    tmp = runs["tmp"]
    assert "rank 1: exitcode -9 (SIGKILL)" in runs["killed_log"]
    assert "rank 1: exitcode 137\n" in runs["write_killed_log"]  # rank 1 at its write point
    killed_writing = runs["after_write_kill"]
    assert killed_writing["epoch"] == 1  # checkpoint.pt still names epoch 1's shards, complete
    assert {"shards/epoch1/.metadata", "shards/epoch1/__0_0.distcp", "shards/epoch1/__1_0.distcp"} \
        <= killed_writing["shards"]
    assert "shards/epoch2.partial/__1_0.distcp" in killed_writing["shards"]  # rank 1's shards of epoch 2...
    assert "shards/epoch2.partial/.metadata" not in killed_writing["shards"]  # ...never completed
    assert not any(f.startswith("shards/epoch2/") for f in killed_writing["shards"])
    resumed, uninterrupted = _student(tmp / "killed"), _student(tmp / "fsdp")
    assert list(resumed) == list(uninterrupted)
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, different
    assert _rows(tmp / "killed") == _rows(tmp / "fsdp")
    assert _listing(tmp / "killed") == {"shards/epoch2/.metadata", "shards/epoch2/__0_0.distcp",
                                        "shards/epoch2/__1_0.distcp"}


def _assert_continues(resumed, uninterrupted, first, what):
    """A run resumed at another world size after epoch 1: its first row is the checkpoint's
    (``first``), its second within the stated tolerance of the uninterrupted run's, and so is its
    student (docs/distributed.md: RESUME_REL)."""
    rows = _rows(resumed)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == first
    _assert_losses_close(rows, _rows(uninterrupted), what)
    a, b = _student(resumed), _student(uninterrupted)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4, msg=f"{what}: {k}")


def test_sharded_checkpoint_resumes_in_one_process(runs):
    """2 -> 1: each rank wrote its own shards; one process reads every tensor whole from them
    (DCP reshards on load) and, with the global batch kept (--batch-size 8), trains epoch 2 as the
    2-process run does, within the tolerance of another reduction order."""
    tmp = runs["tmp"]
    state = torch.load(tmp / "killed_to_1" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["world"] == 2 and state["distiller"] == {}
    assert set(state["shards"]["files"]) == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    from kdsl.training.rundir import RunDir

    whole = RunDir(str(tmp / "killed_to_1")).load_run_checkpoint("cpu")
    single = _student(tmp / "single")
    students = {k: v for k, v in whole["distiller"].items() if k.startswith("models.student.")}
    assert {k[len("models.student."):]: v.shape for k, v in students.items()} == {k: v.shape for k, v in single.items()}
    for phase in whole["optimization"]["main"].values():
        for i, slot in phase["optimizer"]["state"].items():
            assert type(i) is int and all(type(v) is torch.Tensor for v in slot.values())
    summary = _in_process(tmp / "killed_to_1", runs["data"].replace("batch_size=4", "batch_size=8"),
                          resume=True).summary
    assert summary["ranks"]["world"] == 1
    _assert_continues(tmp / "killed_to_1", tmp / "fsdp", _rows(tmp / "fsdp")[0], "2 -> 1")


def test_plain_checkpoint_resumes_in_two_fsdp_processes(runs):
    """1 -> 2: the single process's checkpoint after epoch 1 (batch 8), resumed by 2 fsdp processes
    of 4 each, trains epoch 2 as the single process did, within the same tolerance; its checkpoint
    is then sharded."""
    tmp = runs["tmp"]
    _assert_continues(tmp / "single_to_2", tmp / "single", _rows(tmp / "single")[0], "1 -> 2")
    state = torch.load(tmp / "single_to_2" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["world"] == 2 and state["shards"]["dir"] == "shards/epoch2"


def test_resume_at_another_world_size_keeps_the_global_batch(runs, tmp_path):
    from tests.conftest import run_cli_in_process

    run = tmp_path / "run"
    shutil.copytree(runs["tmp"] / "fsdp", run)  # 2 processes of batch 4
    code, _, err = run_cli_in_process("train", SPEC, "--data", runs["data"], "--out", str(run), "--resume",
                                      "--allow-random-teacher", "--threads", "1")
    assert code != 0 and "KD703" in err and "a global batch of 4 x 2 processes" in err, err
    assert "resume with --batch-size 8" in err and "Traceback" not in err


@pytest.mark.parametrize("damage, code", [
    ("missing shard", "KD781"), ("missing folder", "KD781"), ("cut shard", "KD782"), ("altered metadata", "KD782"),
])
def test_damaged_shards_are_refused(runs, tmp_path, damage, code):
    """A shard file missing, cut short or altered: a kdsl error naming the file, before anything of
    the checkpoint is used (DCP unpickles its non-tensor entries: the digests guard it)."""
    from tests.conftest import run_cli_in_process

    run = tmp_path / "run"
    shutil.copytree(runs["tmp"] / "fsdp", run)
    folder = run / "shards" / "epoch2"
    if damage == "missing shard":
        (folder / "__1_0.distcp").unlink()
    elif damage == "missing folder":
        shutil.rmtree(folder)
    elif damage == "cut shard":
        data = (folder / "__0_0.distcp").read_bytes()
        (folder / "__0_0.distcp").write_bytes(data[: len(data) // 2])
    else:
        data = bytearray((folder / ".metadata").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / ".metadata").write_bytes(bytes(data))
    before = (run / "checkpoint.pt").read_bytes()
    exit_code, _, err = run_cli_in_process("train", SPEC, "--data", runs["data"], "--out", str(run), "--resume",
                                           "--allow-random-teacher", "--threads", "1")
    assert exit_code != 0 and f"error[{code}]" in err and "Traceback" not in err, err
    assert str(folder) in err and "--out" in err
    assert (run / "checkpoint.pt").read_bytes() == before  # the refusal leaves the run as it was
