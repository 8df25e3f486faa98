"""`kdsl train --strategy fsdp` under torchrun: 2 CPU processes (gloo), FSDP2 on kdsl.zoo:gpt.

One set of runs of tests/fsdp/gpt_kd_hint.kd (KD + hint through a connector + a delivery into
a patched method, gradient clipping; 2 epochs of 10 steps) serves every test here: the single
process with the global batch (8), 2-process fsdp and ddp (4 per process), an fsdp run whose
rank 1 is killed with SIGKILL mid-epoch and then resumed, and the killed run's checkpoint
resumed in one process."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fsdp_helpers import ENTRY, SPEC, corpus, torchrun

REL = 1e-5  # float32 sums in another order (reduce-scatter vs all-reduce vs one batch)
TERMS = ("train_loss", "train/kd", "train/hint", "train/task", "val_loss")

pytestmark = pytest.mark.slow


def _in_process(out, data, **settings):
    import kdsl

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.delenv(key, raising=False)
        return kdsl.train(SPEC, out=str(out), data=data, allow_random_teacher=True, threads=1, **settings)


def _launch(out, data, *flags, env=None):
    code, stdout, stderr = torchrun(ENTRY, "train", SPEC, "--data", data, "--out", str(out),
                                    "--allow-random-teacher", *flags, env=env)
    return code, stdout + stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    data = corpus(tmp)
    single = _in_process(tmp / "single", data.replace("batch_size=4", "batch_size=8"), strategy="fsdp")
    code, fsdp_log = _launch(tmp / "fsdp", data, "--strategy", "fsdp")
    assert code == 0, fsdp_log[-3000:]
    code, ddp_log = _launch(tmp / "ddp", data)
    assert code == 0, ddp_log[-3000:]
    code, killed_log = _launch(tmp / "killed", data, "--strategy", "fsdp", env={"KDSL_TEST_KILL_AT": "15"})
    assert code != 0
    shutil.copytree(tmp / "killed", tmp / "killed_to_1")
    code, resumed_log = _launch(tmp / "killed", data, "--strategy", "fsdp", "--resume")
    assert code == 0, resumed_log[-3000:]
    return {"tmp": tmp, "single": single, "fsdp_log": fsdp_log, "killed_log": killed_log,
            "resumed_log": resumed_log, "data": data}


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
    assert "Traceback" not in runs["fsdp_log"]


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
    tmp = runs["tmp"]
    assert "Signal 9" in runs["killed_log"] or "SIGKILL" in runs["killed_log"]
    resumed, uninterrupted = _student(tmp / "killed"), _student(tmp / "fsdp")
    assert list(resumed) == list(uninterrupted)
    different = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not different, different
    assert _rows(tmp / "killed") == _rows(tmp / "fsdp")


def test_fsdp_checkpoint_is_whole_and_resumes_in_one_process(runs):
    """2 -> 1: the checkpoint holds whole tensors (gathered), as a DDP run's does, so one process
    continues it. The resume guard keeps the per-process batch size (4), so the second epoch
    trains on another global batch than the 2-process run: it is checked to continue the run
    (the first epoch's row kept, the second trained), not compared with it."""
    tmp = runs["tmp"]
    state = torch.load(tmp / "killed_to_1" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1
    single = _student(tmp / "single")
    for key, value in state["distiller"].items():
        assert type(value) is torch.Tensor, key
        if key.startswith("student."):
            assert value.shape == single[key[len("student."):]].shape, key
    for phase in state["optimization"]["main"].values():
        for slot in phase["optimizer"]["state"].values():
            assert all(type(v) is torch.Tensor for v in slot.values())
    summary = _in_process(tmp / "killed_to_1", runs["data"], resume=True).summary
    history = summary["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert _rows(tmp / "fsdp")[0] == {k: v for k, v in history[0].items() if k != "time_s"}
    assert 0 < history[1]["train_loss"] < history[0]["train_loss"] * 1.5
