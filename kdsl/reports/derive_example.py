"""The dry run's example when the command line gives none (``kdsl check --dry-run``,
``kdsl explain``): shapes are all a dry run needs, so kdsl makes zeros of the right shape rather
than reading data or asking for a flag, from what it knows without loading anything:

1. the data reader of the spec's train block, when it declares its examples: a factory with an
   ``example_input(rows, **options)`` attribute returning ``(input, batch fields)`` (the built-in
   ``kdsl.data:digits``, ``cifar10`` and ``cifar100`` do; nothing is read from disk);
2. the student's first layer: an ``Embedding`` takes token ids (as many as the model's
   ``seq_len``, or a Hugging Face config's ``n_positions``/``max_position_embeddings``, at most
   :data:`TOKENS`), with an all-ones ``attention_mask`` and ``labels`` in the batch; a ``Linear``
   takes ``in_features``; a ``Conv2d`` takes its input channels at :data:`SIDE` x :data:`SIDE`
   (a guess, said so in the output: the layer does not fix the image size). With the train
   block's ``inputs``, the models are called with those batch fields by keyword.

Otherwise there is no dry run, and what needs one says which flag to pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
from torch import nn

from kdsl.catalog.settings import DATA_OPTIONS
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError
from kdsl.core.resolve import import_ref
from kdsl.lang import ir
from kdsl.lang.literal import try_literal

ROWS = 2  # norm layers in training mode need two rows; the dry run needs no more
TOKENS = 16  # a token model's example length: enough for every shape, cheap for attention
SIDE = 32  # the side of a guessed image: CIFAR's, which every small-input zoo model takes


@dataclass
class Example:
    """A derived example: the models' input, the batch fields, and where it came from (shown)."""

    input: Any
    batch: Dict[str, Any]
    source: str


def _shape(x: Any) -> str:
    return "x".join(str(d) for d in x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def from_data_reader(spec: ir.Spec) -> Optional[Example]:
    """The example the spec's data reader declares, or None (no data, or no declaration)."""
    setting = spec.train.get("data")
    if setting is None:
        return None
    value = setting.value
    if isinstance(value, ir.Call) and value.args:
        ok, ref = try_literal(value.args[0])
        options = {}
        for k in value.kwargs:
            good, v = try_literal(k.value)
            if good:
                options[k.name] = v
    else:
        ok, ref = try_literal(value)
        options = {}
    if not ok or not isinstance(ref, str):
        return None
    try:
        factory = import_ref(ref, "data")
    except KdslError:
        return None  # the data module is not importable here: the models may still tell
    make = getattr(factory, "example_input", None)
    if not callable(make):
        return None
    options = {k: v for k, v in options.items() if k not in DATA_OPTIONS}  # the loaders', not the factory's
    try:
        x, batch = make(ROWS, **options)
    except Exception:  # noqa: BLE001 - a declaration that does not take these options
        return None
    return Example(x, dict(batch), f"declared by the data reader {ref}")


def _token_length(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for owner, name in ((model, "seq_len"), (config, "n_positions"), (config, "max_position_embeddings")):
        value = getattr(owner, name, None) if owner is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, TOKENS)
    return TOKENS


def from_first_layer(name: str, model: nn.Module) -> Optional[Example]:
    """An example that the first layer of ``model`` (in module order) takes, or None."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Embedding, nn.Linear, nn.Conv2d))), None)
    classes = {"target": torch.zeros(ROWS, dtype=torch.long), "index": torch.arange(ROWS)}
    if isinstance(first, nn.Embedding):
        length = _token_length(model)
        ids = torch.zeros(ROWS, length, dtype=torch.long)
        return Example(ids, {"attention_mask": torch.ones_like(ids), "labels": torch.zeros_like(ids),
                             "index": torch.arange(ROWS)},
                       f"token ids: {name}'s first layer is an Embedding ({length} tokens)")
    if isinstance(first, nn.Linear):
        return Example(torch.zeros(ROWS, first.in_features), classes,
                       f"{name}'s first layer is a Linear with {first.in_features} input features")
    if isinstance(first, nn.Conv2d):
        return Example(torch.zeros(ROWS, first.in_channels, SIDE, SIDE), classes,
                       f"guessed: {name}'s first layer is a Conv2d with {first.in_channels} input "
                       f"channels; {SIDE}x{SIDE} images assumed (--input-shape for another size)")
    return None


def _inputs_setting(spec: ir.Spec) -> Optional[list]:
    """The train block's ``inputs`` (the batch fields models are called with), if literal."""
    setting = spec.train.get("inputs")
    ok, value = try_literal(setting.value) if setting is not None else (False, None)
    return value if ok and isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def derive(plan: Plan) -> Optional[Example]:
    """The example for ``plan`` (its models built), moved to the student's device and dtype."""
    spec = plan.spec
    student = plan.models.get(spec.student.name) if spec.models and any(
        m.role == "student" for m in spec.models) else None
    example = from_data_reader(spec)
    if example is None and student is not None:
        example = from_first_layer(spec.student.name, student)
        fields = _inputs_setting(spec)
        if example is not None and fields and all(f in example.batch or f == "input_ids" for f in fields):
            # models called by keyword with these batch fields, as the trainer calls them
            batch = dict(example.batch, input_ids=example.input)
            example.input = {f: batch[f] for f in fields}
    if example is None:
        return None
    param = next(iter(student.parameters()), None) if student is not None else None
    if param is not None:
        def move(t):
            if not isinstance(t, torch.Tensor):
                return t
            return t.to(param.device, param.dtype) if t.is_floating_point() else t.to(param.device)
        example.input = move(example.input)
        example.batch = {k: move(v) for k, v in example.batch.items()}
    return example


def describe(example: Example) -> str:
    """One line for the output: the example's shape and where it came from."""
    x = example.input
    shape = ", ".join(f"{k} {_shape(v)}" for k, v in x.items()) if isinstance(x, dict) else _shape(x)
    return f"dry run on an example input of shape {shape} ({example.source})"
