"""Custom batching in ``kdsl train``: a collate function and a batch sampler given by reference
(``collate = "pkg.module:function"``, ``batch_sampler = "pkg.module:Class"``), for data whose
samples do not stack (detection: images of different sizes, dicts of targets; padding collators).

The collate function is called with the dataset's own items (kdsl's sample index taken off); kdsl
adds the index (and ``contrast_idx``) back to what it returns: a dict batch (its fields passed to
the models by keyword, as ``inputs`` says) or an (input, target) pair. A collate that fails is
KD777, naming the reference, the batch and its samples. The batch sampler is built as
``Class(sampler, batch_size, drop_last)`` over kdsl's seeded, sharded sampler."""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch.utils.data import DataLoader

from kdsl.core.diagnostics import KdslError, error
from kdsl.core.resolve import import_ref


def _split(item: Any):
    """(the dataset's own item, its index, its contrast indices or None) of an item of kdsl's
    wrapper: ``(x, y, index[, contrast_idx])`` or a dict with ``index``."""
    if isinstance(item, dict):
        rest = {k: v for k, v in item.items() if k not in ("index", "contrast_idx")}
        return rest, item["index"], item.get("contrast_idx")
    return tuple(item[:2]), item[2], item[3] if len(item) > 3 else None


class ReferencedCollate:
    """The spec's collate function on a loader's batches (``split``: "training" or "validation")."""

    def __init__(self, ref: str, split: str, span=None) -> None:
        self.ref, self.split, self.span = ref, split, span
        self.fn = import_ref(ref, "collate function", span)
        self.batches = 0  # batches made this epoch (the failing one's number)

    def __call__(self, items: List[Any]) -> Any:
        self.batches += 1
        parts = [_split(item) for item in items]
        index = torch.tensor([int(p[1]) for p in parts])
        try:
            batch = self.fn([p[0] for p in parts])
        except KdslError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's collate failed
            shown = ", ".join(str(int(i)) for i in index[:8]) + (", ..." if len(index) > 8 else "")
            raise error("KD777", f"collate '{self.ref}' failed on {self.split} batch {self.batches} (samples "
                        f"{shown}): {type(exc).__name__}: {exc}", self.span,
                        hint="it is called with a list of the dataset's items; run it on dataset[i] for those "
                        "samples to see why") from None
        contrast = [p[2] for p in parts]
        extra = {"contrast_idx": torch.stack(contrast)} if contrast and contrast[0] is not None else {}
        if isinstance(batch, dict):
            return {**batch, "index": index, **extra}
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return (batch[0], batch[1], index, *extra.values())
        raise error("KD777", f"collate '{self.ref}' returned {type(batch).__name__}, not a dict of fields or an "
                    "(input, target) pair", self.span, hint="return {\"images\": ..., \"targets\": ...} or (x, y)")


def make_loader(dataset, sampler, batch_size: int, *, drop_last: bool, generator, num_workers: int,
                collate: Optional[ReferencedCollate] = None, batch_sampler=None) -> DataLoader:
    """A loader of kdsl's: batches of ``batch_size`` from ``sampler``, or the batch sampler
    ``batch_sampler`` (a class) builds over it."""
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler(sampler, batch_size, drop_last), generator=generator,
                          num_workers=num_workers, collate_fn=collate)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, generator=generator,
                      num_workers=num_workers, collate_fn=collate)
