"""``kdsl sweep SPEC --trials N``: search the spec's declared spaces with Optuna
(:mod:`kdsl.training.sweep`), a line per trial, then the table of trials, the best trial and the
command that reproduces it. The training flags of every trial come from the settings table (the
rows whose ``commands`` name ``sweep``), as ``kdsl train``'s do."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any, Optional

import typer

from kdsl.cli.errors import EXIT_INTERRUPTED, guarded
from kdsl.cli.options import given_settings, with_setting_flags
from kdsl.cli.render import echo, make_console

_FIXED = [
    ("spec", str, typer.Argument(..., metavar="SPEC", help="the spec file; its params' `search` spaces are searched")),
    ("trials", int, typer.Option(20, "--trials", min=1, max=100_000, metavar="N",
                                 help="finish this many trials (completed or pruned; those of an "
                                 "interrupted run of the same sweep count)")),
    ("dir", Optional[str], typer.Option(None, "--dir", metavar="DIR",
                                        help="the sweep directory: study.db, trial-NNN/ run directories, "
                                        "summary.json, trials.csv, history.png, importance.png "
                                        "(default sweeps/SPEC_NAME)")),
    ("prune", bool, typer.Option(True, "--prune/--no-prune", help="stop poor trials early: Optuna's "
                                 "median pruner on each epoch's validation metric")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="replace the sweep in --dir")),
]


def sweep(spec: str, trials: int, dir: Optional[str], prune: bool, overwrite: bool, **settings: Any) -> None:
    """Search the spaces SPEC's params declare (`param tau = 4 search uniform(1, 8)`) with Optuna.

    Each trial is a `kdsl train` run with the trial's values given as --set, in DIR/trial-NNN; its
    objective is the run's best metric (--best-metric, by default val_top1, or val_ppl for a
    language model). The first trial is the spec as written. The study is stored in DIR/study.db
    (SQLite): run the same command again to resume an interrupted sweep, or in several processes
    at once to share it. Needs Optuna: pip install 'kdsl[sweep]'.
    """
    from kdsl.training.sweep import plan_sweep, run_sweep, summarize

    settings = given_settings(settings)
    plan = plan_sweep(spec, dir, **settings)
    started = time.time()
    try:
        study = run_sweep(plan, trials, overwrite=overwrite, prune=prune, say=echo)
    except KeyboardInterrupt:
        echo("interrupted; finished trials are kept in " + plan.out + ". Resume with: kdsl "
             + shlex.join(sys.argv[1:]), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    summary = summarize(plan, study, round(time.time() - started, 1))
    _show(plan, summary)


def _show(plan, summary) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['finished']} trials finished ({plan.metric}, {plan.direction})")
    names = [p.name for p in plan.spaces]
    for column in ["trial", "state", *names, plan.metric, "epochs", "seconds"]:
        table.add_column(column, justify="left" if column == "state" else "right")
    best = summary["best"]
    for row in summary["trials"]:
        cells = [row["trial"], row["state"], *(row[n] for n in names), row[plan.metric], row["epochs"], row["seconds"]]
        mark = " *" if best is not None and row["trial"] == best["trial"] else ""
        table.add_row(*(_cell(c) for c in cells[:-1]), _cell(cells[-1]) + mark)
    make_console().print(table)
    if best is None:
        from kdsl.core.diagnostics import error

        raise error("KD753", f"no trial of {plan.out} finished", hint="see each trial's error above")
    echo(f"best: trial {best['trial']}, {plan.metric} {best['value']:.4g} with "
         + ", ".join(f"{k}={_cell(v)}" for k, v in best["params"].items()))
    echo(f"reproduce: {best['command']}")
    files = ["summary.json", "trials.csv"] + [p for p in summary["plots"].values() if p]
    echo(f"wrote {plan.out}/: " + ", ".join(f.split("/")[-1] for f in files))
    if summary["plots"]["importance"] is None:
        echo("importance.png not drawn: the finished trials' values do not vary enough to rank the params "
             "(or matplotlib is missing)")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


with_setting_flags(sweep, "sweep", _FIXED)


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the application."""
    app.command("sweep")(guarded(sweep))
