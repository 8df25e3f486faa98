"""``kdsl train`` on the terminal: the trainer's progress events rendered with rich."""

from __future__ import annotations

import shlex
import time
from typing import Any, Dict, List, Optional, Sequence, Set

from rich.table import Table

from kdsl.training.report import TOKENS_PER_S, Reporter, RunInterrupted, RunResult, RunStart, StageInfo


def clock(seconds: float) -> str:
    """``H:MM:SS``, as the progress line and the bar show durations."""
    s = max(int(round(seconds)), 0)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(epoch: int, total_epochs: int, steps_done: int, steps: int, terms: Dict[str, float],
                  samples_per_s: float, eta_epoch: float, eta_run: Optional[float]) -> str:
    """The plain progress line of a non-terminal output, e.g. ``epoch 3/30 step 120/450 27% loss
    0.812 kd 0.4 412 samples/s eta 0:01:02 (run 0:31:10)``: ``loss`` is the sum of the weighted
    terms' means so far this epoch, each term follows; ``eta`` the epoch's, ``run`` the run's (at
    this epoch's pace, validation not counted)."""
    terms = dict(terms)
    tokens = terms.pop(TOKENS_PER_S, None)
    loss = sum(terms.values())
    parts = [f"epoch {epoch + 1}/{total_epochs}", f"step {steps_done}/{steps}",
             f"{100 * steps_done // max(steps, 1)}%", f"loss {loss:.4g}"]
    parts += [f"{k} {v:.4g}" for k, v in terms.items()]
    parts.append(f"{samples_per_s:.0f} samples/s")
    if tokens is not None:
        parts.append(f"{tokens:.0f} tokens/s")
    parts.append(f"eta {clock(eta_epoch)}")
    if eta_run is not None:
        parts.append(f"(run {clock(eta_run)})")
    return " ".join(parts)


def resume_command(argv: Sequence[str], out: str) -> str:
    """The command that continues an interrupted ``kdsl train``: this one's arguments (``argv``
    without the program, starting at ``train``) with ``--resume`` and without ``--overwrite``, and
    ``--out`` added when it was not given; a resume must repeat the settings the run started with."""
    args: List[str] = [a for a in argv if a != "--overwrite"]
    if not args or args[0] != "train":  # not the command line that ran (an embedding program)
        return ""
    if "--resume" not in args:
        args.append("--resume")
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", out]
    return "kdsl " + " ".join(shlex.quote(a) for a in args)


def interrupted_text(stop: RunInterrupted, argv: Sequence[str]) -> str:
    """What ``kdsl train`` says on Ctrl-C: the epoch saved and the command that continues it."""
    steps = getattr(stop, "steps", 0)
    if not stop.saved and not steps:
        return (f"interrupted before the end of epoch 1: nothing is saved in {stop.out}; "
                "run the same command again to start over")
    command = resume_command(argv, stop.out) or f"kdsl train SPEC --resume --out {shlex.quote(stop.out)}"
    if steps:
        return (f"interrupted: step {steps} of epoch {stop.saved + 1} of {stop.epochs} is saved in {stop.out} "
                f"(the steps after it are lost); continue with:\n  {command}")
    return (f"interrupted: epoch {stop.saved} of {stop.epochs} is saved in {stop.out} (the epoch "
            f"that was running is lost); continue with:\n  {command}")


def epoch_line(row: Dict[str, Any], total_epochs: int, stage: Optional[str] = None) -> str:
    """One epoch's metrics; ``stage`` names a declared stage (a spec without stages has none)."""
    terms = ", ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train/"))
    val = ""
    if "val_top1" in row:
        val = (f"  val top-1 {row['val_top1']:.2f}%  top-5 {row['val_top5']:.2f}%"
               f"  val loss {row['val_loss']:.4f}")
    elif "val_ppl" in row:  # a language model
        val = (f"  val ppl {row['val_ppl']:.3f}  token acc {row['val_token_acc']:.2f}%"
               f"  val loss {row['val_loss']:.4f}")
    peers = "".join(f"  {k[9:]} top-1 {v:.2f}%" for k, v in row.items() if k.startswith("val_top1/"))
    peers += "".join(f"  {k[8:]} ppl {v:.3f}" for k, v in row.items() if k.startswith("val_ppl/"))
    # a stage with phases has a learning rate per phase
    lrs = [f"{k[3:]} {v:.4g}" for k, v in row.items() if k.startswith("lr/")] or [f"{row['lr']:.4g}"]
    return (f"epoch {row['epoch']:>3}/{total_epochs}" + (f"  stage {stage}" if stage else "")
            + f"  loss {row['train_loss']:.4f}" + (f" ({terms})" if terms else "")
            + val + peers + f"  lr {', '.join(lrs)}  {row['time_s']:.1f}s")


