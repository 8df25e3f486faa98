"""Evaluation on the validation set, by task.

* ``classification``: top-1 and top-5 accuracy (%) and mean cross-entropy, of a model whose output
  is class scores ``[batch, classes]`` (or an output holding them first);
* ``lm`` (causal language modelling): over every position ``t`` whose next token has a label
  (``labels[:, t + 1] != -100``, and ``attention_mask[:, t + 1] != 0`` when the batch has one),
  the mean negative log-likelihood of that token (``loss``), the perplexity ``exp(loss)``
  (``ppl``), and the next-token accuracy (%) of the argmax (``token_acc``). The logits ``[batch,
  tokens, vocabulary]`` are a tensor or an output holding ``logits`` (or them first). When the
  batches carry prompts (:mod:`kdsl.prompt_batches`) and the model can generate, also
  ``exact_match`` (%): the greedy completions of the prompts that equal the batch's completion
  token for token (its end token included, so a model must also stop where the answer does).

A model whose output does not fit the task (a generator, a feature extractor) is not evaluated.
Metric rows name the task's metrics ``val_NAME`` (the student) and ``val_NAME/MODEL`` (peers).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdsl.core.diagnostics import error
from kdsl.runtime.generation import can_generate, complete
from kdsl.text_data import IGNORE_INDEX
from kdsl.training.batches import model_call
from kdsl.compiler.snapshot import reshard
from kdsl.training.sharding import even_forwards
from kdsl.training.distributed import Dist, all_reduce_sum, autocast

# each task's metrics, in the order tables show them (which one picks the best epoch:
# kdsl.training.metrics.primary_metric)
TASK_METRICS: Dict[str, Tuple[str, ...]] = {"classification": ("top1", "top5", "loss"),
                                            "lm": ("ppl", "loss", "token_acc", "exact_match")}
# each task's primary metric, which picks the best epoch by default: (name, higher is better)
PRIMARY: Dict[str, Tuple[str, bool]] = {"classification": ("top1", True), "lm": ("ppl", False)}


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _first_output(out: Any) -> Any:
    """The scores in a model's output: the tensor, ``.logits``/``["logits"]``, or the first element."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    logits = getattr(out, "logits", None)
    if logits is not None:
        return logits
    return out[0] if isinstance(out, (tuple, list)) and out else out


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: Optional[str],
             d: Dist, task: str = "classification", inputs=None) -> Optional[Dict[str, float]]:
    """The task's metrics of ``model`` on the loader (summed over every rank's shard); None when
    the model's output does not fit the task (decided on the first batch, the same on every
    rank). ``inputs``: the batch fields models are called with (see :mod:`.batches`)."""
    was_training = model.training
    model.eval()
    sums = [0.0] * 6
    add = _lm_sums if task == "lm" else _classification_sums
    generates = task == "lm" and can_generate(model)
    call = None
    try:
        for batch in loader:
            call = model_call(batch, inputs, device)
            with autocast(device, amp):
                out = _first_output(model(*call.args, **call.kwargs))
            part = add(out, call)
            if part is None:
                return None
            part += exact_match_sums(model, call.fields) if generates else [0.0, 0.0]
            sums = [a + b for a, b in zip(sums, part)]
        for _ in range(even_forwards(model, len(loader), d)):  # a sharded model's forward is collective
            with autocast(device, amp):
                model(*call.args, **call.kwargs)
    finally:
        model.train(was_training)
        reshard(model)  # an optimizer built after evaluation must see the shards
    sums = all_reduce_sum(sums, d, device)
    return _lm_metrics(*sums[:3], *sums[4:]) if task == "lm" else _classification_metrics(*sums[:4])


def exact_match_sums(model: nn.Module, fields: Dict[str, Any]) -> List[float]:
    """(greedy completions equal to the batch's completion, prompts) of one batch; zeros when the
    batch has no prompts."""
    if "prompt_ids" not in fields or "labels" not in fields:
        return [0.0, 0.0]
    labels = fields["labels"]
    answers = [row[row != IGNORE_INDEX].tolist() for row in labels]
    width = max((len(a) for a in answers), default=0)
    if width == 0:
        return [0.0, 0.0]
    made = complete(model, fields["prompt_ids"], fields["prompt_mask"], max_new_tokens=width)
    hits = sum(1.0 for got, want in zip(made, answers) if got[:len(want)] == want)
    return [hits, float(len(answers))]


def _classification_sums(out: Any, call) -> Optional[List[float]]:
    y = call.target
    if y is None or not _class_scores(out, y):
        return None
    out = out.float()
    k = min(5, out.shape[1])
    hits = out.topk(k, dim=1).indices.eq(y.view(-1, 1))
    loss = torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
    return [hits[:, 0].sum().item(), hits.any(dim=1).sum().item(), loss, float(y.numel())]


