"""The dry run's example from ``--data REF``: the first two samples of the data factory's
validation split, collated like a training batch. Whatever the factory returns, a problem with it
is a KD702 error naming the factory, never an internal error."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.core.diagnostics import KdslError, error

ROWS = 2  # norm layers in training mode need two rows; the dry run needs no more


def data_example(text: str, inputs: Optional[Sequence[str]] = None) -> Tuple[Any, Dict[str, Any]]:
    """(example input, example batch fields ``target`` and ``index``) from the data reference
    ``text`` (``pkg.module:factory(option=value, ...)``). Items that are dicts of named fields
    (``kdsl.data:text``) give a dict input, the fields ``inputs`` names (the train block's
    setting; None: every field but labels, target and index), and every field as batch fields."""
    import torch

    from kdsl.core.resolve import import_ref
    from kdsl.data import split_result
    from kdsl.lang.refs import parse_call

    ref, args, kwargs = parse_call(text, "data")
    factory = import_ref(ref, "data")
    try:
        result = factory(*args, **kwargs)
    except KdslError:
        raise
    except FileNotFoundError as exc:
        raise error("KD702", f"data '{ref}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's factory failed
        raise error("KD702", f"data factory '{ref}' failed: {type(exc).__name__}: {exc}") from None
    _, val, _ = split_result(result, ref)
    items = _first_items(val, ref)
    if isinstance(items[0], dict):
        return _dict_example(items, ref, inputs)
    try:
        from torch.utils.data import default_collate

        x, y = default_collate(items)
    except Exception as exc:  # noqa: BLE001 - samples that do not stack into a batch
        raise error("KD702", f"data '{ref}': its first {len(items)} validation samples do not form "
                    f"a batch: {type(exc).__name__}: {exc}",
                    hint="every sample is an (input, target) pair of the same shapes") from None
    return x, {"target": y, "index": torch.arange(len(items))}


def _first_items(val: Any, ref: str) -> List[Tuple[Any, Any]]:
    """Up to :data:`ROWS` (input, target) samples of the validation split: a dataset is indexed,
    a data loader's dataset too (a loader that has none is iterated once)."""
    from torch.utils.data import DataLoader

    dataset = val.dataset if isinstance(val, DataLoader) else val
    try:
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            items = [dataset[i] for i in range(min(ROWS, len(dataset)))]
        else:
            batch = next(iter(dataset), None)
            items = [] if batch is None else _unbatch(batch)
    except KdslError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's dataset failed to give a sample
        raise error("KD702", f"data '{ref}': reading a validation sample failed: "
                    f"{type(exc).__name__}: {exc}") from None
    if not items:
        raise error("KD702", f"data '{ref}': the validation split is empty, so there is no sample "
                    "for the dry run", hint="or dry-run on zeros: --input-shape 2,3,32,32")
    if all(isinstance(item, dict) for item in items):
        return items
    for item in items:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise error("KD702", f"data '{ref}': a validation sample is of type {type(item).__name__}, "
                        "not an (input, target) pair",
                        hint="a dataset's items are (input, target) pairs, as torchvision's are")
    return [(item[0], item[1]) for item in items]


def _dict_example(items: List[Dict[str, Any]], ref: str,
                  inputs: Optional[Sequence[str]]) -> Tuple[Any, Dict[str, Any]]:
    """A batch of named fields: the models' keyword input and the batch fields."""
    import torch
    from torch.utils.data import default_collate

    from kdsl.core.suggest import did_you_mean
    from kdsl.text_data import default_inputs

    try:
        fields = dict(default_collate(items))
    except Exception as exc:  # noqa: BLE001 - samples that do not stack into a batch
        raise error("KD702", f"data '{ref}': its first {len(items)} validation samples do not form "
                    f"a batch: {type(exc).__name__}: {exc}") from None
    fields["index"] = torch.arange(len(items))
    names = list(inputs) if inputs is not None else list(default_inputs(fields))
    for name in names:
        if name not in fields:
            raise error("KD740", f"inputs names '{name}', which the items of '{ref}' do not have "
                        f"(their fields: {', '.join(k for k in fields if k != 'index')})",
                        hint=did_you_mean(name, list(fields)) or "name fields of the data's items")
    return {n: fields[n] for n in names}, fields


def spec_inputs(spec: Any) -> Optional[List[str]]:
    """The train block's ``inputs`` (the batch fields models are called with), or None."""
    from kdsl.lang.literal import try_literal

    for setting in spec.train.settings:
        if setting.key == "inputs":
            ok, value = try_literal(setting.value)
            return list(value) if ok and isinstance(value, (list, tuple)) else None
    return None


def _unbatch(batch: Any) -> List[Tuple[Any, Any]]:
    """The first rows of a batch ``(inputs, targets)`` that an iterable gave, as samples."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        xs, ys = batch[0], batch[1]
        return [(xs[i], ys[i]) for i in range(min(ROWS, len(xs), len(ys)))]
    return [batch]