# the columns of the results table by task: (row key, heading, format)
_COLUMNS = {"top1": (("top1", "top-1 (%)", ".2f"), ("top5", "top-5 (%)", ".2f"), ("loss", "val loss", ".4f")),
            "ppl": (("ppl", "val ppl", ".3f"), ("token_acc", "token acc (%)", ".2f"), ("loss", "val loss", ".4f"))}


def summary_table(rows) -> Table:
    table = Table(title="kdsl train: results on the validation set", title_justify="left")
    columns = _COLUMNS["ppl" if rows and "ppl" in rows[0] else "top1"]
    for col in ("model", "role", "params") + tuple(c[1] for c in columns):
        table.add_column(col, justify="left" if col in ("model", "role") else "right")
    for r in rows:
        table.add_row(r["model"], r["role"], f"{r['params']:,}",
                      *(format(r[k], f) if k in r else "-" for k, _, f in columns))
    return table


def _score(m: Dict[str, Any]) -> str:
    """A model's headline metric: top-1 of a classifier, perplexity of a language model."""
    return f"ppl {m['ppl']:.3f}" if "ppl" in m else f"top-1 {m['top1']:.2f}%"


def _phases(info: StageInfo) -> str:
    return ", ".join(f"{name} x{repeat}" if repeat > 1 else name for name, repeat in info.phases)


