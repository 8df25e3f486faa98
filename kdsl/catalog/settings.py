"""THE table of training settings: every setting of ``kdsl train`` declared once.

A :class:`Setting` says what a setting is (value type, default, allowed range, help text),
where it may be given (the spec's ``train { }`` block: ``spec``; a command-line flag: ``flag``,
on the commands of ``commands``; the data's options, ``dataset("...", batch_size=64)`` or
``--data 'ref(batch_size=64)'``: ``data_option``) and what a run does with it (``resumable``: a
``--resume`` may change it; ``fingerprinted``: a teacher store is built for its value;
``recorded``: each session of environment.json records it). Every list of settings is derived
from this table: the verifier's train-block check (``kdsl.lang.verify_train``), the trainer's
config and provenance record (``kdsl.training.config``), the resume guard
(``kdsl.training.resume``), environment.json (``kdsl.training.environment``), a store's rebuild
command (``kdsl.training.teacher_store``) and every command's setting flags
(``kdsl.cli.options``). Adding a setting is one entry here, its typed field in
``kdsl.training.config.TrainConfig`` (a test holds the two in step), and the code that uses it.
``kdsl.train(spec, **settings)`` accepts every setting by keyword, with the same precedence as a flag.

Torch-free, like the rest of the catalog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from kdsl.catalog.types import BOOL, FLOAT, INT, STR, ValueType, choice, list_of, optional


@dataclass(frozen=True)
class Setting:
    """One training setting.

    ``type`` is None for a setting whose value is a call: ``call`` then names what is called
    (``"data"``: a data reference; otherwise a catalog kind, ``"optimizer"`` or
    ``"lr_schedule"``), and the default is ``(name, options)``. ``minimum`` and ``maximum`` are
    inclusive bounds (a maximum keeps absurd values - a 20-digit batch size, 100,000 threads - from
    reaching torch, which fails on them without a message); ``positive`` asks for a number above
    zero. A number must be finite whatever its bounds (``1e400`` reads as infinity).

    ``resumable``: a ``--resume`` may give another value (it decides where or how fast the run
    goes, or what it reports, never a trained value); every other setting must keep the run's.
    ``fingerprinted``: a teacher store's values depend on it, so ``kdsl teacher-cache`` must be
    given the run's value. ``recorded``: each session of environment.json records it.
    ``commands``: the commands whose flags include this setting's ``flag``.
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
    resumable: bool = False
    fingerprinted: bool = False
    recorded: bool = False
    commands: Tuple[str, ...] = ("train",)
    reference: Optional[str] = None  # a "pkg.module:attr" reference to this kind of callable

    @property
    def label(self) -> str:
        """How messages about a value given by the caller name the setting."""
        return self.flag or self.name

    def range_problem(self, value: Any) -> Optional[str]:
        """What is wrong with a value of the right type ("must be at least 1"), or None."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return "must be a finite number"
        if self.minimum is not None and value < self.minimum:
            return f"must be at least {_number(self.minimum)}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {_number(self.maximum)}"
        if self.positive and not value > 0:
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


# The experiment trackers `log` may name (kdsl.training.loggers opens them; `--tensorboard` is
# `--log tensorboard`).
TRACKERS = ("tensorboard", "mlflow", "wandb")

# The commands that take a setting's flag: `kdsl train`, `kdsl teacher-cache` for what decides
# a store's values and how it is computed, and `kdsl sweep`, whose trials are `kdsl train` runs.
_TRAIN_AND_STORE = ("train", "teacher-cache", "sweep")

# The commands that read a spec and so take --set NAME=VALUE for its params (fmt does not: it
# rewrites the text as written).
PARAM_COMMANDS = ("check", "explain", "graph", "train", "teacher-cache", "sweep")

# The largest learning rate accepted (a flag's or an optimizer's): beyond it every step diverges,
# and from about 3.4e38 torch cannot even convert it to a float32 step (an internal error).
MAX_LR = 1e6


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SETTINGS: Tuple[Setting, ...] = (
    Setting("data", None, None,
            "the data: a factory of datasets with its options (batch_size, num_workers and drop_last "
            "go to the data loaders)",
            flag="--data", call="data", example='kdsl.data:cifar100(root="data", batch_size=128)',
            fingerprinted=True, commands=_TRAIN_AND_STORE),
    Setting("epochs", INT, 10, "number of epochs", flag="--epochs", minimum=1, maximum=1_000_000,
            commands=_TRAIN_AND_STORE),
    Setting("steps_per_epoch", optional(INT), None,
            "training steps per epoch: required when the input comes from a generator "
            "(input = ...) and the spec gives no data; with data, an epoch stops after this many batches",
            flag="--steps-per-epoch", minimum=1, maximum=1_000_000_000, commands=("train", "sweep")),
    Setting("batch_size", INT, 64, "samples per batch (per process)", flag="--batch-size", minimum=1,
            maximum=2**31 - 1,
            data_option=True, commands=_TRAIN_AND_STORE),
    Setting("optimizer", None, ("sgd", {}), "the optimizer, e.g. sgd(lr=0.05, momentum=0.9)",
            flag="--optimizer", call="optimizer"),
    Setting("lr", optional(FLOAT), None, "learning rate (replaces the optimizer's)", spec=False,
            flag="--lr", positive=True, maximum=MAX_LR),
    Setting("lr_schedule", None, ("cosine", {}), "the learning-rate schedule, e.g. cosine()",
            call="lr_schedule"),
    Setting("seed", INT, 0, "random seed", flag="--seed", minimum=0, maximum=2**32 - 1,
            fingerprinted=True, commands=_TRAIN_AND_STORE),
    Setting("device", choice("cpu", "cuda", "auto"), "auto", "where to train", flag="--device",
            resumable=True, recorded=True, commands=_TRAIN_AND_STORE),
    Setting("amp", optional(choice("bf16", "fp16")), None,
            "mixed precision: bf16 (CPU or GPU) or fp16 (GPU)", flag="--amp", fingerprinted=True,
            recorded=True, commands=_TRAIN_AND_STORE),
    Setting("out", STR, None, "output directory (default runs/SPEC_NAME)", flag="--out", resumable=True),
    Setting("num_workers", INT, 0, "data-loader worker processes", minimum=0, maximum=1024,
            data_option=True, resumable=True, recorded=True),
    Setting("grad_clip", optional(FLOAT), None, "clip the gradient norm to this value (above 0)",
            positive=True),
    Setting("accumulate", INT, 1,
            "gradient accumulation: each optimizer steps once every this many updates, on their summed "
            "gradients (each loss / accumulate); an epoch's remainder steps on its own",
            flag="--accumulate", minimum=1, maximum=1_000_000),
    Setting("batch_transform", None, None,
            "a transform of every training batch, e.g. mixup_cutmix() (DeiT) or rotations() (SSKD); "
            "`kdsl list batch-transforms`", flag="--batch-transform", call="batch_transform"),
    Setting("collate", optional(STR), None,
            "a collate function by reference, \"pkg.module:function\": called with the list of the "
            "dataset's items of each batch; it returns the batch (a dict: fields the models take by "
            "keyword, see inputs; or an (input, target) pair)", flag="--collate", reference="collate function"),
    Setting("batch_sampler", optional(STR), None,
            "a batch sampler by reference, \"pkg.module:Class\": Class(sampler, batch_size, drop_last) "
            "over kdsl's seeded, sharded sampler, yielding each batch's indices (grouped aspect ratios)",
            flag="--batch-sampler", reference="batch sampler"),
    Setting("contrast_negatives", optional(INT), None,
            "CRD's dataset-side negatives: every training batch carries batch.contrast_idx [N, 1 + K], "
            "each sample's index then K training samples of other classes drawn without replacement "
            "(RepDistiller's CIFAR100InstanceSample), for crd(..., contrast_idx=batch.contrast_idx)",
            flag="--contrast-negatives", minimum=1, maximum=1_000_000),
    Setting("zero_grad", choice("before_backward", "after_step"), "before_backward",
            "when a phase's optimizer clears its parameters' gradients: before_backward (each step "
            "on its own loss's gradients), or after_step, mmengine's backward/step/zero_grad order: "
            "what another phase's backward leaves on them (DFAD's and ZSKT's generator step on the "
            "student) carries into their next step"),
    Setting("share_input", BOOL, False,
            "a generated input (input = ...) is made once a step, by the phases that train its "
            "generator; the other phases reuse that batch, detached, instead of drawing their own "
            "(DAFL)"),
    Setting("eval_teachers", BOOL, True, "evaluate the teachers once per run", resumable=True),
    Setting("allow_random_teacher", BOOL, False,
            "train even though a frozen teacher loads no weights (no `from`, no pretrained option): "
            "without it such a run is refused (KD730)", flag="--allow-random-teacher", resumable=True),
    Setting("threads", INT, None,
            "torch's CPU threads; default: OMP_NUM_THREADS if set, else min(cores, size cap), never "
            "the machine's momentary load (a seed reproduces its numbers): size cap = 2 under 1M "
            "parameters (student + teachers), 4 under 10M; summary.json records the count and why",
            flag="--threads", minimum=1, maximum=1024, resumable=True, recorded=True,
            commands=_TRAIN_AND_STORE),
    Setting("drop_last", BOOL, False, "drop the last, incomplete training batch of each epoch",
            spec=False, data_option=True),
    Setting("teacher_cache", optional(STR), None,
            "a teacher-output store (written by `kdsl teacher-cache`) whose frozen teachers' records "
            "replace their passes; refused if it does not fit the run",
            spec=False, flag="--teacher-cache", resumable=True),
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
            "language model)", flag="--best-metric", commands=("train", "sweep")),
    Setting("visualize", optional(STR), None,
            "records whose feature maps are drawn after each epoch for the first validation samples, "
            "e.g. \"s_feat,t_feat\": OUT/visualize/epoch_NNN.png", flag="--visualize", resumable=True),
    Setting("visualize_channels", choice("mean", "top"), "mean",
            "what --visualize draws of a map: the mean over its channels, or its 3 most active channels",
            flag="--visualize-channels", resumable=True),
    Setting("tensorboard", BOOL, False,
            "log every loss term, term weight, learning rate and validation metric to OUT/tensorboard "
            "(needs pip install tensorboard)", flag="--tensorboard", resumable=True),
    Setting("log", list_of(choice(*TRACKERS)), [],
            "where the run's scalars also go: tensorboard (OUT/tensorboard), mlflow (MLFLOW_TRACKING_URI, "
            "else sqlite in OUT/mlflow) and wandb (offline when WANDB_MODE=offline); each needs its package",
            flag="--log", example="--log tensorboard,mlflow,wandb", resumable=True),
    Setting("compile", BOOL, False,
            "torch.compile the student and the frozen teachers, kdsl's hooks in place (falls back "
            "to eager with KD708 where compiling is unavailable)", flag="--compile", resumable=True),
    Setting("truncate", BOOL, True,
            "stop a pass once it has recorded all the step needs (kdsl explain says where); "
            "--no-truncate runs every pass in full", flag="--truncate", resumable=True),
    Setting("checkpoint_every", optional(INT), None,
            "also write checkpoint.pt every N training steps within an epoch, which --resume "
            "continues bit for bit (default: at each epoch's end only)",
            flag="--checkpoint-every", minimum=1, maximum=1_000_000_000, resumable=True),
    Setting("val_every", optional(INT), None,
            "also validate the student every N training steps within an epoch (validation.jsonl, "
            "TensorBoard's val/ tags; default: at each epoch's end only)",
            flag="--val-every", minimum=1, maximum=1_000_000_000, resumable=True),
    Setting("patience", optional(INT), None,
            "early stopping: end the run after this many epochs without a better best_metric "
            "(default: train every epoch)", flag="--patience", minimum=1, maximum=1_000_000),
    Setting("progress_every", FLOAT, 30.0,
            "seconds between progress lines when the output is not a terminal (a log file, CI)",
            flag="--progress-every", positive=True, maximum=86_400, resumable=True),
    # resumable: the values are in the spec the run's fingerprint reads, which a resumption keeps
    Setting("params", optional(list_of(STR)), None,
            "a value for the spec's param NAME, written as the spec writes values (repeat the flag "
            "for several); summary.json records each param with its source",
            spec=False, flag="--set", example="--set tau=2", resumable=True, commands=PARAM_COMMANDS),
    Setting("strategy", choice("ddp", "fsdp"), "ddp",
            "how a torchrun launch holds the models: ddp (each process holds every model whole) or fsdp "
            "(FSDP2: each model's parameters, gradients and optimizer state sharded over the processes); "
            "one process ignores it", flag="--strategy", resumable=True, recorded=True),
    Setting("shard_units", optional(list_of(STR)), None,
            "under fsdp, the module paths each model is sharded in, unit by unit (patterns: * is one "
            "path segment, ** any run of them) "
            "(default: every child of the model's ModuleLists, e.g. each transformer block)",
            example='shard_units = ["blocks.*"]'),
    Setting("replicated", optional(list_of(STR)), None,
            "under fsdp, the models held whole on every process instead of sharded",
            example='replicated = ["student"]'),
    Setting("offloaded", optional(list_of(STR)), None,
            "under fsdp, the frozen teachers whose parameter shards stay on the CPU between uses "
            "(CPUOffloadPolicy)", example='offloaded = ["teacher"]'),
    Setting("collective_timeout", FLOAT, 600.0,
            "under torchrun, the seconds a process waits in a collective (a gradient reduction, a "
            "barrier) before it fails, so that a process that died takes the others down instead of "
            "leaving them waiting", flag="--collective-timeout", positive=True, maximum=86_400,
            resumable=True),
)

BY_NAME: Dict[str, Setting] = {s.name: s for s in SETTINGS}
SPEC_SETTINGS: Dict[str, Setting] = {s.name: s for s in SETTINGS if s.spec}
DATA_OPTIONS: Dict[str, Setting] = {s.name: s for s in SETTINGS if s.data_option}
FLAG_SETTINGS: Tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag)
# what a resumption must keep: the settings that decide what the run trains
RUN_SETTINGS: Tuple[str, ...] = tuple(s.name for s in SETTINGS if not s.resumable)
FINGERPRINTED: Tuple[str, ...] = tuple(s.name for s in SETTINGS if s.fingerprinted)
RECORDED: Tuple[str, ...] = tuple(s.name for s in SETTINGS if s.recorded)


def command_flags(command: str) -> Tuple[Setting, ...]:
    """The settings whose flags ``kdsl COMMAND`` takes, in the table's order."""
    return tuple(s for s in FLAG_SETTINGS if command in s.commands)
