"""The loss terms of an epoch, summed step by step and averaged over every rank at its end.

A term's value for the epoch is the mean of its weighted values over the times it ran (a phase
repeated 5 times a step runs its terms 5 times). ``train_loss`` is the sum over the stage's
phases of the mean of each phase's total. In a stage with declared phases the terms are named
``PHASE/TERM``; otherwise by the loss's name alone, as a spec without phases always was.

:func:`primary_metric` and :func:`best_epoch` say which epoch of a run is its best (best.pt).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from kdsl.catalog.settings import METRICS
from kdsl.core.diagnostics import error
from kdsl.training.distributed import Dist, all_reduce_sum


class EpochSums:
    """Running sums of one epoch: each phase's total loss and each (named) weighted term."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: Dict[str, torch.Tensor] = {}
        self.runs: Dict[str, int] = {}  # phase -> times it ran
        self.sums: Dict[str, torch.Tensor] = {}
        self.counts: Dict[str, int] = {}  # term key -> times it was added

    def add(self, phase: str, result, stage) -> None:
        """One run of ``phase``: its total and its weighted terms (``stage`` names the terms)."""
        if phase not in self.totals:
            self.totals[phase] = torch.zeros((), dtype=torch.float64, device=self.device)
            self.runs[phase] = 0
        self.totals[phase] += result.loss.detach().double()
        self.runs[phase] += 1
        for name, v in result.losses.items():
            k = stage.key(phase, name)
            self.sums[k] = self.sums[k] + v.detach().double() if k in self.sums else v.detach().double()
            self.counts[k] = self.counts.get(k, 0) + 1

    def state_dict(self) -> Dict[str, Any]:
        """The sums so far as plain data (a checkpoint within an epoch keeps them)."""
        return {"totals": {k: v.cpu() for k, v in self.totals.items()}, "runs": dict(self.runs),
                "sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.totals = {k: v.to(self.device) for k, v in state["totals"].items()}
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.runs, self.counts = dict(state["runs"]), dict(state["counts"])

    def means(self) -> Dict[str, float]:
        """Each term's mean so far (on this rank): for progress events."""
        return {k: (v / self.counts[k]).item() for k, v in self.sums.items()}

    def row(self, d: Dist, device: torch.device) -> Dict[str, float]:
        """``train_loss`` and ``train/TERM`` of the epoch, over every rank."""
        phases, keys = list(self.totals), list(self.sums)
        values: List[float] = [self.totals[p].item() for p in phases] + [self.sums[k].item() for k in keys]
        values += [float(self.runs[p]) for p in phases] + [float(self.counts[k]) for k in keys]
        reduced = all_reduce_sum(values, d, device)
        n_p, n_k = len(phases), len(keys)
        totals, sums = reduced[:n_p], reduced[n_p:n_p + n_k]
        runs, counts = reduced[n_p + n_k:2 * n_p + n_k], reduced[2 * n_p + n_k:]
        loss = 0.0
        for total, n in zip(totals, runs):
            loss += total / max(n, 1.0)
        row = {"train_loss": loss}
        row.update({f"train/{k}": s / max(n, 1.0) for k, s, n in zip(keys, sums, counts)})
        return row




class EpochSumsState:
    """The form of :meth:`EpochSums.state_dict`, checked before a checkpoint's is used."""

    @staticmethod
    def fits(state: Any) -> bool:
        if not isinstance(state, dict) or set(state) != {"totals", "runs", "sums", "counts"}:
            return False
        tensors = all(isinstance(d, dict) and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in d.values())
                      for d in (state["totals"], state["sums"]))
        counts = all(isinstance(d, dict) and all(isinstance(v, int) and v >= 0 for v in d.values())
                     for d in (state["runs"], state["counts"]))
        return tensors and counts and set(state["totals"]) == set(state["runs"]) \
            and set(state["sums"]) == set(state["counts"])


def early_stop(history: List[Dict[str, Any]], best: Optional[Dict[str, Any]],
               patience: Optional[int]) -> Optional[str]:
    """Why the run stops early (``patience`` epochs after its ``best`` epoch, :func:`best_epoch`),
    or None: decided from the history alone, so that a resumed run decides the same."""
    if not (patience and best and history):
        return None
    waited = history[-1]["epoch"] - best["epoch"]
    if waited < patience:
        return None
    return (f"early stop after epoch {history[-1]['epoch']}: {best['metric']} has not improved for {waited} "
            f"epochs (patience {patience}); best epoch {best['epoch']}")


def primary_metric(row: Dict[str, Any], task: Optional[str] = None,
                   name: Optional[str] = None) -> Optional[Tuple[str, float, str]]:
    """The metric that ranks epochs in ``row`` (a metrics row): ``(name, value, mode)``, mode
    "max" or "min" (:data:`kdsl.catalog.settings.METRICS`); None when the row has no such metric
    (a run without validation data). ``name`` is the ``best_metric`` setting; otherwise the
    task's primary metric (:data:`kdsl.training.evaluate.PRIMARY`: top-1, or perplexity for a
    language model), and without a task what the row holds: top-1, else the validation loss."""
    if name is None:
        from kdsl.training.evaluate import PRIMARY

        name = f"val_{PRIMARY[task][0]}" if task in PRIMARY else \
            next((m for m in ("val_top1", "val_loss") if m in row), None)
    if name is None or name not in row:
        return None
    return name, float(row[name]), METRICS.get(name, "min" if "loss" in name or "ppl" in name else "max")


def best_epoch(history: List[Dict[str, Any]], task: Optional[str] = None,
               name: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The best row of ``history`` by :func:`primary_metric`: ``{"epoch", "metric", "value",
    "mode"}`` (plus ``top1`` when the row has it), the earliest on a tie (a later epoch must be
    strictly better to replace best.pt); None when no row has the metric. KD725 when ``name`` (the
    ``best_metric`` setting) is missing from a row that holds validation metrics, or when the run
    validates nothing at all."""
    best: Optional[Dict[str, Any]] = None
    for row in history:
        found = primary_metric(row, task, name)
        if found is None:
            if name is not None:
                have = [k for k in row if k.startswith("val_") and "/" not in k]
                raise error("KD725", f"best_metric = {name}, but the run's validation gives "
                            + (", ".join(have) if have else "nothing (it has no validation data)"),
                            hint=("--best-metric " + " or ".join(have) if have else "leave best_metric unset"))
            continue
        metric, value, mode = found
        better = best is None or (value > best["value"] if mode == "max" else value < best["value"])
        if better and value == value:  # a NaN metric is never best
            best = {"epoch": row["epoch"], "metric": metric, "value": value, "mode": mode}
            if "val_top1" in row:
                best["top1"] = row["val_top1"]
    return best
