"""Dataset-side CRD negatives (``contrast_negatives = K``), as RepDistiller's and torchdistill's
``CIFAR100InstanceSample`` (mode "exact"): each training item also carries its contrast indices
``[1 + K]``, its own dataset index (the positive) first, then K indices of training samples of
other classes, drawn without replacement (with replacement only when fewer than K exist). Batches
then have the field ``batch.contrast_idx`` ``[N, 1 + K]``, which ``crd(..., contrast_idx=...)``
contrasts against instead of drawing its own negatives.

The draw comes from numpy's generator seeded by the sample's augmentation seed (seed, epoch,
index), so an epoch's negatives are the same in every run, worker and resumption."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch

from kdsl.core.diagnostics import error


def dataset_labels(dataset) -> np.ndarray:
    """The class of every sample: the dataset's ``targets`` (torchvision's, kdsl's), else each
    item's label read once."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        with torch.random.fork_rng(devices=[]):  # an item's augmentation must not move the run's RNG
            targets = [dataset[i][1] for i in range(len(dataset))]
    return np.asarray([int(t) for t in targets], dtype=np.int64)


class ContrastSampler:
    """The contrast indices of a sample of class ``y`` at dataset index ``i``."""

    def __init__(self, dataset, k: int) -> None:
        labels = dataset_labels(dataset)
        self.k = k
        self.others: Dict[int, np.ndarray] = {}
        for c in np.unique(labels).tolist():
            self.others[c] = np.flatnonzero(labels != c)
        lonely: List[int] = [c for c, idx in self.others.items() if idx.size == 0]
        if lonely:
            raise error("KD776", f"contrast_negatives: every training sample is of class {lonely[0]}, so no "
                        "sample has a negative of another class", hint="use training data of several classes")

    def indices(self, y, i: int, seed: int) -> torch.Tensor:
        c = int(y)
        others = self.others.get(c)
        if others is None:  # a class the training set does not hold (a validation sample's, say)
            others = np.concatenate(list(self.others.values()))
        rng = np.random.default_rng(seed)
        chosen = rng.choice(others, self.k, replace=self.k > others.size)
        return torch.from_numpy(np.concatenate([[i], chosen]).astype(np.int64))
