"""The settings of a run: the table (:mod:`kdsl.catalog.settings`) -> one :class:`TrainConfig`.

Values come from three places, later ones winning: the table's defaults, the spec's ``train { }``
block, the caller (``kdsl train`` flags, or keyword arguments of ``kdsl.train``). The config
records where each setting's value came from (``sources``: "default", "spec" or "flag"), for
every setting of the table, data options included. Torch-free.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from kdsl.catalog.binding import bind, type_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.settings import BY_NAME, DATA_OPTIONS, SETTINGS, Setting
from kdsl.core.diagnostics import error
from kdsl.core.literals import literal_text
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import literal_value
from kdsl.lang.printer import value_text
from kdsl.lang.lr_schedule import chain_value, is_chain
from kdsl.lang.param_groups import GROUPS, groups_value, split_groups
from kdsl.lang.refs import parse_call, parse_option_call


Call = Tuple[str, Dict[str, Any]]  # a call setting's value: (name, options), e.g. ("sgd", {"lr": 0.1})


def _default(name: str) -> Any:
    """A field whose default is the table's (one source: the table; a copy per config)."""
    return dataclasses.field(default_factory=lambda: copy.deepcopy(BY_NAME[name].default))


@dataclasses.dataclass
class TrainConfig:
    """The resolved settings of a run: one attribute per setting of
    :data:`kdsl.catalog.settings.SETTINGS`, in the table's order (the order summary.json shows;
    a test holds the two equal), and ``sources`` (where each value came from)."""

    data: Optional[Call] = _default("data")
    epochs: int = _default("epochs")
    steps_per_epoch: Optional[int] = _default("steps_per_epoch")
    batch_size: int = _default("batch_size")
    optimizer: Call = _default("optimizer")
    lr: Optional[float] = _default("lr")
    lr_schedule: Call = _default("lr_schedule")
    seed: int = _default("seed")
    device: str = _default("device")
    amp: Optional[str] = _default("amp")
    out: Optional[str] = _default("out")
    num_workers: int = _default("num_workers")
    grad_clip: Optional[float] = _default("grad_clip")
    accumulate: int = _default("accumulate")
    batch_transform: Optional[Call] = _default("batch_transform")
    collate: Optional[str] = _default("collate")
    batch_sampler: Optional[str] = _default("batch_sampler")
    contrast_negatives: Optional[int] = _default("contrast_negatives")
    zero_grad: str = _default("zero_grad")
    share_input: bool = _default("share_input")
    eval_teachers: bool = _default("eval_teachers")
    allow_random_teacher: bool = _default("allow_random_teacher")
    threads: Optional[int] = _default("threads")
    drop_last: bool = _default("drop_last")
    teacher_cache: Optional[str] = _default("teacher_cache")
    inputs: Optional[List[str]] = _default("inputs")
    task: Optional[str] = _default("task")
    best_metric: Optional[str] = _default("best_metric")
    visualize: Optional[str] = _default("visualize")
    visualize_channels: str = _default("visualize_channels")
    tensorboard: bool = _default("tensorboard")
    log: List[str] = _default("log")
    compile: bool = _default("compile")
    truncate: bool = _default("truncate")
    checkpoint_every: Optional[int] = _default("checkpoint_every")
    val_every: Optional[int] = _default("val_every")
    patience: Optional[int] = _default("patience")
    progress_every: float = _default("progress_every")
    # each param of the spec: {"value", "source"} (and "search"); see record_params
    params: Optional[Dict[str, Dict[str, Any]]] = _default("params")
    strategy: str = _default("strategy")
    shard_units: Optional[List[str]] = _default("shard_units")
    replicated: Optional[List[str]] = _default("replicated")
    offloaded: Optional[List[str]] = _default("offloaded")
    collective_timeout: float = _default("collective_timeout")
    sources: Dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> Dict[str, Any]:
        """The settings as JSON-ready data, with where each came from (default, spec or flag)."""
        d = dataclasses.asdict(self)
        d["sources"] = dict(self.sources)
        return json.loads(json.dumps(d, default=str))


def optimizer_of(cfg: TrainConfig, own: Optional[Call] = None) -> Call:
    """The optimizer a phase trains with: its own (``optimize ... with``), else the train block's
    with ``--lr`` in place of its lr (``--lr`` replaces the train block's only)."""
    if own is not None:
        return own[0], dict(own[1])
    name, options = cfg.optimizer
    options = dict(options)
    if cfg.lr is not None:
        options["lr"] = cfg.lr
    return name, options


def lr_of(optimizer: Call) -> float:
    """The learning rate an optimizer call trains with: its ``lr``, else its default
    (:func:`kdsl.training.optim.default_lr`: the catalog's, or a referenced class's)."""
    name, options = optimizer
    if "lr" in options:
        return options["lr"]
    from kdsl.training.optim import default_lr  # torch: only for an optimizer without its lr

    return default_lr(name, options)


