"""What a run tells its caller: progress events (a :class:`Reporter`) and the :class:`RunResult`.

The trainer never prints. It calls a reporter at the start of the run, at each epoch's start,
every few steps, at each epoch's end (with the epoch's metrics), with warnings, and at the end
of the run; the command line renders those events with rich, a notebook or a test can collect
them. Only rank 0 of a distributed run reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple



# the key of a language model's training throughput in the terms a reporter's ``step`` gets
# (real tokens trained per second this epoch, generated ones included): a rate, not a loss term
TOKENS_PER_S = "tokens/s"

@dataclass(frozen=True)
class StageInfo:
    """A stage of the run (``stage_start``): epochs ``first_epoch`` (0-based) up to ``end_epoch``
    (exclusive), its phases as ``(name, repeat)`` in the order a step runs them. ``declared``:
    a ``stage`` of the spec, not the implicit one of a spec without stages; ``phased``: its loss
    terms are reported as ``PHASE/TERM``."""

    name: str
    first_epoch: int
    end_epoch: int
    phases: Tuple[Tuple[str, int], ...]
    declared: bool = False
    phased: bool = False
    batch_size: Optional[int] = None  # its own batch size; None: the run's


@dataclass(frozen=True)
class RunStart:
    """What a run is about to do (``run_start``)."""

    spec_file: str
    student: str
    student_params: int
    teachers: Dict[str, Dict[str, float]]  # name -> top1, top5, loss, params (evaluated once)
    data: str
    train_size: int
    val_size: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    optimizer: str  # what the first stage's phases train with and at which lr: "sgd lr 0.05"
    lr_schedule: str
    seed: int
    device: str
    amp: Optional[str]
    world: int
    out: str
    start_epoch: int = 0  # epochs already done (a resumed run)
    resumed: bool = False
    stages: Tuple[StageInfo, ...] = ()  # every stage of the run, in order
    input: Optional[str] = None  # the spec's `input` expression (a generator's run), as written
    progress_every: float = 30.0  # seconds between progress lines where the output is not a terminal


@dataclass(frozen=True)
class RunFiles:
    """Paths of the files a run wrote (``curves`` is None without matplotlib)."""

    out: str
    checkpoint: str
    student: str
    metrics_jsonl: str
    metrics_csv: str
    summary: str
    curves: Optional[str] = None
    models: Dict[str, str] = field(default_factory=dict)  # every trained model: name -> models/NAME.pt
    connectors: Dict[str, str] = field(default_factory=dict)  # stage -> connectors/STAGE.pt
    best: Optional[str] = None  # best.pt: the student at the best epoch (None without validation)
    environment: Optional[str] = None  # environment.json
    spec: Optional[str] = None  # spec/: the spec and its includes
    tensorboard: Optional[str] = None  # tensorboard/: event files (--tensorboard)


@dataclass
class RunResult:
    """What ``kdsl.train`` returns.

    ``final``: the student's last validation metrics (top1, top5, loss); ``history``: one row per
    epoch (as metrics.jsonl holds them); ``teachers``: each frozen teacher's metrics; ``peers``:
    each trained teacher's final metrics; ``best``: the epoch of best.pt, ``{"epoch", "metric",
    "value", "mode"}`` (and ``top1`` for a classifier; see
    :func:`kdsl.training.metrics.best_epoch`); ``summary``: what summary.json holds; ``rows``: a
    row per model for a results table; ``files``: the paths written.
    """

    final: Dict[str, float]
    history: List[Dict[str, Any]]
    teachers: Dict[str, Dict[str, float]]
    best: Optional[Dict[str, Any]]
    summary: Dict[str, Any]
    rows: List[Dict[str, Any]]
    files: RunFiles
    seconds: float
    eval_only: bool = False
    config: Dict[str, Any] = field(default_factory=dict)
    peers: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def metrics(self) -> Dict[str, float]:
        """The final metrics (same as ``final``)."""
        return self.final


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (a KeyboardInterrupt, so that whatever stops on one still does):
    ``saved`` epochs of ``epochs`` are in the checkpoint of ``out``, and ``steps`` steps of the
    epoch after them (checkpoint_every; both 0: nothing to resume)."""

    def __init__(self, out: str, saved: int, epochs: int, steps: int = 0) -> None:
        self.out, self.saved, self.epochs, self.steps = out, saved, epochs, steps
        if steps:
            text = (f"interrupted: step {steps} of epoch {saved + 1} of {epochs} is saved in {out}; "
                    "kdsl.train(..., resume=True) with the same settings continues from it")
        elif saved:
            text = (f"interrupted: epoch {saved} of {epochs} is saved in {out}; "
                    "kdsl.train(..., resume=True) with the same settings continues from it")
        else:
            text = f"interrupted before the first epoch was saved: {out} holds nothing to resume"
        super().__init__(text)


class Reporter:
    """Progress events of a run; every method does nothing here: override the ones you need."""

    def run_start(self, info: RunStart) -> None:
        """Before the first epoch (after the teachers were evaluated)."""

    def stage_start(self, info: StageInfo) -> None:
        """A stage starts (or resumes): before its first epoch of this process."""

    def epoch_start(self, epoch: int, total_epochs: int, steps: int) -> None:
        """Epoch ``epoch`` (0-based) of ``total_epochs`` starts; it has ``steps`` steps."""

    def step(self, epoch: int, steps_done: int, steps: int, terms: Dict[str, float]) -> None:
        """Every few steps: the mean of each weighted loss term so far this epoch."""

    def epoch_end(self, row: Dict[str, Any], total_epochs: int) -> None:
        """The epoch's metrics row (epoch is 1-based here, as in metrics.jsonl)."""

    def validation(self, row: Dict[str, Any]) -> None:
        """A validation within an epoch (``val_every``): ``epoch`` (fractional), ``step`` and the
        student's ``val_*`` metrics, as in validation.jsonl."""

    def warning(self, message: str) -> None:
        """Something the user should know that does not stop the run."""

    def run_end(self, result: RunResult) -> None:
        """After the last epoch (or the evaluation of ``eval_only``), once summary.json is written."""


class EventLog(Reporter):
    """A reporter that keeps every event as ``(name, payload)``: for tests and notebooks."""

    def __init__(self) -> None:
        self.events: List[tuple] = []

    def run_start(self, info: RunStart) -> None:
        self.events.append(("run_start", info))

    def stage_start(self, info: StageInfo) -> None:
        self.events.append(("stage_start", info))

    def epoch_start(self, epoch: int, total_epochs: int, steps: int) -> None:
        self.events.append(("epoch_start", epoch))

    def step(self, epoch: int, steps_done: int, steps: int, terms: Dict[str, float]) -> None:
        self.events.append(("step", (epoch, steps_done)))

    def epoch_end(self, row: Dict[str, Any], total_epochs: int) -> None:
        self.events.append(("epoch_end", row))

    def validation(self, row: Dict[str, Any]) -> None:
        self.events.append(("validation", row))

    def warning(self, message: str) -> None:
        self.events.append(("warning", message))

    def run_end(self, result: RunResult) -> None:
        self.events.append(("run_end", result))
