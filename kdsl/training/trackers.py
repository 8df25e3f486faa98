"""Experiment trackers behind :class:`kdsl.training.loggers.Logger`: MLflow and Weights & Biases.

Each is imported only when ``log`` names it (``--log mlflow,wandb``); a missing package is KD726
with its install line. Both record the same things:

* the settings, each with where its value came from (MLflow params ``NAME`` and
  ``NAME.source``; W&B config ``NAME`` and ``sources``), and the spec's file and fingerprint;
* every scalar :class:`~kdsl.training.loggers.RunLog` sends, per step and per epoch, against the
  run's global step;
* at the end (a finished, failed or interrupted run alike), the run directory's files as
  artifacts: ``spec/`` (the spec and what it includes, as read), metrics, summary, environment,
  curves and weights; never ``checkpoint.pt`` (the resumable state, not a result) nor the trackers'
  own folders.

Where: MLflow's ``MLFLOW_TRACKING_URI`` when set, else a SQLite store ``OUT/mlflow/mlflow.db``
with artifacts in ``OUT/mlflow/artifacts`` (the experiment: ``MLFLOW_EXPERIMENT_NAME``, else
"kdsl"); W&B's own settings (``WANDB_MODE=offline``: ``OUT/wandb/offline-run-*``; the project:
``WANDB_PROJECT``, else "kdsl"). A resumed run continues the tracker run its first process
started: MLflow's is found by its ``kdsl.run_dir`` tag, W&B's id is kept in ``OUT/wandb/kdsl-run-id``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Dict, Iterator, List, Optional, Tuple

from kdsl.core.diagnostics import error

MLFLOW_FOLDER = "mlflow"
WANDB_FOLDER = "wandb"
_WANDB_ID = "kdsl-run-id"
# what is never uploaded: the resumable state, and the trackers' own stores
_NOT_ARTIFACTS = ("checkpoint.pt", "shards", "tensorboard", MLFLOW_FOLDER, WANDB_FOLDER)  # shards: fsdp's checkpoint


def missing(name: str, package: str, extra: str):
    """KD726 for ``--log NAME`` without its package."""
    return error("KD726", f"--log {name} needs the {package} package, which is not installed",
                 hint=f"pip install {package} (or pip install 'kdsl[{extra}]'), or run without {name} in --log")


def import_mlflow():
    try:
        import mlflow  # noqa: F401  (the package; the client alone imports less of it)
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise missing("mlflow", "mlflow-skinny", "mlflow") from None
    return MlflowClient


def import_wandb():
    try:
        import wandb
    except ImportError:
        raise missing("wandb", "wandb", "wandb") from None
    return wandb


def settings_with_sources(config: Dict) -> Tuple[Dict[str, object], Dict[str, str]]:
    """(each setting's value, where it came from) of ``TrainConfig.describe()``."""
    values = {k: v for k, v in config.items() if k != "sources"}
    return values, dict(config.get("sources") or {})


def run_files(out: str) -> Iterator[Tuple[str, str]]:
    """(path, its folder relative to ``out``) of each run file a tracker uploads."""
    for root, dirs, files in os.walk(out):
        rel = os.path.relpath(root, out)
        if rel == ".":
            dirs[:] = sorted(d for d in dirs if d not in _NOT_ARTIFACTS)
        for name in sorted(files):
            if rel == "." and name in _NOT_ARTIFACTS or ".tmp-" in name:
                continue
            yield os.path.join(root, name), ("" if rel == "." else rel.replace(os.sep, "/"))


class MLflowLogger:
    """One MLflow run per kdsl run (continued by ``--resume``)."""

    def __init__(self, out: str, config: Dict, tags: Dict[str, str], resumed: bool) -> None:
        client_class = import_mlflow()
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        folder = os.path.abspath(os.path.join(out, MLFLOW_FOLDER))
        if not uri:
            os.makedirs(folder, exist_ok=True)
            uri = "sqlite:///" + os.path.join(folder, "mlflow.db")
        self.out = out
        self.client = client_class(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "kdsl"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        else:  # our own store keeps its artifacts beside it; a given server decides its own
            location = None if os.environ.get("MLFLOW_TRACKING_URI") else "file:" + os.path.join(folder, "artifacts")
            experiment = self.client.create_experiment(name, artifact_location=location)
        run_dir = os.path.abspath(out)
        earlier = self._earlier(experiment, run_dir) if resumed else None
        if earlier is not None:
            self.run_id = earlier
            self.client.update_run(earlier, status="RUNNING")
            return
        tags = dict(tags, **{"kdsl.run_dir": run_dir})
        self.run_id = self.client.create_run(experiment, run_name=os.path.basename(run_dir), tags=tags).info.run_id
        self._log_settings(config)

    def _earlier(self, experiment: str, run_dir: str) -> Optional[str]:
        escaped = run_dir.replace("'", "\\'")
        runs = self.client.search_runs([experiment], filter_string=f"tags.`kdsl.run_dir` = '{escaped}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def _log_settings(self, config: Dict) -> None:
        from mlflow.entities import Param

        values, sources = settings_with_sources(config)
        params: List[Param] = []
        for name, value in values.items():
            params.append(Param(name, json.dumps(value)[:6000]))
            params.append(Param(f"{name}.source", sources.get(name, "default")))
        for i in range(0, len(params), 100):  # the store's batch limit
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log_scalars(self, step: int, scalars: Dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, step) for tag, value in scalars.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def close(self) -> None:
        for path, folder in run_files(self.out):
            self.client.log_artifact(self.run_id, path, folder or None)
        self.client.set_terminated(self.run_id)


class WandbLogger:
    """One W&B run per kdsl run (continued by ``--resume`` under the same id)."""

    def __init__(self, out: str, config: Dict, tags: Dict[str, str], resumed: bool) -> None:
        wandb = import_wandb()
        self.out = os.path.abspath(out)
        folder = os.path.join(self.out, WANDB_FOLDER)
        os.makedirs(folder, exist_ok=True)
        id_file = os.path.join(folder, _WANDB_ID)
        run_id = None
        if resumed and os.path.isfile(id_file):
            with open(id_file, encoding="utf-8") as f:
                run_id = f.read().strip() or None
        if run_id is None:
            run_id = uuid.uuid4().hex[:12]  # W&B ids: letters and digits
            with open(id_file, "w", encoding="utf-8") as f:
                f.write(run_id)
        values, sources = settings_with_sources(config)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "kdsl", dir=self.out, id=run_id,
                              resume="allow", name=os.path.basename(self.out),
                              config=dict(values, sources=sources, **tags), reinit="create_new")

    def log_scalars(self, step: int, scalars: Dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        for path, _ in run_files(self.out):
            self.run.save(path, base_path=self.out, policy="now")
        self.run.finish()
