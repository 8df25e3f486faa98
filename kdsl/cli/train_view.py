"""``kdsl train`` on the terminal: the trainer's progress events rendered with rich."""

from __future__ import annotations

from typing import Any, Dict, Optional, Set

from rich.table import Table

from kdsl.training.report import Reporter, RunResult, RunStart, StageInfo


def epoch_line(row: Dict[str, Any], total_epochs: int, stage: Optional[str] = None) -> str:
    """One epoch's metrics; ``stage`` names a declared stage (a spec without stages has none)."""
    terms = ", ".join(f"{k[6:]} {v:.4f}" for k, v in row.items() if k.startswith("train/"))
    val = ""
    if "val_top1" in row:
        val = (f"  val top-1 {row['val_top1']:.2f}%  top-5 {row['val_top5']:.2f}%"
               f"  val loss {row['val_loss']:.4f}")
    peers = "".join(f"  {k[9:]} top-1 {v:.2f}%" for k, v in row.items() if k.startswith("val_top1/"))
    # a stage with phases has a learning rate per phase
    lrs = [f"{k[3:]} {v:.4g}" for k, v in row.items() if k.startswith("lr/")] or [f"{row['lr']:.4g}"]
    return (f"epoch {row['epoch']:>3}/{total_epochs}" + (f"  stage {stage}" if stage else "")
            + f"  loss {row['train_loss']:.4f}" + (f" ({terms})" if terms else "")
            + val + peers + f"  lr {', '.join(lrs)}  {row['time_s']:.1f}s")


def summary_table(rows) -> Table:
    table = Table(title="kdsl train: results on the validation set", title_justify="left")
    for col in ("model", "role", "params", "top-1 (%)", "top-5 (%)", "val loss"):
        table.add_column(col, justify="left" if col in ("model", "role") else "right")
    for r in rows:
        table.add_row(r["model"], r["role"], f"{r['params']:,}", f"{r['top1']:.2f}",
                      f"{r['top5']:.2f}", f"{r['loss']:.4f}")
    return table


def _phases(info: StageInfo) -> str:
    return ", ".join(f"{name} x{repeat}" if repeat > 1 else name for name, repeat in info.phases)


def _epochs(info: StageInfo) -> str:
    first, last = info.first_epoch + 1, info.end_epoch
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


def announce(info: RunStart) -> str:
    parts = [f"student {info.student} ({info.student_params:,} params)"]
    for name, m in info.teachers.items():
        parts.append(f"teacher {name} ({m['params']:,} params, top-1 {m['top1']:.2f}%)")
    world = f", {info.world} processes" if info.world > 1 else ""
    if info.input is None:
        data = f"data {info.data} ({info.train_size} train / {info.val_size} val)"
    else:
        data = f"input {info.input}, " + (f"data {info.data} for evaluation ({info.val_size} val)"
                                          if info.val_size else "no data to evaluate on")
    text = (f"kdsl train {info.spec_file}: " + ", ".join(parts) + "\n"
            f"  {data}, {info.epochs} epochs of {info.steps_per_epoch} steps, batch {info.batch_size}, "
            f"{info.optimizer} lr {info.lr:g}, {info.lr_schedule} schedule, seed {info.seed}, "
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
    elif result.teachers:
        name, t = next(iter(result.teachers.items()))
        who = "the teacher" if name == "teacher" else f"teacher {name}"
        best = result.best
        first = (f"student top-1 {student['top1']:.2f}% next to {who}'s {t['top1']:.2f}% "
                 f"({student['top1'] - t['top1']:+.2f} points); best {best['top1']:.2f}% at "
                 f"epoch {best['epoch']}" if best else "")
    else:
        first = f"student top-1 {student['top1']:.2f}%"
    if student and result.peers:
        first += "".join(f"; peer {name} top-1 {m['top1']:.2f}%" for name, m in result.peers.items())
    extra = "".join(f", {folder}/ ({', '.join(names)})" for folder, names in
                    (("models", result.files.models), ("connectors", result.files.connectors)) if names)
    return (f"{first}\nrun written to {result.files.out} ({result.seconds:.1f}s): student.pt, checkpoint.pt, "
            f"metrics.jsonl, metrics.csv, curves.png, summary.json{extra}")


class RichReporter(Reporter):
    """Lines for the run's start, each stage, each epoch and the end; a live progress bar on a
    terminal."""

    def __init__(self, console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._bar = None
        self._task = None
        self._declared: Set[str] = set()  # stages of the spec (named in the epoch lines)

    def run_start(self, info: RunStart) -> None:
        if info.resumed and info.start_epoch >= info.epochs:
            self.console.print(f"{info.out}: the run is complete ({info.start_epoch} epochs); nothing to resume")
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
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn(f"epoch {epoch + 1}/{total_epochs}"), BarColumn(),
                             MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[terms]}"),
                             console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps, terms="")

    def step(self, epoch: int, steps_done: int, steps: int, terms: Dict[str, float]) -> None:
        if self._bar is not None:
            text = "  ".join(f"{k} {v:.4f}" for k, v in terms.items())
            self._bar.update(self._task, completed=steps_done, terms=text)

    def epoch_end(self, row: Dict[str, Any], total_epochs: int) -> None:
        self.close()
        stage = row.get("stage")
        self.console.print(epoch_line(row, total_epochs, stage if stage in self._declared else None))

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
