"""curves.png (needs matplotlib): one panel per group of a run's metrics, over the epochs.

* **losses**, on a log axis (the first epochs' losses would flatten a linear one): ``train_loss``
  bold, each weighted term with its own line style and marker (a term that equals the total, the
  ``kd`` of a one-term spec, stays visible on top of it), the validation loss (and perplexity)
  dashed. A loss that is zero or negative somewhere (some contrastive and NLL terms) makes the
  axis symmetric-log instead, which shows both signs.
* **validation metrics** (%): the student's top-1 and top-5 (or a language model's next-token
  accuracy), each trained peer's, and each teacher's top-1 as a grey dashed line.
* **learning rate** of each phase (linear: a cosine schedule ends at 0).

Epoch ticks are whole numbers; a dotted line marks where a new stage starts.
"""

from __future__ import annotations

import io
import time
from typing import Any, Callable, Dict, List, Optional, TypeVar

CURVES_EVERY_S = 60.0  # the least time between two drawings of curves.png during a run
CURVES_SHARE = 0.05  # the most of a run's time that drawing curves.png may take
DPI = 110  # curves.png's resolution: 1650 x 572 pixels
_clock = time.monotonic
T = TypeVar("T")


class CurvesPacer:
    """When a run redraws curves.png: at its last epoch always, otherwise only once CURVES_EVERY_S
    seconds have passed since the last drawing and drawing has taken at most CURVES_SHARE of the
    time (a drawing costs about two seconds, an epoch of the digits job about one)."""

    def __init__(self) -> None:
        self.last = _clock()  # the run's start counts as a drawing: the first comes after a while
        self.cost = 0.0  # seconds the last drawing took

    def due(self, final: bool) -> bool:
        return final or _clock() - self.last >= max(CURVES_EVERY_S, self.cost / CURVES_SHARE)

    def draw(self, draw: Callable[[], T], final: bool) -> Optional[T]:
        """``draw()`` if it is due (its result), else None."""
        if not self.due(final):
            return None
        start = _clock()
        try:
            return draw()
        finally:
            self.last = _clock()
            self.cost = self.last - start

_STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ("-", "v"), ("--", "P"), ("-.", "X"), (":", "*")]


def _loss_keys(history: List[Dict[str, Any]]) -> List[str]:
    keys = list(dict.fromkeys(k for r in history for k in r))
    terms = [k for k in keys if k.startswith("train/")]
    return ["train_loss", *terms] + [k for k in ("val_loss",) if k in keys]  # perplexity: the validation panel


def _metric_keys(history: List[Dict[str, Any]]) -> List[str]:
    keys = list(dict.fromkeys(k for r in history for k in r))
    own = [k for k in ("val_top1", "val_top5", "val_token_acc") if k in keys]
    return own + [k for k in keys if k.startswith(("val_top1/", "val_token_acc/"))]


def _series(history: List[Dict[str, Any]], key: str):
    pts = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_losses(ax, history: List[Dict[str, Any]]) -> None:
    values = []
    for i, key in enumerate(_loss_keys(history)):
        x, y = _series(history, key)
        if not x:
            continue
        values += y
        if key == "train_loss":
            # no marker (the terms' markers tell them from it), except for one point, which a bare
            # line does not draw
            ax.plot(x, y, color="black", linewidth=2.5, marker="o" if len(x) == 1 else None, markersize=3,
                    label="train_loss (total)", zorder=2)
        elif key.startswith("val_"):
            ax.plot(x, y, linestyle="--", color="tab:red", marker="x", markersize=5, label=key, zorder=3)
        else:
            style, marker = _STYLES[(i - 1) % len(_STYLES)]
            ax.plot(x, y, linestyle=style, marker=marker, markersize=5, linewidth=1.5,
                    label=key[len("train/"):], zorder=4)  # terms above the total, which may equal one
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
        _plain_log_labels(ax, finite)
    elif finite:
        positive = [abs(v) for v in finite if v != 0]
        ax.set_yscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_title("losses (weighted terms)")
    ax.set_ylabel("loss")


def _plot_metrics(ax, history: List[Dict[str, Any]], teachers: Dict[str, Dict[str, float]]):
    """Accuracies in %, and a language model's perplexity on a right axis (returned, or None)."""
    names = {"val_top1": "student top-1", "val_top5": "student top-5", "val_token_acc": "student token accuracy"}
    for i, key in enumerate(_metric_keys(history)):
        x, y = _series(history, key)
        if x:
            label = names.get(key) or f"{key.split('/', 1)[1]} {key.split('/', 1)[0][4:]}"
            style, marker = _STYLES[i % len(_STYLES)]
            line, = ax.plot(x, y, linestyle=style, marker=marker, markersize=5,
                            linewidth=2 if key == "val_top1" else 1.2, label=label)
            if key in ("val_top1", "val_token_acc"):
                _label_last(ax, x, y, "{:.2f}%", line.get_color())
    _teacher_lines(ax, teachers, "top1", "--", "top-1 {:.2f}%")
    ax.set_title("validation")
    ax.set_ylabel("%")
    return _plot_perplexity(ax, history, teachers)


