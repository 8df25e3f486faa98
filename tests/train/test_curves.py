"""curves.png (issue #14, item 6): a log loss axis, one panel per group, the kd curve visible next
to the total, whole-number epoch ticks."""

from __future__ import annotations

import pytest

from kdsl.training.curves import build_figure, plot_curves

pytest.importorskip("matplotlib")


def _history(n=3, kd=None, stages=None):
    rows = []
    for e in range(1, n + 1):
        total = 10.0 / e ** 2
        rows.append({"epoch": e, "stage": (stages or ["main"] * n)[e - 1], "lr": 0.05 / e,
                     "train_loss": total, "train/kd": total * 0.99 if kd is None else kd[e - 1],
                     "train/task": total * 0.01, "val_top1": 50.0 + e, "val_top5": 90.0 + e, "val_loss": 1.0 / e})
    return rows


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_three_panels_losses_on_a_log_axis():
    import matplotlib.pyplot as plt

    fig = build_figure(_history(), {"teacher": {"top1": 99.0}})
    losses, metrics, lr = fig.axes
    assert [a.get_title() for a in fig.axes] == ["losses (weighted terms)", "validation",
                                                 "learning rate (at the epoch's end)"]
    assert losses.get_yscale() == "log" and lr.get_yscale() == "linear"
    assert set(_lines(losses)) == {"train_loss (total)", "kd", "task", "val_loss"}
    assert {"student top-1", "student top-5", "teacher top-1 99.00%"} <= set(_lines(metrics))
    assert set(_lines(lr)) == {"lr"}
    plt.close(fig)


def test_kd_curve_does_not_hide_under_the_total():
    """A term equal to the total (a one-term spec) is drawn above it, with markers the total lacks."""
    import matplotlib.pyplot as plt

    hist = _history(kd=[10.0 / e ** 2 for e in range(1, 4)])
    fig = build_figure(hist, {})
    lines = _lines(fig.axes[0])
    total, kd = lines["train_loss (total)"], lines["kd"]
    assert list(kd.get_ydata()) == list(total.get_ydata())
    assert kd.get_zorder() > total.get_zorder()
    assert total.get_marker() in ("None", "", None) and kd.get_marker() not in ("None", "", None)
    assert kd.get_color() != total.get_color()
    plt.close(fig)


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_epoch_ticks_are_whole_numbers(n):
    import matplotlib.pyplot as plt

    fig = build_figure(_history(n), {})
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        assert set(range(1, n + 1)) <= set(int(t) for t in ticks) or n > 3
    plt.close(fig)


def test_losses_that_reach_zero_or_below_use_symlog():
    import matplotlib.pyplot as plt

    hist = _history(kd=[0.5, 0.0, -0.2])
    fig = build_figure(hist, {})
    assert fig.axes[0].get_yscale() == "symlog"
    plt.close(fig)


def test_stage_boundaries_and_no_validation():
    import matplotlib.pyplot as plt

    hist = [{k: v for k, v in r.items() if not k.startswith("val_")}
            for r in _history(4, stages=["a", "a", "b", "b"])]
    fig = build_figure(hist, {})
    for ax in fig.axes:
        assert any(list(line.get_xdata()) == [2.5, 2.5] for line in ax.get_lines())
    assert "no validation data" in [t.get_text() for t in fig.axes[1].texts]
    plt.close(fig)


def test_plot_curves_gives_a_png():
    png = plot_curves(_history(), {})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_language_models_perplexity_is_on_the_validation_panel_not_with_the_losses():
    import matplotlib.pyplot as plt

    rows = [{"epoch": e, "stage": "main", "lr": 0.003 / e, "train_loss": 3.0 / e, "train/lm": 3.0 / e,
             "val_loss": 2.5 / e, "val_ppl": 12.0 / e, "val_token_acc": 30.0 + e} for e in (1, 2, 3)]
    fig = build_figure(rows, {"teacher": {"ppl": 6.5, "token_acc": 51.0}})
    losses, metrics, ppl = fig.axes[0], fig.axes[1], fig.axes[3]  # the twin axis is added last
    assert set(_lines(losses)) == {"train_loss (total)", "lm", "val_loss"}
    assert set(_lines(metrics)) == {"student token accuracy"}
    assert set(_lines(ppl)) == {"student perplexity", "teacher perplexity 6.500"}
    assert ppl.get_yscale() == "log" and list(_lines(ppl)["student perplexity"].get_ydata()) == [12.0, 6.0, 4.0]
    legend = [t.get_text() for t in metrics.get_legend().get_texts()]
    assert legend == ["student token accuracy", "student perplexity", "teacher perplexity 6.500"]
    plt.close(fig)
