"""What a sweep reports (:mod:`kdsl.training.sweep`): a line per trial as it finishes, and at the
end ``DIR/summary.json`` (the best trial, its params and the ``kdsl train`` command that
reproduces it, every trial), ``DIR/trials.csv``, and two plots drawn with matplotlib:
``DIR/history.png`` (each trial's objective and the best so far) and ``DIR/importance.png``
(each param's importance by Optuna's fANOVA; PED-ANOVA where scikit-learn is missing)."""

from __future__ import annotations

import csv
import json
import os
import shlex
from typing import Any, Dict, List, Optional

from kdsl.catalog.settings import BY_NAME
from kdsl.core.literals import literal_text
from kdsl.training.config import flag_words

SUMMARY, TRIALS_CSV, HISTORY_PNG, IMPORTANCE_PNG = "summary.json", "trials.csv", "history.png", "importance.png"


def _state(trial) -> str:
    return trial.state.name.lower()


def _params_text(params: Dict[str, Any]) -> str:
    return ", ".join(f"{k}={_value_text(v)}" for k, v in params.items())


def _value_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else literal_text(value)


def trial_line(sweep, study, trial, total: int) -> str:
    """``trial 3 [4/12]: tau=2.31, kd_weight=0.52 -> val_top1 0.9312 (12.3 s); best 0.94, trial 1``."""
    state = _state(trial)
    outcome = f"{sweep.metric} {trial.value:.4g}" if trial.value is not None else state
    if state == "pruned":
        last = trial.last_step
        outcome = f"pruned after epoch {last}" + (
            f" ({sweep.metric} {trial.intermediate_values[last]:.4g})" if last is not None else "")
    elif state == "fail":
        outcome = "failed: " + str(trial.user_attrs.get("error", "see its run directory"))
    seconds = trial.user_attrs.get("seconds")
    line = f"trial {trial.number} [{finished(study)}/{total}]: {_params_text(trial.params)} -> {outcome}"
    line += f" ({seconds} s)" if seconds is not None else ""
    best = _best(study)
    if best is not None:
        line += f"; best {best.value:.4g}, trial {best.number}"
    return line


def finished(study) -> int:
    """The trials that count towards ``--trials``: completed or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _best(study):
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    pick = max if study.direction.name == "MAXIMIZE" else min
    return pick(done, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))


def reproduce_command(sweep, params: Dict[str, Any], number: int) -> str:
    """The ``kdsl train`` command that runs trial ``number`` again, in a run directory of its own."""
    words = ["kdsl", "train", sweep.spec_path]
    for name, value in sweep.settings.items():
        setting = BY_NAME[name]
        words += [setting.flag, value] if isinstance(value, str) else flag_words(setting, value)
    for name, value in {**sweep.fixed, **params}.items():
        words += ["--set", f"{name}={literal_text(value)}"]
    stem = os.path.splitext(os.path.basename(sweep.spec_path))[0]
    words += ["--out", os.path.join("runs", f"{stem}-trial-{number:03d}")]
    return shlex.join(words)


def trial_rows(sweep, study) -> List[Dict[str, Any]]:
    """One row per trial, in the order they started."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": _state(t), **{p.name: t.params.get(p.name) for p in sweep.spaces},
                     sweep.metric: t.value, "epochs": t.last_step, "best_epoch": t.user_attrs.get("best_epoch"),
                     "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir"),
                     "spec_as_written": bool(t.user_attrs.get("first")), "error": t.user_attrs.get("error")})
    return rows


def write_summary(sweep, study, seconds: Optional[float] = None) -> Dict[str, Any]:
    """summary.json, trials.csv and the plots in the sweep directory; the summary."""
    rows = trial_rows(sweep, study)
    best = _best(study)
    summary: Dict[str, Any] = {
        "spec": sweep.spec_path, "metric": sweep.metric, "direction": sweep.direction,
        "searched": {p.name: sweep.identity["spaces"][p.name] for p in sweep.spaces},
        "fixed": sweep.fixed, "settings": sweep.identity["settings"], "trials": rows,
        "finished": sum(r["state"] in ("complete", "pruned") for r in rows), "seconds": seconds,
        "best": None if best is None else {
            "trial": best.number, "value": best.value, "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
            "command": reproduce_command(sweep, best.params, best.number)},
    }
    with open(os.path.join(sweep.out, SUMMARY), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, default=str)
    with open(os.path.join(sweep.out, TRIALS_CSV), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    summary["plots"] = _plots(sweep, study, rows)
    return summary


def _plots(sweep, study, rows: List[Dict[str, Any]]) -> Dict[str, Optional[str]]:
    """The PNG files written (None for a plot that could not be drawn, e.g. without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"history": None, "importance": None}
    return {"history": _history_plot(plt, sweep, rows), "importance": _importance_plot(plt, sweep, study)}


def _history_plot(plt, sweep, rows) -> Optional[str]:
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.scatter([r["trial"] for r in done], [r[sweep.metric] for r in done], label="trial", zorder=3)
    best, line = None, []
    better = max if sweep.direction == "maximize" else min
    for r in done:
        best = r[sweep.metric] if best is None else better(best, r[sweep.metric])
        line.append(best)
    xs = [r["trial"] for r in done] + [rows[-1]["trial"]]  # the best holds to the last trial
    ax.step(xs, line + line[-1:], where="post", color="tab:red", label="best so far")
    pruned = [r["trial"] for r in rows if r["state"] == "pruned"]
    for x in pruned:
        ax.axvline(x, color="0.85", lw=1, zorder=1)
    ax.set_xlabel("trial" + (" (grey: pruned)" if pruned else ""))
    ax.set_ylabel(sweep.metric)
    ax.set_title(f"{os.path.basename(sweep.spec_path)}: optimisation history")
    ax.legend(loc="best")
    return _save(plt, fig, os.path.join(sweep.out, HISTORY_PNG))


def param_importances(study) -> Dict[str, float]:
    """Each searched param's importance (they sum to 1): fANOVA, or PED-ANOVA without scikit-learn;
    {} when there are too few finished trials to tell."""
    import optuna

    try:
        import sklearn  # noqa: F401 - fANOVA's random forest

        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    except ImportError:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except (ValueError, RuntimeError, ZeroDivisionError):  # fewer than two distinct finished trials
        return {}


def _importance_plot(plt, sweep, study) -> Optional[str]:
    importances = param_importances(study)
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * len(names)))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel(f"importance for {sweep.metric}")
    ax.set_title("parameter importance")
    return _save(plt, fig, os.path.join(sweep.out, IMPORTANCE_PNG))


def _save(plt, fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