def _teacher_lines(ax, teachers: Dict[str, Dict[str, float]], metric: str, style: str, text: str) -> None:
    """A grey reference line at each frozen teacher's ``metric``, labelled with ``text``."""
    for name, m in teachers.items():
        if isinstance(m.get(metric), (int, float)):
            who = "teacher" if name == "teacher" else f"teacher {name}"
            ax.axhline(m[metric], linestyle=style, linewidth=1, color="gray", label=f"{who} {text.format(m[metric])}")


def _plot_perplexity(ax, history: List[Dict[str, Any]], teachers: Dict[str, Dict[str, float]]):
    """A language model's perplexity on its own (log) axis at the right of the validation panel:
    not a loss, and not a percentage."""
    x, y = _series(history, "val_ppl")
    if not x:
        return None
    right = ax.twinx()
    right.plot(x, y, linestyle="--", marker="x", markersize=5, color="tab:red", label="student perplexity")
    _teacher_lines(right, teachers, "ppl", ":", "perplexity {:.3f}")
    right.set_yscale("log")
    _plain_log_labels(right, y)
    right.set_ylabel("perplexity (log)")
    shown = y + [m["ppl"] for m in teachers.values() if isinstance(m.get("ppl"), (int, float))]
    if all(v > 0 for v in shown):  # room above and below: no point on the frame
        right.set_ylim(min(shown) / 1.15, max(shown) * 1.15)
    _label_last(right, x, y, "{:.3f}", "tab:red")
    return right


def _plain_log_labels(ax, values: List[float]) -> None:
    """A log axis labelled with plain numbers (12, 9, 0.4), not powers (1.2x10^1); the ticks
    between powers of ten labelled only when ``values`` span less than one (else they collide)."""
    import math

    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(plain)
    positive = [v for v in values if v > 0]
    narrow = positive and math.log10(max(positive) / min(positive)) < 1
    ax.yaxis.set_minor_formatter(plain if narrow else NullFormatter())


def _label_last(ax, x: List[Any], y: List[float], text: str, color: str) -> None:
    """The last point's value written next to it: the run's main number, readable at a glance."""
    ax.annotate(text.format(y[-1]), (x[-1], y[-1]), textcoords="offset points", xytext=(-4, -13), fontsize=8,
                color=color, ha="right", fontweight="bold")  # inside the panel, under the point


def _plot_lr(ax, history: List[Dict[str, Any]], start_lr: Optional[float]) -> None:
    """Each phase's learning rate at each epoch's end, and ``start_lr`` (the run's first step's,
    when known) at epoch 0: a one-epoch run's cosine schedule ends at 0, its start tells the lr."""
    keys = [k for k in dict.fromkeys(k for r in history for k in r) if k.startswith("lr/")] or ["lr"]
    for i, key in enumerate(keys):
        x, y = _series(history, key)
        if x and key == "lr" and start_lr is not None and history[0].get("epoch") == 1:
            x, y = [0, *x], [start_lr, *y]
        if x:
            style, marker = _STYLES[i % len(_STYLES)]
            ax.plot(x, y, linestyle=style, marker=marker, markersize=4, label=key)
    ax.set_title("learning rate (at the epoch's end)")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("lr")


def plot_curves(history: List[Dict[str, Any]], teachers: Dict[str, Dict[str, float]],
                start_lr: Optional[float] = None) -> Optional[bytes]:
    """The PNG's bytes, or None when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    fig = build_figure(history, teachers, start_lr)
    buffer = io.BytesIO()
    # no bbox_inches="tight": build_figure's layout already holds every label and legend inside the
    # figure, and that option would lay the figure out once more (a third of a drawing's cost)
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def build_figure(history: List[Dict[str, Any]], teachers: Dict[str, Dict[str, float]],
                 start_lr: Optional[float] = None):
    """The figure of curves.png, its three axes in ``fig.axes`` (matplotlib must be importable);
    each panel's legend under it, where it hides no point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # matplotlib's object API, not pyplot: no global backend switched under the caller (a notebook
    # keeps its own), no figure registry to close; at the PNG's dpi, so that the layout and the
    # drawing share one renderer and its measurements of the texts
    fig = Figure(figsize=(15, 5.2), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    _plot_losses(axes[0], history)
    twins = {1: _plot_metrics(axes[1], history, teachers)}
    _plot_lr(axes[2], history, start_lr)
    epochs = [r["epoch"] for r in history]
    for i, ax in enumerate(axes):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # one point: a window around it rather than matplotlib's +-0.05
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        elif i == 2 and start_lr is not None and epochs[0] == 1:
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.margins(y=0.08)  # no point on the frame
        handles, labels = ax.get_legend_handles_labels()
        if twins.get(i) is not None:
            more, more_labels = twins[i].get_legend_handles_labels()
            handles, labels = handles + more, labels + more_labels
        if handles:  # a run without validation data has nothing to show
            ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                      ncol=2, frameon=False)
        for before, row in zip(history, history[1:]):
            if row.get("stage") != before.get("stage"):
                ax.axvline(before["epoch"] + 0.5, linestyle=":", linewidth=1, color="gray")
    if not _metric_keys(history) and twins[1] is None and not teachers:
        axes[1].text(0.5, 0.5, "no validation data", ha="center", va="center", transform=axes[1].transAxes)
    fig.tight_layout()
    return fig
