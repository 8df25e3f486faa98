"""What a training run shows and leaves behind: progress, per-epoch metrics (JSON lines and CSV),
loss and accuracy curves, the final summary table. Only rank 0 of a distributed run writes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console
from rich.table import Table


def atomic_write(path: str, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new version, never half of one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a failed write (disk full, interrupt) leaves no temporary file behind
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


class RunLog:
    def __init__(self, out_dir: str, console: Console, enabled: bool = True) -> None:
        self.out_dir = out_dir
        self.console = console
        self.enabled = enabled
        self.history: List[Dict[str, Any]] = []

    def print(self, *args, **kwargs) -> None:
        if self.enabled:
            self.console.print(*args, **kwargs)

    # -- per-epoch metrics -------------------------------------------------------------------
    def add_epoch(self, row: Dict[str, Any]) -> None:
        self.history.append(row)
        if self.enabled:
            self.write_metrics()

    def write_metrics(self) -> None:
        lines = "".join(json.dumps(r, sort_keys=False) + "\n" for r in self.history)
        atomic_write(os.path.join(self.out_dir, "metrics.jsonl"), lines.encode())
        columns: List[str] = []
        for r in self.history:
            for k in r:
                if k not in columns:
                    columns.append(k)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in self.history:
            writer.writerow({k: _csv_value(r.get(k)) for k in columns})
        atomic_write(os.path.join(self.out_dir, "metrics.csv"), buffer.getvalue().encode())

    def epoch_line(self, row: Dict[str, Any], total_epochs: int) -> str:
        terms = ", ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train/"))
        return (f"epoch {row['epoch']:>3}/{total_epochs}  loss {row['train_loss']:.4f}"
                + (f" ({terms})" if terms else "")
                + f"  val top-1 {row['val_top1']:.2f}%  top-5 {row['val_top5']:.2f}%"
                + f"  val loss {row['val_loss']:.4f}  lr {row['lr']:.4g}  {row['time_s']:.1f}s")

    # -- curves ------------------------------------------------------------------------------
    def write_curves(self, teachers: Dict[str, Dict[str, float]]) -> Optional[str]:
        """curves.png of the loss terms and accuracy; None (with the reason) without matplotlib."""
        if not self.enabled or not self.history:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return "matplotlib is not installed: skipped curves.png (pip install 'kdsl[plot]')"
        epochs = [r["epoch"] for r in self.history]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        keys = [k for k in self.history[0] if k.startswith("train/")] + ["train_loss", "val_loss"]
        for k in keys:
            ax1.plot(epochs, [r.get(k) for r in self.history], label=k.replace("train/", ""),
                     linewidth=2 if k == "train_loss" else 1)
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("loss (weighted terms)")
        ax1.legend(fontsize=8)
        ax1.grid(alpha=0.3)
        ax2.plot(epochs, [r["val_top1"] for r in self.history], label="student top-1", linewidth=2)
        ax2.plot(epochs, [r["val_top5"] for r in self.history], label="student top-5", linewidth=1)
        for name, m in teachers.items():
            ax2.axhline(m["top1"], linestyle="--", linewidth=1, color="gray")
            ax2.annotate(f"{name} {m['top1']:.1f}%", (epochs[0], m["top1"]), fontsize=8,
                         xytext=(0, 3), textcoords="offset points")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("validation accuracy (%)")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110)
        plt.close(fig)
        atomic_write(os.path.join(self.out_dir, "curves.png"), buffer.getvalue())
        return None

    # -- summary -----------------------------------------------------------------------------
    def summary_table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        table = Table(title="kdsl train: results on the validation set", title_justify="left")
        for col in ("model", "role", "params", "top-1 (%)", "top-5 (%)", "val loss"):
            table.add_column(col, justify="left" if col in ("model", "role") else "right")
        for r in rows:
            table.add_row(r["model"], r["role"], f"{r['params']:,}", f"{r['top1']:.2f}",
                          f"{r['top5']:.2f}", f"{r['loss']:.4f}")
        return table


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