def optimizers_text(cfg, phases) -> str:
    """What the first stage's phases train with: ``sgd lr 0.05``, or per phase when they differ
    (``make: adam lr 0.001, learn: sgd lr 0.1``): a phase's own optimizer counts."""
    texts = []
    for phase in phases or [None]:
        name, options = optimizer_of(cfg, phase.optimizer if phase is not None else None)
        texts.append((phase.name if phase is not None else "", f"{name} lr {lr_of((name, options)):g}"))
    if len({text for _, text in texts}) == 1:
        return texts[0][1]
    return ", ".join(f"{phase}: {text}" for phase, text in texts)


def flag_words(setting: Setting, value: Any) -> List[str]:
    """The command-line words that give ``setting`` the value ``value``, printed as the language
    writes values (``--optimizer 'sgd(lr=0.05)'`` once shell-quoted); [] when the flag cannot say
    it (none: leave the flag out)."""
    if value is None or setting.flag is None:
        return []
    if setting.name == "params":  # the record of record_params: a --set for each value given
        return [w for name, entry in value.items() if entry["source"] != "spec"
                for w in (setting.flag, f"{name}={literal_text(entry['value'])}")]
    if isinstance(value, bool):
        return [setting.flag if value else "--no-" + setting.flag[2:]]
    if isinstance(value, list) and setting.call is None:  # a list flag takes comma-separated text (--log mlflow,wandb)
        return [setting.flag, ",".join(str(v) for v in value)] if value else []
    if setting.call is not None:
        return [setting.flag, value_text(value)]
    if isinstance(value, str):
        return [setting.flag, value]  # a choice or a path: the flag takes the text itself
    return [setting.flag, value_text(value)]


def given_flags(cfg: TrainConfig, settings) -> List[str]:
    """The words of the flags among ``settings`` (Setting objects) that the caller gave ``cfg``."""
    return [w for s in settings if cfg.sources.get(s.name) == "flag" for w in flag_words(s, getattr(cfg, s.name))]


def resolve_config(spec: ir.Spec, given: Mapping[str, Any]) -> TrainConfig:
    """Defaults, then the spec's train block, then ``given`` (None values: not given).

    ``given`` maps setting names to values: typed values for plain settings, text in the
    language's call syntax for ``data`` (``"kdsl.data:digits(batch_size=16)"``), ``optimizer``
    and ``lr_schedule`` (``"sgd(lr=0.1)"``). A bad value is a KD701 error. ``params`` are given
    when the spec is loaded (``kdsl.load(path, params)``): ``cfg.params`` records the spec's.
    """
    cfg = TrainConfig()
    cfg.sources = {s.name: "default" for s in SETTINGS}
    for s in spec.train.settings:
        _apply_spec_setting(cfg, s)
    for name, value in given.items():
        if value is None or name == "params":  # applied when the spec was loaded: record_params
            continue
        setting = BY_NAME.get(name)
        if setting is None:
            raise error("KD701", f"unknown training setting '{name}'",
                        hint=did_you_mean(name, list(BY_NAME)) or "settings: " + ", ".join(BY_NAME))
        _apply_given(cfg, setting, value)
    if cfg.out is None:
        stem = os.path.splitext(os.path.basename(spec.file))[0] if not spec.file.startswith("<") else "run"
        cfg.out = os.path.join("runs", stem)
    record_params(cfg, spec)
    return cfg


def record_params(cfg: TrainConfig, spec: ir.Spec) -> None:
    """The spec's params with their values' sources into ``cfg.params`` (summary.json's config);
    its source is "flag" when any value was given from outside the spec."""
    from kdsl.lang.search_spaces import param_record

    record = param_record(spec)
    given = any(entry["source"] != "spec" for entry in record.values())
    _set(cfg, "params", record or None, "flag" if given else "spec" if record else "default")


def _set(cfg, name: str, value: Any, source: str) -> None:
    setattr(cfg, name, value)
    cfg.sources[name] = source


