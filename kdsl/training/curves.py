"""curves.png: the loss terms and the validation accuracy over the epochs (needs matplotlib), with
a dotted line where a new stage starts."""

from __future__ import annotations

import io
from typing import Any, Dict, List, Optional


def plot_curves(history: List[Dict[str, Any]], teachers: Dict[str, Dict[str, float]]) -> Optional[bytes]:
    """The PNG's bytes, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if k.startswith("train/")]
    keys += ["train_loss"] + (["val_loss"] if "val_loss" in history[0] else [])
    for k in keys:
        ax1.plot(epochs, [r.get(k) for r in history], label=k.replace("train/", ""),
                 linewidth=2 if k == "train_loss" else 1)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss (weighted terms)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    if "val_top1" in history[0]:
        ax2.plot(epochs, [r["val_top1"] for r in history], label="student top-1", linewidth=2)
        ax2.plot(epochs, [r["val_top5"] for r in history], label="student top-5", linewidth=1)
    for k in [k for k in history[0] if k.startswith("val_top1/")]:
        ax2.plot(epochs, [r.get(k) for r in history], label=f"{k[9:]} top-1", linewidth=1)
    for before, row in zip(history, history[1:]):
        if row.get("stage") != before.get("stage"):
            for ax in (ax1, ax2):
                ax.axvline(before["epoch"] + 0.5, linestyle=":", linewidth=1, color="gray")
    for name, m in teachers.items():
        ax2.axhline(m["top1"], linestyle="--", linewidth=1, color="gray")
        ax2.annotate(f"{name} {m['top1']:.1f}%", (epochs[0], m["top1"]), fontsize=8,
                     xytext=(0, 3), textcoords="offset points")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy (%)")
    if ax2.get_legend_handles_labels()[0]:  # nothing to show in a run without validation data
        ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
