"""A loader's batch as a model call: positional ``(input, target, index)`` batches, or batches of
named fields (dict items, e.g. ``kdsl.data:text``'s ``input_ids``, ``attention_mask``,
``labels``) whose ``inputs`` fields are passed to every model by keyword. Every field (and
``index``) is a batch field the losses read as ``batch.NAME``. Also the run's task, from the
train block or else from the data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple  # noqa: F401

import torch

from kdsl.core.diagnostics import error
from kdsl.core.suggest import did_you_mean
from kdsl.text_data import default_inputs

TASKS = ("classification", "lm")


@dataclass
class ModelCall:
    """How to call the models on one batch, and the batch fields the losses see."""

    args: Tuple[Any, ...] = ()
    kwargs: Dict[str, Any] = field(default_factory=dict)
    target: Any = None
    fields: Dict[str, Any] = field(default_factory=dict)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def model_call(batch: Any, inputs: Optional[Sequence[str]], device: torch.device) -> ModelCall:
    """``batch`` (as kdsl's loaders give it) on ``device`` as a :class:`ModelCall`.

    A dict batch calls models with ``model(**{name: batch[name] for name in inputs})``
    (``inputs`` None: :func:`default_inputs`); ``batch.target`` is its ``target`` field if any.
    A ``(x, y, index)`` batch calls ``model(x)``; it has no named fields to choose from, so
    ``inputs`` is an error there (KD741). A name the batch lacks is KD740.
    """
    if isinstance(batch, dict):
        fields = {k: _to(v, device) for k, v in batch.items()}
        names = list(inputs) if inputs is not None else list(default_inputs(fields))
        missing = [n for n in names if n not in fields]
        if missing:
            raise error("KD740", f"inputs names '{missing[0]}', which the data's batches do not have "
                        f"(their fields: {', '.join(fields)})",
                        hint=did_you_mean(missing[0], list(fields)) or "name fields of the data's items")
        if not names:
            raise error("KD740", f"the data's batches have no field to call the models with "
                        f"(fields: {', '.join(fields)})", hint='set inputs = ["FIELD", ...] in the train block')
        return ModelCall((), {n: fields[n] for n in names}, fields.get("target"), fields)
    x, y, idx, *contrast = batch  # (x, y, index[, contrast_idx]): contrast_negatives adds the last
    if inputs is not None:
        raise error("KD741", "inputs names batch fields, but the data's items are (input, target) "
                    "pairs, which have none: models are called with the input",
                    hint="remove inputs from the train block, or use data whose items are dicts")
    fields = {"index": _to(idx, device), **({"contrast_idx": _to(contrast[0], device)} if contrast else {})}
    return ModelCall((_to(x, device),), {}, _to(y, device), fields)


def dataset_task(dataset: Any) -> Optional[str]:
    """The task a dataset declares (``dataset.task``, through kdsl's wrappers), or None."""
    for _ in range(4):  # DataLoader -> _Indexed -> the factory's dataset (-> a Subset's)
        task = getattr(dataset, "task", None)
        if task in TASKS:
            return task
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def run_task(cfg, data) -> str:
    """The task whose metrics the run reports: the train block's ``task``, else the data's,
    else classification."""
    if cfg.task is not None:
        return cfg.task
    if data is not None:
        return dataset_task(data.val) or dataset_task(data.train) or "classification"
    return "classification"