def _classification_metrics(correct1: float, correct5: float, loss_sum: float, count: float) -> Dict[str, float]:
    count = max(count, 1.0)
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}


def _class_scores(out: Any, y: torch.Tensor) -> bool:
    return (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == 2
            and out.shape[0] == y.shape[0] and (y.numel() == 0 or out.shape[1] > int(y.max())))


def lm_token_sums(logits: torch.Tensor, labels: torch.Tensor,
                  attention_mask: Optional[torch.Tensor] = None) -> Tuple[float, float, float]:
    """(summed next-token NLL, correct argmax predictions, counted positions) of one batch:
    position ``t``'s logits against ``labels[:, t + 1]``, where that label is not -100 and (with a
    mask) that token is not padding."""
    logits, targets = logits[:, :-1], labels[:, 1:]
    if logits.dtype != torch.float64:  # half precision is summed in float32; float64 stays
        logits = logits.float()
    keep = targets != IGNORE_INDEX
    if attention_mask is not None:
        keep = keep & (attention_mask[:, 1:] != 0)
    picked, gold = logits[keep], targets[keep]
    if gold.numel() == 0:
        return 0.0, 0.0, 0.0
    nll = torch.nn.functional.cross_entropy(picked, gold, reduction="sum").item()
    return nll, float((picked.argmax(-1) == gold).sum()), float(gold.numel())


def _lm_sums(out: Any, call) -> Optional[List[float]]:
    labels = call.fields.get("labels")
    if labels is None:
        raise error("KD742", "task lm needs batches with a 'labels' field (next-token targets, -100 "
                    f"where none); these have {', '.join(call.fields) or 'no named fields'}",
                    hint='use data such as kdsl.data:text, or task = "classification"')
    if not (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == 3
            and out.shape[:2] == labels.shape and (labels.numel() == 0 or out.shape[-1] > int(labels.max()))):
        return None
    return [*lm_token_sums(out, labels, call.fields.get("attention_mask")), 0.0]


def _lm_metrics(nll_sum: float, correct: float, count: float, hits: float = 0.0,
                prompts: float = 0.0) -> Dict[str, float]:
    count = max(count, 1.0)
    loss = nll_sum / count
    out = {"ppl": math.exp(min(loss, 700.0)), "loss": loss, "token_acc": 100.0 * correct / count}
    if prompts:
        out["exact_match"] = 100.0 * hits / prompts
    return out


def evaluate_models(distiller, names: List[str], loader: DataLoader, device: torch.device,
                    amp: Optional[str], d: Dist, task: str = "classification",
                    inputs=None) -> Dict[str, Dict[str, float]]:
    """The metrics and parameter count of each named model whose output fits the task, by name."""
    out = {}
    for name in names:
        model = distiller.model(name)
        metrics = evaluate(model, loader, device, amp, d, task, inputs)
        if metrics is not None:
            out[name] = dict(metrics, params=param_count(model))
    return out


def val_row(metrics: Optional[Dict[str, float]], suffix: str = "") -> Dict[str, float]:
    """A model's metrics as the keys of a metrics row: ``val_NAME`` + ``suffix`` (``/MODEL``)."""
    return {f"val_{k}{suffix}": v for k, v in (metrics or {}).items() if k != "params"}


def row_metrics(row: Dict[str, Any], task: str, suffix: str = "") -> Optional[Dict[str, float]]:
    """The metrics of :func:`val_row` read back from a row; None when the row has none."""
    keys = TASK_METRICS.get(task, TASK_METRICS["classification"])
    if f"val_{keys[0]}{suffix}" not in row:
        return None
    return {k: row[f"val_{k}{suffix}"] for k in keys if f"val_{k}{suffix}" in row}


def result_rows(distiller, teachers: Dict[str, Dict[str, float]], peers: Dict[str, Dict[str, float]],
                student: Optional[Dict[str, float]]) -> List[Dict[str, Any]]:
    """One row per evaluated model (frozen teachers, then trained peers, then the student):
    model, role, params, then the task's metrics (top1, top5, loss; or ppl, loss, token_acc)."""
    rows = []
    for role, models in (("teacher", teachers), ("peer", peers)):
        for name, m in models.items():
            rows.append(dict(model=name, role=role, params=m["params"],
                             **{k: v for k, v in m.items() if k != "params"}))
    if student is not None:
        rows.append(dict(model=distiller.student_name, role="student", params=param_count(distiller.student),
                         **{k: v for k, v in student.items() if k != "params"}))
    return rows
