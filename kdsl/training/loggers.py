"""Logging integrations: where a run's scalars go besides metrics.jsonl (TensorBoard; MLflow and
W&B in :mod:`kdsl.training.trackers`).

A :class:`Logger` takes named scalars at a step and is closed at the end; :class:`RunLog` turns
the trainer's events into scalars and hands them to every logger. Each integration is one class
with ``log_scalars`` and ``close``, imported only when ``log`` (``--log tensorboard,mlflow,wandb``)
asks for it, so that kdsl itself depends on none of them.

What is logged, against the global step (the optimizer steps done), so that every tag shares one
x axis and a resumed run continues it:

* every ``REPORT_EVERY`` steps (:mod:`kdsl.training.loop`): ``loss/total``; each term's weighted
  value ``loss/TERM`` and unweighted value ``loss_unweighted/TERM``; each term's weight
  ``weight/TERM`` (constant unless scheduled); each phase's learning rate (``lr`` in a stage
  without phases, ``lr/PHASE`` in one with them; ``/groupN`` per parameter group past the first).
  In a stage with declared phases TERM is ``PHASE/TERM``. A phase repeated within a step
  contributes its last repeat.
* at the end of each epoch: every number of the epoch's metrics row (train_loss, train/TERM,
  val_top1, val_loss, lr, ...) under ``epoch/`` + its metrics.jsonl name, and ``epoch/epoch``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Protocol

from kdsl.core.diagnostics import error

TENSORBOARD_FOLDER = "tensorboard"


class Logger(Protocol):
    """Where scalars go: ``log_scalars(step, {tag: value})`` any number of times, then ``close()``."""

    def log_scalars(self, step: int, scalars: Dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Event files under ``folder`` (torch.utils.tensorboard's SummaryWriter). ``purge_step``: a
    resumed run's first step; TensorBoard drops what an earlier process logged from that step on
    (the steps after the checkpoint it resumes from, which are trained again)."""

    def __init__(self, folder: str, purge_step: Optional[int] = None) -> None:
        self.writer = _summary_writer()(log_dir=folder, purge_step=purge_step)

    def log_scalars(self, step: int, scalars: Dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _summary_writer():
    """torch's SummaryWriter class; KD726 when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise error("KD726", "--tensorboard needs the tensorboard package, which is not installed",
                    hint="pip install tensorboard (or pip install 'kdsl[tensorboard]'), or run "
                    "without --tensorboard") from None
    return SummaryWriter


def logger_names(cfg) -> List[str]:
    """The trackers a run logs to: ``log``'s, and tensorboard for ``--tensorboard`` (its alias)."""
    names = (["tensorboard"] if cfg.tensorboard else []) + list(getattr(cfg, "log", None) or [])
    return list(dict.fromkeys(names))


def logger_folders(cfg) -> List[str]:
    """The run-directory folders the asked-for trackers write (claimed in the run's manifest)."""
    from kdsl.training.trackers import MLFLOW_FOLDER, WANDB_FOLDER

    folders = {"tensorboard": TENSORBOARD_FOLDER, "mlflow": MLFLOW_FOLDER, "wandb": WANDB_FOLDER}
    return [folders[n] + "/" for n in logger_names(cfg)
            if n != "mlflow" or not os.environ.get("MLFLOW_TRACKING_URI")]


def check_loggers(cfg) -> None:
    """KD726 when a logger the settings ask for cannot be imported: checked before the run
    writes anything."""
    from kdsl.training.trackers import import_mlflow, import_wandb

    checks = {"tensorboard": _summary_writer, "mlflow": import_mlflow, "wandb": import_wandb}
    for name in logger_names(cfg):
        checks[name]()


class RunLog:
    """The run's loggers, fed by the trainer (rank 0 only)."""

    def __init__(self, loggers: List[Logger]) -> None:
        self.loggers = loggers

    @classmethod
    def open(cls, cfg, out: str, step: int, spec=None, resumed: bool = False) -> "RunLog":
        """The loggers the settings ask for (``log``, ``tensorboard``); ``step``: where the run
        starts; ``spec`` and ``resumed`` tell the trackers what the run is (a resumed run
        continues its tracker run)."""
        loggers: List[Logger] = []
        for name in logger_names(cfg):
            if name == "tensorboard":
                # what an earlier process logged after the checkpoint (steps step+1...) is trained again
                folder = os.path.join(out, TENSORBOARD_FOLDER)
                loggers.append(TensorBoardLogger(folder, purge_step=step + 1 if step else None))
                continue
            from kdsl.training.trackers import MLflowLogger, WandbLogger

            tracker = MLflowLogger if name == "mlflow" else WandbLogger
            tags = {"kdsl.spec": spec.file if spec is not None else ""}
            try:
                loggers.append(tracker(out, cfg.describe(), tags, resumed))
            except BaseException:
                cls(loggers).close()
                raise
        return cls(loggers)

    def step(self, step: int, results, stage) -> None:
        """The scalars of one step (``results``: the step's ``(phase, StepResult)`` pairs)."""
        if self.loggers:
            self._send(step, step_scalars(results, stage))

    def epoch(self, step: int, row: Dict[str, Any]) -> None:
        """The epoch's metrics row."""
        if self.loggers:
            self._send(step, epoch_scalars(row))

    def validation(self, step: int, row: Dict[str, Any]) -> None:
        """A validation within an epoch (``val_every``): its metrics as ``val/NAME``."""
        if self.loggers:
            self._send(step, {f"val/{k[4:]}": float(v) for k, v in row.items() if k.startswith("val_")})

    def _send(self, step: int, scalars: Dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_scalars(step, scalars)

    def close(self) -> None:
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close()


def step_scalars(results, stage) -> Dict[str, float]:
    """The tags of one step (see the module doc) from its ``(phase, StepResult)`` pairs."""
    last: Dict[str, Any] = dict(results)  # a repeated phase: its last repeat
    out: Dict[str, float] = {"loss/total": float(sum(r.loss.detach().float().item() for r in last.values()))}
    for phase, result in last.items():
        for name, value in result.losses.items():
            key = stage.key(phase, name)
            out[f"loss/{key}"] = float(value.detach().float().item())
            if name in result.unweighted:
                out[f"loss_unweighted/{key}"] = float(result.unweighted[name].detach().float().item())
            if name in result.weights:
                out[f"weight/{key}"] = float(result.weights[name])
    for phase in stage.phases:
        base = f"lr/{phase.name}" if stage.phased else "lr"
        for i, group in enumerate(phase.optimizer.param_groups):
            out[base if i == 0 else f"{base}/group{i}"] = float(group["lr"])
    return out


def epoch_scalars(row: Dict[str, Any]) -> Dict[str, float]:
    """Every number of a metrics row, as ``epoch/NAME``."""
    return {f"epoch/{k}": float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
