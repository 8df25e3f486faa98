"""THE table of training settings: every setting of ``kdsl train`` declared once.

A :class:`Setting` says what a setting is (value type, default, allowed range, help text) and
where it may be given: the spec's ``train { }`` block (``spec``), a command-line flag (``flag``),
the data's options (``dataset("...", batch_size=64)`` or ``--data 'ref(batch_size=64)'``:
``data_option``). Everything else is derived from this table: the verifier's train-block check
(``kdsl.lang.verify_train``), the trainer's config object and provenance record
(``kdsl.training.config``), and the ``kdsl train`` flags (``kdsl.cli.train_cmd``). Adding a
setting is one entry here plus the code that uses it. ``kdsl.train(spec, **settings)`` accepts
every setting by keyword, with the same precedence as a flag.

Torch-free, like the rest of the catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from kdsl.catalog.types import BOOL, FLOAT, INT, STR, ValueType, choice, list_of, optional

# Where a value of a run came from, later ones winning: kdsl's default, the spec's train block,
# the caller (a command-line flag, or a keyword argument of kdsl.train).
SOURCES: Tuple[str, ...] = ("default", "spec", "flag")


@dataclass(frozen=True)
class Setting:
    """One training setting.

    ``type`` is None for a setting whose value is a call: ``call`` then names what is called
    (``"data"``: a data reference; otherwise a catalog kind, ``"optimizer"`` or
    ``"lr_schedule"``), and the default is ``(name, options)``. ``minimum`` and ``maximum`` are
    inclusive bounds (a maximum keeps absurd values - a 20-digit batch size, 100,000 threads - from
    reaching torch, which fails on them without a message); ``positive`` asks for a finite number
    above zero.
    """

    name: str
    type: Optional[ValueType]
    default: Any
    help: str
    spec: bool = True
    flag: Optional[str] = None
    data_option: bool = False
    call: Optional[str] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    positive: bool = False
    example: str = ""  # what a value looks like where the help text alone does not say

    @property
    def label(self) -> str:
        """How messages about a value given by the caller name the setting."""
        return self.flag or self.name

    def range_problem(self, value: Any) -> Optional[str]:
        """What is wrong with a value of the right type ("must be at least 1"), or None."""
        if value is None or isinstance(value, bool):
            return None
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {_number(self.minimum)}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {_number(self.maximum)}"
        if self.positive and not (value > 0 and math.isfinite(value)):
            return "must be a positive number"
        return None

    def flag_help(self) -> str:
        """The ``--help`` text of the flag: the help and an example (choices show as the metavar)."""
        text = self.help
        if self.example:
            text += f", e.g. {self.example}"
        return text


# The validation metrics a run can pick its best epoch by, and which way is better: the names of
# the trainer's rows (kdsl.training.metrics reads this table).
METRICS: Dict[str, str] = {"val_top1": "max", "val_top5": "max", "val_loss": "min", "val_ppl": "min",
                           "val_token_acc": "max"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SETTINGS: Tuple[Setting, ...] = (
    Setting("data", None, None,
            "the data: a factory of datasets with its options (batch_size, num_workers and drop_last "
            "go to the data loaders)",
            flag="--data", call="data", example='kdsl.data:cifar100(root="data", batch_size=128)'),
    Setting("epochs", INT, 10, "number of epochs", flag="--epochs", minimum=1, maximum=1_000_000),
    Setting("steps_per_epoch", optional(INT), None,
            "training steps per epoch: required when the input comes from a generator "
            "(input = ...) and the spec gives no data; with data, an epoch stops after this many batches",
            flag="--steps-per-epoch", minimum=1, maximum=1_000_000_000),
    Setting("batch_size", INT, 64, "samples per batch (per process)", flag="--batch-size", minimum=1,
            maximum=2**31 - 1,
            data_option=True),
    Setting("optimizer", None, ("sgd", {}), "the optimizer, e.g. sgd(lr=0.05, momentum=0.9)",
            flag="--optimizer", call="optimizer"),
    Setting("lr", optional(FLOAT), None, "learning rate (replaces the optimizer's)", spec=False,
            flag="--lr", positive=True),
    Setting("lr_schedule", None, ("cosine", {}), "the learning-rate schedule, e.g. cosine()",
            call="lr_schedule"),
    Setting("seed", INT, 0, "random seed", flag="--seed", minimum=0, maximum=2**32 - 1),
    Setting("device", choice("cpu", "cuda", "auto"), "auto", "where to train", flag="--device"),
    Setting("amp", optional(choice("bf16", "fp16")), None,
            "mixed precision: bf16 (CPU or GPU) or fp16 (GPU)", flag="--amp"),
    Setting("out", STR, None, "output directory (default runs/SPEC_NAME)", flag="--out"),
    Setting("num_workers", INT, 0, "data-loader worker processes", minimum=0, maximum=1024,
            data_option=True),
    Setting("grad_clip", optional(FLOAT), None, "clip the gradient norm to this value"),
    Setting("accumulate", INT, 1,
            "gradient accumulation: each optimizer steps once every this many updates, on their summed "
            "gradients (each loss / accumulate); an epoch's remainder steps on its own",
            flag="--accumulate", minimum=1, maximum=1_000_000),
    Setting("eval_teachers", BOOL, True, "evaluate the teachers once per run"),
    Setting("allow_random_teacher", BOOL, False,
            "train even though a frozen teacher loads no weights (no `from`, no pretrained option): "
            "without it such a run is refused (KD730)", flag="--allow-random-teacher"),
    Setting("threads", INT, None,
            "torch's CPU threads; default: OMP_NUM_THREADS if set, else min(free cores, size cap): "
            "free cores = cores - 1-minute load average, size cap = 2 under 1M parameters (student "
            "+ teachers), 4 under 10M; summary.json records the count and why",
            flag="--threads", minimum=1, maximum=1024),
    Setting("drop_last", BOOL, False, "drop the last, incomplete training batch of each epoch",
            spec=False, data_option=True),
    Setting("teacher_cache", optional(STR), None,
            "a teacher-output store (written by `kdsl teacher-cache`) whose frozen teachers' records "
            "replace their passes; refused if it does not fit the run",
            spec=False, flag="--teacher-cache"),
    Setting("inputs", optional(list_of(STR)), None,
            "the batch fields every model is called with, by keyword, when the data's items are "
            "dicts (default: every field but labels, target and index)",
            example='inputs = ["input_ids", "attention_mask"]'),
    Setting("task", optional(choice("classification", "lm")), None,
            "what the validation metrics measure: classification (top-1, top-5, loss) or lm "
            "(token loss, perplexity, next-token accuracy); default: what the data says "
            "(kdsl.data:text is lm), else classification", flag="--task"),
    Setting("best_metric", optional(choice(*METRICS)), None,
            "the validation metric that picks best.pt's epoch (default: val_top1, or val_ppl for a "
            "language model)", flag="--best-metric"),
    Setting("tensorboard", BOOL, False,
            "log every loss term, term weight, learning rate and validation metric to OUT/tensorboard "
            "(needs pip install tensorboard)", flag="--tensorboard"),
    Setting("compile", BOOL, False,
            "torch.compile the student and the frozen teachers, kdsl's hooks in place (falls back "
            "to eager with KD708 where compiling is unavailable)", flag="--compile"),
    Setting("truncate", BOOL, True,
            "stop a pass once it has recorded all the step needs (kdsl explain says where); "
            "--no-truncate runs every pass in full", flag="--truncate"),
    Setting("progress_every", FLOAT, 30.0,
            "seconds between progress lines when the output is not a terminal (a log file, CI)",
            flag="--progress-every", positive=True, maximum=86_400),
)

BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}
SPEC_SETTINGS: Dict[str, Setting] = {s.name: s for s in SETTINGS if s.spec}
DATA_OPTIONS: Dict[str, Setting] = {s.name: s for s in SETTINGS if s.data_option}
FLAG_SETTINGS: Tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag)
