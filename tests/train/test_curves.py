"""curves.png (issue #14, item 6): a log loss axis, one panel per group, the kd curve visible next
to the total, whole-number epoch ticks."""

from __future__ import annotations

import pytest

from kdsl.training.curves import build_figure, plot_curves



@pytest.fixture(scope="module", autouse=True)
def matplotlib_installed():
    """The file's tests skip, saying why, where matplotlib is missing: imported as they run, not as
    every pytest-xdist worker collects the file."""
    return pytest.importorskip("matplotlib")


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


class _Clock:
    """A clock the test moves by hand (curves' pacing is about time, the test must not wait)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_curves_are_drawn_at_the_end_and_at_most_every_few_seconds(monkeypatch):
    """Issue #27.3: drawing curves.png after every epoch was most of the digits job's time."""
    from kdsl.training import curves

    clock = _Clock()
    monkeypatch.setattr(curves, "_clock", clock)
    pacer, drawn = curves.CurvesPacer(), []

    def draw():
        clock.now += 2.0  # a drawing takes two seconds
        drawn.append(clock.now)
        return "drawn"

    for epoch in range(1, 101):  # 100 epochs of one second each
        clock.now += 1.0
        assert pacer.draw(draw, final=epoch == 100) in (None, "drawn")
    assert drawn[-1] == clock.now  # the last epoch is always drawn
    assert 2 <= len(drawn) <= 100 / curves.CURVES_EVERY_S + 2
    spent = 2.0 * len(drawn)
    assert spent <= 0.1 * (clock.now - 1000.0)  # a small fraction of the run

    slow, start = curves.CurvesPacer(), clock.now
    drawn.clear()

    def slow_draw():
        clock.now += 10.0  # ten seconds a drawing: drawn less often, still a small share
        drawn.append(clock.now)

    for epoch in range(1, 101):
        clock.now += 1.0
        slow.draw(slow_draw, final=False)
    assert 1 <= len(drawn) and 10.0 * (len(drawn) - 1) <= curves.CURVES_SHARE * (clock.now - start)


def test_a_short_run_draws_curves_once(tmp_path, monkeypatch):
    from kdsl.training import curves
    from train_helpers import BASELINE_SPEC, train_in_process

    monkeypatch.setattr(curves, "_clock", _Clock())  # time stands still: no drawing is due before the end
    calls = []
    real = curves.plot_curves
    monkeypatch.setattr(curves, "plot_curves", lambda *a: calls.append(1) or real(*a))
    train_in_process(BASELINE_SPEC, out=str(tmp_path / "run"), epochs=3, steps_per_epoch=2, threads=1,
                     eval_teachers=False)
    assert len(calls) == 1 and (tmp_path / "run" / "curves.png").is_file()


def _lm_history(n):
    """A language model's rows (perplexity on the right axis of the validation panel)."""
    return [{"epoch": e, "stage": "main", "lr": 0.0 if e == n else 0.003 / e, "train_loss": 2.0 / e,
             "train/kd": 0.5 / e, "train/task": 1.5 / e, "val_loss": 1.8 / e, "val_ppl": 6.0 + 1 / e,
             "val_token_acc": 40.0 + e} for e in range(1, n + 1)]


@pytest.mark.parametrize("history", [_lm_history(1), _lm_history(30), _history(30)], ids=["lm1", "lm30", "digits30"])
def test_no_legend_hides_a_point_and_no_label_is_cut(history):
    """Issue #27.12: the language model's perplexity point lay under the legend, and the right
    axis's labels were cut at the picture's edge."""
    import matplotlib.pyplot as plt

    fig = build_figure(history, {"teacher": {"top1": 99.0, "ppl": 6.567}}, start_lr=0.003)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for other in fig.axes:  # the points of every axis, the twin's too
            for line in other.get_lines():
                points = other.transData.transform(list(zip(*line.get_data()))) if len(line.get_xdata()) else []
                assert not any(box.contains(px, py) for px, py in points), (legend.texts[0].get_text(), line.get_label())
    png = plot_curves(history, {"teacher": {"top1": 99.0, "ppl": 6.567}}, start_lr=0.003)
    import io

    image = plt.imread(io.BytesIO(png))
    width = image.shape[1]
    for ax in fig.axes:  # every label inside the saved picture: a margin of background at each edge
        assert ax.get_tightbbox(renderer) is not None
    assert (image[:, -2:, :3] == 1.0).all() and (image[:, :2, :3] == 1.0).all(), "something is cut at an edge"
    assert (image[-2:, :, :3] == 1.0).all() and (image[:2, :, :3] == 1.0).all(), "something is cut at an edge"
    content, frame = fig.get_tightbbox(renderer), fig.bbox_inches  # the legends under the panels too
    assert 0 <= content.x0 and 0 <= content.y0 and content.x1 <= frame.x1 and content.y1 <= frame.y1, content
    assert width > 1000
    plt.close(fig)


def test_a_one_epoch_runs_learning_rate_shows_where_it_started():
    """Issue #27.12: a one-epoch cosine run's lr panel showed a single 0."""
    import matplotlib.pyplot as plt

    fig = build_figure(_lm_history(1), {}, start_lr=0.003)
    x, y = _lines(fig.axes[2])["lr"].get_data()
    assert list(x) == [0, 1] and list(y) == [0.003, 0.0]
    plt.close(fig)


def test_drawing_leaves_the_callers_matplotlib_backend_alone():
    """kdsl.train in a notebook: drawing curves.png must not switch the notebook's backend to Agg."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        assert plot_curves(_history(), {})[:4] == b"\x89PNG"
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
