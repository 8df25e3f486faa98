"""Deliveries across FSDP2's units and a teacher-output store under `kdsl train --strategy fsdp`:
one launch of 2 CPU processes (gloo; tests/forked.run_ranks, torchrun's environment) runs both
specs (tests/fsdp/fsdp_runs_entry.py), each compared with the single process with the same global
batch.

- gpt_deliver_units.kd: the teacher's attention outputs answer the student's attention calls,
  each attention a unit of its own inside its block's unit. Such a delivery is safe under FSDP2:
  what is queued is a tensor the teacher's pass computed (not a parameter: KD541 refuses views
  of a unit's parameters), and the student's unit whose call it answers still gathers, reshards
  and reduces its (gradient-less) parameters in the same order on every rank.
- gpt_store.kd: every rank reads its own samples' teacher outputs from one store built by one
  process (reads only: the store's files are shared safely), and the teacher never runs."""

from __future__ import annotations

import json

import pytest

from forked import run_ranks
from fsdp_helpers import HERE, corpus

REL = 1e-5
DELIVER = str(HERE / "gpt_deliver_units.kd")
STORE = str(HERE / "gpt_store.kd")

pytestmark = pytest.mark.slow(seconds=6)


def _single(spec, out, data, **settings):
    import kdsl

    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.delenv(key, raising=False)
        kdsl.train(spec, out=str(out), data=data.replace("batch_size=4", "batch_size=8"),
                   allow_random_teacher=True, threads=1, **settings)
    return _rows(out)


def _rows(run):
    rows = json.loads((run / "summary.json").read_text())["history"]
    return [{k: v for k, v in row.items() if k not in ("time_s", "lr", "step", "stage", "epoch")} for row in rows]


def _assert_close(got, expected, what):
    assert len(got) == len(expected) >= 1
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key in e:
            assert g[key] == pytest.approx(e[key], rel=REL), f"{what}: {key}"


def test_delivery_across_units_and_teacher_store_match_one_process(tmp_path):
    from kdsl.training.teacher_store_build import build_store

    data = corpus(tmp_path)
    store = tmp_path / "store"
    build_store(STORE, out=str(store), data=data, threads=1)
    served = tmp_path / "served"
    code, out, err = run_ranks("train", DELIVER, "--data", data, "--out", str(tmp_path / "deliver"),
                               "--allow-random-teacher", "+",
                               "train", STORE, "--data", data, "--out", str(tmp_path / "store_run"),
                               "--teacher-cache", str(store), env={"KDSL_TEST_SERVED": str(served)},
                               entry="fsdp_runs_entry")
    assert code == 0, (out + err)[-3000:]
    assert out.count("2 processes") == 2
    _assert_close(_rows(tmp_path / "deliver"), _single(DELIVER, tmp_path / "deliver1", data), "delivery across units")
    _assert_close(_rows(tmp_path / "store_run"), _single(STORE, tmp_path / "plain1", data), "store vs no store")
    # 6 steps and 1 validation pass on each rank: every one of its teacher passes came from the store
    assert [int((tmp_path / f"served.{rank}").read_text()) for rank in (0, 1)] == [6, 6]