def _apply_spec_setting(cfg, s: ir.TrainSetting) -> None:
    """A setting of the train block, which the verifier has already checked against the table."""
    setting = BY_NAME[s.key]
    if setting.call == "data":
        if isinstance(s.value, ir.Call):  # dataset("ref", k=v, ...)
            ref = literal_value(s.value.args[0])
            options = {k.name: literal_value(k.value) for k in s.value.kwargs}
        else:
            ref, options = literal_value(s.value), {}
        _set_data(cfg, ref, spec_relative_paths(options, s.span.file if s.span else ""), "spec")
    elif setting.call == "lr_schedule" and is_chain(s.value):
        _set(cfg, s.key, chain_value(s.value), "spec")
    elif setting.call is not None:
        call, groups = split_groups(s.value)
        name = call.func
        args = [literal_value(a) for a in call.args]
        kwargs = {k.name: literal_value(k.value) for k in call.kwargs}
        component = REGISTRY.get(setting.call, name)
        options = bind(component, args, list(kwargs.items()), inputs=False).options
        _set(cfg, s.key, (name, {**options, GROUPS: groups_value(groups)} if groups else options), "spec")
    else:
        _set(cfg, s.key, literal_value(s.value), "spec")


# The one path rule: a path written in a spec (checkpoint, include, or a data option named here)
# is relative to the spec file that wrote it; a path typed on the command line (--data, --out,
# --teacher-ckpt) is relative to the working directory, as every command-line tool's is.
PATH_OPTIONS = ("root", "path")
PATH_SUFFIXES = ("_root", "_dir", "_path", "_file")


def is_path_option(name: str) -> bool:
    """Whether a data option holds a file or folder path (``root``, ``path``, ``*_dir``, ...)."""
    return name in PATH_OPTIONS or name.endswith(PATH_SUFFIXES)


def spec_relative_paths(options: Dict[str, Any], spec_file: str) -> Dict[str, Any]:
    """``options`` with each relative path option (text, or a list of texts) joined to the folder
    of ``spec_file``; absolute paths, ``~`` paths and specs without a file stay as they are."""
    if not spec_file or spec_file.startswith("<"):
        return dict(options)
    base = os.path.dirname(spec_file)

    def join(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(value) and not value.startswith("~"):
            return os.path.normpath(os.path.join(base, value))
        return value

    return {k: ([join(x) for x in v] if isinstance(v, list) else join(v)) if is_path_option(k) else v
            for k, v in options.items()}


def _set_data(cfg, ref: str, options: Dict[str, Any], source: str) -> None:
    """The data reference and its factory's options; the data options of the table (batch_size,
    num_workers, drop_last) are taken out, checked and recorded as settings of their own."""
    options = dict(options)
    for name, setting in DATA_OPTIONS.items():
        if name in options:
            value = options.pop(name)
            if source != "spec":  # the verifier checked the spec's
                _check_value(setting, value, f"--data option '{name}'")
            _set(cfg, name, value, source)
    _set(cfg, "data", (ref, options), source)


def _apply_given(cfg, setting: Setting, value: Any) -> None:
    if setting.call == "data":
        ref, args, kwargs = parse_call(_text(setting, value), "data")
        if args:
            raise error("KD701", f"--data {_text(setting, value)}: data options are given by keyword, "
                        f"not by position ({len(args)} positional here)",
                        hint=f"e.g. --data '{ref}(root={value_text(args[0])})' (a path typed here is "
                        "relative to the working directory)")
        _set_data(cfg, ref, kwargs, "flag")
    elif setting.call is not None:
        name, args, kwargs = parse_option_call(_text(setting, value), setting.name)
        _set(cfg, setting.name, (name, _component_options(setting, name, args, kwargs)), "flag")
    else:
        if isinstance(value, str) and setting.type.name == "list":  # --log mlflow,wandb
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check_value(setting, value, setting.label)
        _set(cfg, setting.name, value, "flag")


def _text(setting: Setting, value: Any) -> str:
    if not isinstance(value, str):
        raise error("KD701", f"{setting.label} takes text in the language's call syntax, "
                    f"got {type(value).__name__}", hint=f"e.g. {setting.example or setting.help}")
    return value


def _check_value(setting: Setting, value: Any, label: str) -> None:
    if not setting.type.accepts(value):
        raise error("KD701", f"{label} must be {setting.type.describe()}, got {value_text(value)}", hint=setting.help)
    problem = setting.range_problem(value)
    if problem:
        raise error("KD701", f"{label} {problem}, got {value_text(value)}")


def _component_options(setting: Setting, name: str, args: List[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The options of an optimizer or lr schedule named by the caller, bound and type-checked."""
    kind, what = setting.call, setting.label
    component = REGISTRY.get(kind, name)
    if component is None:
        raise error("KD701", f"unknown {what} '{name}'", hint=did_you_mean(name, REGISTRY.names(kind))
                    or f"see `kdsl list {kind.replace('_', '-')}s`")
    binding = bind(component, list(args), list(kwargs.items()), inputs=False)
    for p in binding.problems:
        raise error("KD701", f"{what}: {p.message}", hint=p.hint)
    for key, value in binding.options.items():
        message = type_problem(component, component.option(key), value)
        if message:
            raise error("KD701", f"{what}: {message}")
    return binding.options

