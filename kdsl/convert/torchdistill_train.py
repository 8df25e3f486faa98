"""A torchdistill config's training schedule as the spec's train block: the run's epochs (the
stages' sum), the first stage's optimizer and scheduler (``scheduling_step``), ``max_grad_norm``
and the training data loader's batch size. Every finding is a comment above the block."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from kdsl.convert import values
from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport, Where
from kdsl.convert.spec import SpecWriter, expr
from kdsl.convert.training import optimizer_call, schedule_call, setting
from kdsl.lang import ir


def get(d: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present (torchdistill 1.x ``key``/``kwargs``, 0.x ``type``/``params``)."""
    return next((d[k] for k in keys if isinstance(d, dict) and k in d), None)


def options(entry: Located, path: str) -> Located:
    """An entry's ``kwargs`` (torchdistill 1.x) or ``params`` (0.x), checked to be a mapping."""
    return values.mapping(entry, "kwargs" if "kwargs" in entry else "params", f"{path}.kwargs")


def train_block(train: Located, stages: List[Tuple[str, Located]], writer: SpecWriter,
                report: ConversionReport) -> None:
    """The run's settings from the first stage (or ``train`` itself)."""
    first = stages[0][1] if stages else train
    settings: List[ir.TrainSetting] = []
    findings: List[Any] = []
    counts = [values.integer(stage, "num_epochs", None, f"train.{name}.num_epochs")
              for name, stage in stages]
    epochs = sum(counts) if stages and all(n is not None for n in counts) else \
        values.integer(train, "num_epochs", None, "train.num_epochs")
    if epochs is not None:
        settings.append(setting("epochs", expr(epochs)))
    key = "train" if first is train else f"train.{stages[0][0]}"
    made = stage_optimizer(first, f"{key}.optimizer", report, findings)
    if made is not None:
        settings.append(setting("optimizer", made))
    scheduler = values.mapping(first, "scheduler", f"{key}.scheduler")
    schedule = _scheduler(scheduler, epochs, f"{key}.scheduler", first.at("scheduler"), report,
                          findings) if scheduler else None
    if schedule is not None:
        settings.append(setting("lr_schedule", schedule))
    if isinstance(first.get("max_grad_norm"), (int, float)):
        settings.append(setting("grad_clip", expr(float(first["max_grad_norm"]))))
    loader = values.mapping(first, "train_data_loader", f"{key}.train_data_loader")
    size = values.integer(options(loader, f"{key}.train_data_loader"), "batch_size",
                          loader.get("batch_size"), f"{key}.train_data_loader.batch_size")
    if size is not None:
        settings.append(setting("batch_size", expr(size)))
    if settings:
        writer.add("train", ir.TrainDecl(settings=tuple(settings)), findings)
    else:
        for finding in findings:
            writer.note(finding)


def stage_optimizer(stage: Located, key: str, report: ConversionReport,
                    findings: List[Any]) -> Optional[ir.Call]:
    """The stage's ``optimizer`` as a kdsl optimizer call (None when it has none)."""
    optimizer = values.mapping(stage, "optimizer", key)
    if not optimizer:
        return None
    made, finding = optimizer_call(str(get(optimizer, "key", "type")), options(optimizer, key),
                                   report, key, stage.at("optimizer"))
    findings.append(finding)
    return made


def _scheduler(scheduler: Located, epochs: Optional[int], key: str, where: Where,
               report: ConversionReport, findings: List[Any]) -> Optional[ir.Call]:
    kind = str(get(scheduler, "key", "type"))
    step = scheduler.get("scheduling_step", 0)
    if isinstance(step, int) and not isinstance(step, bool) and step > 0:
        # torchdistill steps such a scheduler every `step` iterations, kdsl at epoch ends
        every = "every iteration" if step == 1 else f"every {step} iterations"
        findings.append(report.add(f"{key}.scheduling_step", "approximated", f"torchdistill "
                                   f"steps this scheduler {every}; kdsl's schedules step per "
                                   "epoch", where))
    made, finding = schedule_call(kind, options(scheduler, key), epochs, report, key, where)
    findings.append(finding)
    return made