def counted(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count with its noun ("1 epochs" read as a typo)."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _epochs(info: StageInfo) -> str:
    first, last = info.first_epoch + 1, info.end_epoch
    batch = "" if info.batch_size is None else f", batch_size {info.batch_size}"
    return (f"epoch {first}" if first == last else f"epochs {first}-{last}") + batch


def announce(info: RunStart) -> str:
    parts = [f"student {info.student} ({info.student_params:,} params)"]
    for name, m in info.teachers.items():
        parts.append(f"teacher {name} ({m['params']:,} params, {_score(m)})")
    world = f", {info.world} processes" if info.world > 1 else ""
    if info.input is None:
        data = f"data {info.data} ({info.train_size} train / {info.val_size} val)"
    else:
        data = f"input {info.input}, " + (f"data {info.data} for evaluation ({info.val_size} val)"
                                          if info.val_size else "no data to evaluate on")
    text = (f"kdsl train {info.spec_file}: " + ", ".join(parts) + "\n"
            f"  {data}, {counted(info.epochs, 'epoch')} of {counted(info.steps_per_epoch, 'step')}, "
            f"batch {info.batch_size}, "
            f"{info.optimizer}, {info.lr_schedule} schedule, seed {info.seed}, "
            f"{info.device}{' ' + info.amp if info.amp else ''}{world} -> {info.out}")
    stages = [s for s in info.stages if s.declared]
    if stages:
        text += "\n  stages: " + ", ".join(f"{s.name} ({_epochs(s)})" for s in stages)
    elif info.stages and info.stages[0].phased:
        text += f"\n  each step: {_phases(info.stages[0])}"
    return text


def closing_lines(result: RunResult) -> str:
    student = result.final
    if not student:
        first = "no validation data: nothing evaluated"
    elif "ppl" in student:  # a language model: lower is better
        first = f"student {_score(student)}" + "".join(f", teacher {name} {_score(m)}"
                                                        for name, m in result.teachers.items())
    elif result.teachers:
        name, t = next(iter(result.teachers.items()))
        who = "the teacher" if name == "teacher" else f"teacher {name}"
        best = result.best
        first = (f"student top-1 {student['top1']:.2f}% next to {who}'s {t['top1']:.2f}% "
                 f"({student['top1'] - t['top1']:+.2f} points)" + (f"; {best_text(best)}" if best else ""))
    else:
        first = f"student top-1 {student['top1']:.2f}%"
    if student and result.peers:
        first += "".join(f"; peer {name} {_score(m)}" for name, m in result.peers.items())
    return f"{first}\nrun written to {result.files.out} ({result.seconds:.1f}s): {written(result.files)}"


def best_text(best: Dict[str, Any]) -> str:
    """Where best.pt comes from: ``best 94.99% at epoch 5 (best.pt)``, or the metric that chose it."""
    if best["metric"] == "val_top1":
        return f"best {best['value']:.2f}% at epoch {best['epoch']} (best.pt)"
    return f"best {best['metric']} {best['value']:.4g} at epoch {best['epoch']} (best.pt)"


def written(files) -> str:
    """The files of a run directory that exist, in the order the README lists them."""
    names = [n for n, present in (("student.pt", True), ("best.pt", files.best), ("checkpoint.pt", True),
                                  ("metrics.jsonl", True), ("metrics.csv", True), ("curves.png", files.curves),
                                  ("summary.json", True), ("environment.json", files.environment),
                                  ("spec/", files.spec), ("tensorboard/", files.tensorboard)) if present]
    names += [f"{folder}/ ({', '.join(found)})" for folder, found in
              (("models", files.models), ("connectors", files.connectors)) if found]
    return ", ".join(names)


class RichReporter(Reporter):
    """Lines for the run's start, each stage, each epoch and the end; a live progress bar on a
    terminal."""

    def __init__(self, console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._bar = None
        self._task = None
        self._declared: Set[str] = set()  # stages of the spec (named in the epoch lines)
        self._every = 30.0  # seconds between plain progress lines (RunStart.progress_every)
        self._samples = 0  # samples per step, every process together
        self._started = self._last_line = 0.0  # this epoch's start, the last plain line's time
        self._epochs_total = 0

    def run_start(self, info: RunStart) -> None:
        self._every, self._samples = info.progress_every, info.batch_size * max(info.world, 1)
        if info.resumed and info.start_epoch >= info.epochs:
            self.console.print(f"{info.out}: the run is complete ({counted(info.start_epoch, 'epoch')}); "
                               "nothing to resume")
        elif info.resumed:
            self.console.print(f"resuming {info.out} after epoch {info.start_epoch}")
        self.console.print(announce(info))

    def stage_start(self, info: StageInfo) -> None:
        if not info.declared:
            return
        self._declared.add(info.name)
        phases = f"; each step: {_phases(info)}" if info.phased else ""
        self.console.print(f"stage {info.name}: {_epochs(info)}{phases}")

    def epoch_start(self, epoch: int, total_epochs: int, steps: int) -> None:
        self._started = self._last_line = time.monotonic()
        self._epochs_total = total_epochs
        if not self.live:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._bar = Progress(TextColumn(f"epoch {epoch + 1}/{total_epochs}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                             TimeRemainingColumn(), TextColumn("{task.fields[rate]}"),
                             TextColumn("{task.fields[terms]}"), console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps, terms="", rate="")

    def step(self, epoch: int, steps_done: int, steps: int, terms: Dict[str, float]) -> None:
        now = time.monotonic()
        per_step = (now - self._started) / max(steps_done, 1)
        rate = self._samples / per_step if per_step > 0 else 0.0
        if self._bar is not None:
            tokens = terms.get(TOKENS_PER_S)
            text = "  ".join(f"{k} {v:.4f}" for k, v in terms.items() if k != TOKENS_PER_S)
            rate_text = f"{rate:.0f} samples/s" + (f" {tokens:.0f} tokens/s" if tokens is not None else "")
            self._bar.update(self._task, completed=steps_done, terms=text, rate=rate_text)
        elif now - self._last_line >= self._every and steps_done < steps:
            # a log file or CI: a plain line every progress_every seconds, none at the epoch's end
            # (the epoch's own line follows at once)
            self._last_line = now
            total, left = self._epochs_total, steps - steps_done
            later = (total - epoch - 1) * steps * per_step
            self.console.print(progress_line(epoch, total, steps_done, steps, terms, rate, left * per_step,
                                             left * per_step + later if later > 0 else None),
                               soft_wrap=True, highlight=False)

    def epoch_end(self, row: Dict[str, Any], total_epochs: int) -> None:
        self.close()
        stage = row.get("stage")
        self.console.print(epoch_line(row, total_epochs, stage if stage in self._declared else None))

    def validation(self, row: Dict[str, Any]) -> None:
        self.close()
        shown = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k.startswith("val_"))
        self.console.print(f"step {row['step']} (epoch {row['epoch']:.2f})  {shown}", highlight=False)

    def warning(self, message: str) -> None:
        self.console.print(f"note: {message}")

    def run_end(self, result: RunResult) -> None:
        self.close()
        if result.rows:
            self.console.print(summary_table(result.rows))
        if not result.eval_only:
            self.console.print(closing_lines(result))

    def close(self) -> None:
        """Stop the progress bar (also after a failure, so that the terminal is left clean)."""
        bar: Optional[Any] = self._bar
        self._bar = None
        if bar is not None:
            bar.stop()
