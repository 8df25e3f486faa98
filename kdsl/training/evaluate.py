"""Evaluation of classifiers on the validation set: top-1, top-5, mean cross-entropy.

A model is evaluated when it produces class scores (a ``(batch, classes)`` tensor, or an output
holding one first): the student, the teachers, trained peers; a generator does not."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdsl.training.distributed import Dist, all_reduce_sum, autocast


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: Optional[str],
             d: Dist) -> Optional[Dict[str, float]]:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of a classifier on the loader (summed
    over every rank's shard); None when the model's output is not class scores for the loader's
    labels (decided on the first batch, the same on every rank)."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = count = 0.0
    try:
        for x, y, _ in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(x)
            if not isinstance(out, torch.Tensor):
                out = getattr(out, "logits", out[0] if isinstance(out, (tuple, list)) else out)
            if not _class_scores(out, y):
                return None
            out = out.float()
            loss_sum += torch.nn.functional.cross_entropy(out, y, reduction="sum").item()
            k = min(5, out.shape[1])
            top = out.topk(k, dim=1).indices
            hits = top.eq(y.view(-1, 1))
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            count += y.numel()
    finally:
        model.train(was_training)
    correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], d, device)
    count = max(count, 1.0)
    return {"top1": 100.0 * correct1 / count, "top5": 100.0 * correct5 / count, "loss": loss_sum / count}


def _class_scores(out: Any, y: torch.Tensor) -> bool:
    return (isinstance(out, torch.Tensor) and out.is_floating_point() and out.dim() == 2
            and out.shape[0] == y.shape[0] and (y.numel() == 0 or out.shape[1] > int(y.max())))


def evaluate_models(distiller, names: List[str], loader: DataLoader, device: torch.device,
                    amp: Optional[str], d: Dist) -> Dict[str, Dict[str, float]]:
    """The metrics and parameter count of each named model that produces class scores, by name."""
    out = {}
    for name in names:
        model = distiller.model(name)
        metrics = evaluate(model, loader, device, amp, d)
        if metrics is not None:
            out[name] = dict(metrics, params=param_count(model))
    return out


def result_rows(distiller, teachers: Dict[str, Dict[str, float]], peers: Dict[str, Dict[str, float]],
                student: Optional[Dict[str, float]]) -> List[Dict[str, Any]]:
    """One row per evaluated model (frozen teachers, then trained peers, then the student):
    model, role, params, top1, top5, loss."""
    rows = []
    for role, models in (("teacher", teachers), ("peer", peers)):
        for name, m in models.items():
            rows.append(dict(model=name, role=role, params=m["params"], top1=m["top1"],
                             top5=m["top5"], loss=m["loss"]))
    if student is not None:
        rows.append(dict(model=distiller.student_name, role="student", params=param_count(distiller.student),
                         top1=student["top1"], top5=student["top5"], loss=student["loss"]))
    return rows
