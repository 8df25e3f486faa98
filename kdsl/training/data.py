"""The data of a run: the data factory's datasets behind kdsl's own samplers and loaders.

Epoch ``e`` visits the training set in the order
``torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))`` (sharded by
rank under torchrun), so the data order depends only on the seed and the epoch.

Each training sample's augmentation is drawn from torch's generator seeded with
:func:`sample_seed` ``(seed, epoch, index)`` (the generator's state around the item is saved and
restored, so the rest of the run draws as if no item had been read): a sample's augmentation at an
epoch is the same in every run, process and worker, which is what lets a teacher-output store
(:mod:`kdsl.training.teacher_store`) replay exactly the augmentations it stored. Transforms that
draw from Python's ``random`` or numpy are not seeded this way; the store notices (its probe draws
a sample twice) and refuses such data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from kdsl.core.diagnostics import KdslError, error
from kdsl.core.resolve import import_ref
from kdsl.core.span import Span
from kdsl.data import split_result
from kdsl.training.batching import ReferencedCollate, make_loader
from kdsl.training.contrast import ContrastSampler
from kdsl.training.rng import epoch_seed


_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of sample ``index``'s augmentation at ``epoch``: splitmix64 of the epoch's seed
    and the index, so that neighbouring samples and epochs get unrelated streams."""
    x = (epoch_seed(seed, epoch) * 0x9E3779B97F4A7C15 + index + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


class _Indexed(Dataset):
    """Adds each sample's index (``batch.index``, which CRD's memory bank needs). With a ``seed``
    (the training set), each item is read with torch's generator seeded by :func:`sample_seed`
    of (seed, ``epoch``, index); ``epoch`` is set by :meth:`Data.start_epoch` before the epoch's
    workers start."""

    def __init__(self, dataset: Dataset, seed: Optional[int] = None, contrast=None) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        self.contrast = contrast  # ContrastSampler: each item also carries its contrast indices

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.item(i, self.epoch)

    def item(self, i: int, epoch: int):
        """Sample ``i`` as epoch ``epoch`` draws it."""
        if self.seed is None:
            return self._contrasted(self._wrap(self.dataset[i], i), i, epoch)
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(sample_seed(self.seed, epoch, i))
        try:
            item = self.dataset[i]
        finally:
            gen.set_state(state)
        return self._contrasted(self._wrap(item, i), i, epoch)

    def _contrasted(self, item, i: int, epoch: int):
        if self.contrast is None:
            return item
        return (*item, self.contrast.indices(item[1], i, sample_seed(self.seed or 0, epoch, i)))

    @staticmethod
    def _wrap(item, i: int):
        if isinstance(item, dict):  # named fields (kdsl.data:text): the index joins them
            return {**item, "index": i}
        if isinstance(item, (tuple, list)) and len(item) >= 2:
            return item[0], item[1], i
        raise TypeError(f"dataset items must be (input, target) pairs or dicts of fields, "
                        f"got {type(item).__name__}")


class EpochSampler(Sampler):
    """A permutation that depends on (seed, epoch) only, sharded across ranks (padded so that every
    rank takes the same number of steps)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0
        self.skip = 0  # samples of the epoch's order already trained on (a resumption within it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> List[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1:
            per_rank = -(-self.n // self.world)
            order = (order * 2)[: per_rank * self.world] if self.shuffle else order
            order = order[self.rank::self.world]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip:])

    def __len__(self) -> int:
        if self.world > 1 and self.shuffle:
            return -(-self.n // self.world)
        return len(range(self.rank, self.n, self.world)) if self.world > 1 else self.n


@dataclass
class Data:
    train: DataLoader
    val: DataLoader
    train_size: int
    val_size: int
    sampler: EpochSampler
    seed: int
    num_classes: Optional[int] = None
    batch_size: int = 1  # of the training batches
    batch_sampler: Any = None  # the spec's batch sampler class (batch_sampler = "pkg.module:Class")

    def start_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Put the sampler and the workers' seeds at ``epoch``, past its first ``skip_batches``
        batches (trained before a checkpoint within the epoch)."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip_batches * self.batch_size
        if isinstance(self.train.collate_fn, ReferencedCollate):
            self.train.collate_fn.batches = skip_batches
        self.train.dataset.epoch = epoch
        self.train.generator.manual_seed(epoch_seed(self.seed, epoch))

    def use_batch_size(self, batch_size: int) -> None:
        """Training batches of ``batch_size`` from now on (a stage's own, ``stage NAME batch_size B``):
        the same samples in the same order (the sampler, seeds and workers are the loader's), cut
        into batches of another size."""
        old = self.train
        if self.batch_size == batch_size:
            return
        self.batch_size = batch_size
        self.train = make_loader(old.dataset, self.sampler, batch_size, drop_last=old.drop_last, generator=old.generator,
                                 num_workers=old.num_workers, collate=old.collate_fn, batch_sampler=self.batch_sampler)


def load_data(cfg, rank: int, world: int, span: Optional[Span] = None, spans=None) -> Data:
    """Call the data factory of ``cfg.data`` and wrap its datasets in kdsl's loaders; ``span``, where
    the spec names the data, locates what goes wrong (``spans``: where it sets ``collate`` and
    ``batch_sampler``)."""
    spans = spans or {}
    if cfg.data is None:
        raise error("KD702", "no data: the spec's train block names none and --data was not given",
                    hint='add data = dataset("kdsl.data:digits") to the train block, or pass --data kdsl.data:digits')
    ref, options = cfg.data
    factory = import_ref(ref, "data", span)
    try:
        result = factory(**options)
    except KdslError:
        raise  # located where the data's own file went wrong (a prompt file's line)
    except FileNotFoundError as exc:
        raise error("KD702", f"data '{ref}': {exc}", span) from None
    except Exception as exc:  # noqa: BLE001
        raise error("KD702", f"data factory '{ref}' failed: {type(exc).__name__}: {exc}", span) from None
    train, val, num_classes = split_result(result, ref)
    if isinstance(train, DataLoader) or isinstance(val, DataLoader):
        raise error("KD702", f"data factory '{ref}' returned DataLoaders; return datasets so that "
                    "kdsl controls batching, shuffling and sharding (reproducible, resumable runs)")
    contrast = ContrastSampler(train, cfg.contrast_negatives) if cfg.contrast_negatives else None
    sampler = EpochSampler(len(train), cfg.seed, shuffle=True, rank=rank, world=world)
    val_sampler = EpochSampler(len(val), cfg.seed, shuffle=False, rank=rank, world=world)
    # Workers are started afresh each epoch (not persistent) and seeded from the train loader's
    # generator, which Data.start_epoch re-seeds from (seed, epoch): augmentation drawn in worker
    # processes is then a function of (seed, epoch) too, and a resumed run draws the same as an
    # uninterrupted one. (With persistent workers their RNG streams would carry over epochs.)
    common = dict(num_workers=cfg.num_workers)
    # Both loaders get their own generator: iterating a DataLoader without one draws a seed from
    # torch's global generator, which would shift the models' initialisation (built after the first
    # validation batch is read) and any dropout/augmentation stream after each evaluation.
    g = torch.Generator().manual_seed(cfg.seed)
    batch_sampler = import_ref(cfg.batch_sampler, "batch sampler", spans.get("batch_sampler")) \
        if cfg.batch_sampler else None
    train_loader = make_loader(_Indexed(train, cfg.seed, contrast), sampler, cfg.batch_size, drop_last=cfg.drop_last,
                               generator=g, collate=_collate(cfg, "training", spans), batch_sampler=batch_sampler,
                               **common)
    # validation batches carry contrast indices too (of the training set), for the dry run's losses
    val_loader = make_loader(_Indexed(val, contrast=contrast), val_sampler, cfg.batch_size, drop_last=False,
                             generator=torch.Generator().manual_seed(cfg.seed), collate=_collate(cfg, "validation", spans),
                             **common)
    return Data(train_loader, val_loader, len(train), len(val), sampler, cfg.seed, num_classes, cfg.batch_size,
                batch_sampler)


def _collate(cfg, split: str, spans) -> Optional[ReferencedCollate]:
    return ReferencedCollate(cfg.collate, split, spans.get("collate")) if cfg.collate else None


def epoch_steps(spec, cfg, data: Optional["Data"]) -> int:
    """The steps of an epoch: ``steps_per_epoch`` when set (a generator's epoch, or a data epoch
    cut short for a quick look), otherwise the training set's batches (a generator's run then
    takes as many steps as the data has batches, without reading them)."""
    limit, generated = cfg.steps_per_epoch, spec.input is not None
    if data is None:
        if limit is None:
            raise error("KD223", "the models' input comes from `input` and the run has no data: "
                        "it needs steps_per_epoch", spec.input.span if spec.input else None,
                        hint="add steps_per_epoch = 100 to the train block")
        return limit
    if not (generated and limit is not None):  # an epoch of batches: refuse one of none
        problem = zero_steps_problem(data, cfg)
        if problem:
            raise error("KD702", problem, hint="a smaller --batch-size, drop_last = false, or more data")
    n = len(data.train)
    return n if limit is None else (limit if generated else min(n, limit))


def stage_steps(spec, cfg, data: Optional["Data"], plan) -> int:
    """The steps of an epoch of stage ``plan``, its data batched as the stage says (its own
    ``batch_size``, else the run's): the loader is switched to that batch size."""
    if data is not None:
        data.use_batch_size(plan.batch_size or cfg.batch_size)
    return epoch_steps(spec, cfg, data)


def zero_steps_problem(data, cfg) -> Optional[str]:
    """Why an epoch over ``data`` would train nothing (an empty training set, or drop_last with a
    batch larger than it), or None."""
    if len(data.train) > 0:
        return None
    if data.train_size == 0:
        return "the training set is empty: every epoch would train 0 steps"
    return (f"drop_last = true with batch_size {data.batch_size} larger than the training set "
            f"({data.train_size} samples per process): every epoch would drop its only batch and train 0 steps")
