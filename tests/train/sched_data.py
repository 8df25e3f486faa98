"""Data factories of the scheduling tests (issue #20), referenced as ``sched_data:NAME``."""

from __future__ import annotations

from torch.utils.data import Subset

import kdsl.data


def small_digits(train: int = 40, val: int = 20):
    """The first ``train`` and ``val`` samples of the digits: epochs whose batches a test counts."""
    splits = kdsl.data.digits()
    return Subset(splits.train, range(train)), Subset(splits.val, range(val))


# ---- a detection-style toy: images of different sizes, dict targets, a collate of lists -------
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402


class ToyDetection(Dataset):
    """Images [3, H, W] of three sizes, each with a dict target of boxes and labels."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for i in range(n):
            size = (12, 16, 20)[i % 3]
            boxes = torch.rand(2, 4, generator=g) * size
            self.items.append((torch.randn(3, size, size, generator=g),
                               {"boxes": boxes, "labels": torch.randint(0, 3, (2,), generator=g)}))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def toy_detection():
    return ToyDetection(12, 0), ToyDetection(6, 1)


def detection_collate(items):
    """torchvision's detection collate: lists, not stacked tensors."""
    return {"images": [x for x, _ in items], "targets": [t for _, t in items]}


def broken_collate(items):
    raise ValueError(f"cannot batch {len(items)} images of different sizes")


class ToyDetector(nn.Module):
    """A backbone run per image (any size), pooled; ``neck`` the pooled features [N, width];
    training losses from a class and a box head, as mmdet's and torchvision's detectors return."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.neck = nn.Linear(width, width)
        self.cls = nn.Linear(width, 3)
        self.box = nn.Linear(width, 4)

    def forward(self, images, targets=None):
        pooled = torch.stack([self.backbone(x.unsqueeze(0)).mean(dim=(2, 3))[0] for x in images])
        z = self.neck(pooled)
        labels = torch.stack([t["labels"][0] for t in targets])
        boxes = torch.stack([t["boxes"][0] for t in targets])
        return {"loss_cls": nn.functional.cross_entropy(self.cls(z), labels),
                "loss_bbox": nn.functional.l1_loss(self.box(z), boxes)}


def toy_detector(width: int = 8) -> ToyDetector:
    return ToyDetector(width)


class PairsInOrder:
    """A batch sampler by reference: consecutive pairs of the sampler's order (what a grouped
    aspect-ratio sampler does with each group)."""

    def __init__(self, sampler, batch_size: int, drop_last: bool) -> None:
        self.sampler = sampler

    def __iter__(self):
        order = list(self.sampler)
        return iter([order[i:i + 2] for i in range(0, len(order), 2)])

    def __len__(self) -> int:
        return -(-len(self.sampler) // 2)
