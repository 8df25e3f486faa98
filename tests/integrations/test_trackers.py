"""MLflow and W&B behind the loggers (issue #25, item 3): a digits run with ``--log mlflow,wandb``,
read back through MLflow's client and W&B's offline run file: every setting with its source, the
per-step and per-epoch scalars, the run directory's files as artifacts; a resumed run continues
the same tracker run; a missing package is KD726 with its install line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.training.config import resolve_config
from kdsl.training.report import Reporter, RunInterrupted

ROOT = Path(__file__).resolve().parents[2]
KD_SPEC = str(ROOT / "specs" / "digits" / "kd.kd")
STEPS = 12  # step scalars at steps 10 and 12 of each epoch


class _StopAtSecondEpoch(Reporter):
    def epoch_start(self, epoch, epochs, steps):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    import torch

    out = tmp_path_factory.mktemp("trackers") / "run"
    before = torch.get_num_threads()
    env = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_SILENT", "MLFLOW_TRACKING_URI")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with pytest.raises(RunInterrupted):  # Ctrl-C as the second epoch starts: one epoch saved
            kdsl.train(KD_SPEC, out=str(out), epochs=2, steps_per_epoch=STEPS, threads=1, eval_teachers=False,
                       log="mlflow,wandb", reporter=_StopAtSecondEpoch())
        kdsl.train(KD_SPEC, out=str(out), epochs=2, steps_per_epoch=STEPS, threads=1, eval_teachers=False,
                   log=["mlflow", "wandb"], resume=True)
    finally:
        torch.set_num_threads(before)
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return out


def _mlflow_run(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(out / "mlflow" / "mlflow.db"))
    (run,) = client.search_runs([client.get_experiment_by_name("kdsl").experiment_id])
    return client, run


def test_mlflow_params_metrics_and_artifacts(tracked):
    client, run = _mlflow_run(tracked)  # one MLflow run: the resumption continued it
    params = run.data.params
    assert params["epochs"] == "2" and params["epochs.source"] == "flag"  # the first process's
    assert params["optimizer"].startswith('["sgd"') and params["optimizer.source"] == "spec"
    assert params["patience.source"] == "default" and json.loads(params["log"]) == ["mlflow", "wandb"]
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss/total")}
    assert sorted(history) == [10, 12, 22, 24]
    kd = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss/kd")}
    raw = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss_unweighted/kd")}
    assert all(kd[s] == pytest.approx(0.9 * raw[s], rel=1e-5) for s in kd)
    rows = [json.loads(line) for line in (tracked / "metrics.jsonl").read_text().splitlines()]
    top1 = client.get_metric_history(run.info.run_id, "epoch/val_top1")
    assert [(m.step, m.value) for m in top1] == [(12, pytest.approx(rows[0]["val_top1"])),
                                                 (24, pytest.approx(rows[1]["val_top1"]))]
    names = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"metrics.jsonl", "summary.json", "student.pt", "spec"} <= names and "checkpoint.pt" not in names
    assert [f.path for f in client.list_artifacts(run.info.run_id, "spec")] == ["spec/kd.kd"]
    assert run.info.status == "FINISHED"


def test_wandb_offline_run_holds_the_same(tracked):
    from wandb_records import offline_runs, read_run

    runs = offline_runs(str(tracked))
    # one id, resumed: offline-run-START-ID, and -N after it for a run that started within the
    # second of an earlier one of its id (a fast machine's resumption)
    assert len(runs) == 2 and len({os.path.basename(r).split("-")[3] for r in runs}) == 1
    config, history, files = read_run(runs[0])
    assert config["epochs"] == 2 and config["sources"]["epochs"] == "flag"
    assert config["sources"]["optimizer"] == "spec" and config["kdsl.spec"] == KD_SPEC
    assert [s for s, _ in history["loss/total"]] == [10, 12]
    assert [s for s, _ in history["epoch/val_top1"]] == [12]
    assert {"metrics.jsonl", "summary.json", "spec/kd.kd"} <= set(files) and "checkpoint.pt" not in files
    _, later, _ = read_run(runs[1])
    assert [s for s, _ in later["loss/total"]] == [22, 24]


def test_log_setting_from_flag_spec_and_alias(tmp_path):
    spec = kdsl.loads('student = model("kdsl.zoo:digits_cnn")\nrecord s = output of student\n'
                      'loss task = cross_entropy(s, batch.target)\ntrain {\n  log = ["mlflow"]\n}\n')
    cfg = resolve_config(spec, {})
    assert cfg.log == ["mlflow"] and cfg.sources["log"] == "spec"
    cfg = resolve_config(spec, {"log": "tensorboard, wandb", "tensorboard": True})
    from kdsl.training.loggers import logger_names

    assert cfg.log == ["tensorboard", "wandb"] and logger_names(cfg) == ["tensorboard", "wandb"]
    with pytest.raises(KdslError) as err:
        resolve_config(spec, {"log": "mlflow,neptune"})
    assert err.value.diagnostics[0].code == "KD701" and "--log" in err.value.diagnostics[0].message


@pytest.mark.parametrize("name,package", [("mlflow", "mlflow-skinny"), ("wandb", "wandb")])
def test_missing_tracker_is_kd726_with_install_line(tmp_path, monkeypatch, name, package):
    """A tracker package that cannot be imported: KD726 with its install line, before the run
    writes anything."""
    monkeypatch.setitem(sys.modules, name, None)  # `import NAME` raises ImportError
    with pytest.raises(KdslError) as err:
        kdsl.train(KD_SPEC, out=str(tmp_path / "run"), epochs=1, steps_per_epoch=2, threads=1, log=name)
    diag = err.value.diagnostics[0]
    assert diag.code == "KD726" and f"--log {name}" in diag.message
    assert any(f"pip install {package}" in h for h in diag.hints)
    assert not (tmp_path / "run").exists()


def test_log_flag_of_kdsl_train(tmp_path):
    """`--log` on the command line: a comma-separated list, each name checked (KD701)."""
    from typer.testing import CliRunner

    from kdsl.cli.app import app

    result = CliRunner().invoke(app, ["train", KD_SPEC, "--log", "mlflow,wandb,neptune", "--out", str(tmp_path / "r")],
                                env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code != 0 and "KD701" in result.output and "--log" in result.output
    assert "neptune" in result.output and not (tmp_path / "r").exists()
    cfg = resolve_config(kdsl.load(KD_SPEC), {"log": "mlflow,wandb"})
    assert cfg.log == ["mlflow", "wandb"] and cfg.sources["log"] == "flag"
    from kdsl.training.config import given_flags
    from kdsl.catalog.settings import SETTINGS

    assert given_flags(cfg, SETTINGS) == ["--log", "mlflow,wandb"]  # as environment.json and hints show it
