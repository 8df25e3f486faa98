"""Batch transforms (declared in :mod:`kdsl.catalog.batch_transforms`): each takes a training
batch's inputs and integer labels and a numpy generator (seeded by the trainer from the seed, the
epoch and the step) and returns the batch the models train on."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from kdsl.components._common import Declared

Batch = Tuple[torch.Tensor, torch.Tensor]


def smoothed_one_hot(labels: torch.Tensor, classes: int, smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """Class probabilities [N, C]: 1 - s + s / C on each label's class, s / C elsewhere."""
    off = smoothing / classes
    out = torch.full((labels.shape[0], classes), off, dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


class _Mixing(Declared):
    """Mixes a batch with itself reversed; the subclasses say how the inputs mix."""

    classes: Optional[int] = None  # the data's class count, when num_classes is not given
    keep_unknown = False  # a check's dry run without the data's class count: labels left as they are

    def _targets(self, y: torch.Tensor, lam: float, dtype: torch.dtype) -> torch.Tensor:
        classes = self.num_classes or self.classes
        if classes is None and self.keep_unknown:
            return y
        if classes is None:
            raise ValueError("the number of classes is unknown (the data factory says none): give "
                             "num_classes=...")
        one_hot = smoothed_one_hot(y, classes, self.label_smoothing, dtype)
        return lam * one_hot + (1.0 - lam) * one_hot.flip(0)


def mixup(x: torch.Tensor, lam: float) -> torch.Tensor:
    return x * lam + x.flip(0) * (1.0 - lam)


def cutmix(x: torch.Tensor, lam: float, rng: np.random.Generator) -> Tuple[torch.Tensor, float]:
    """(x with a box from the reversed batch, the area share kept), as timm's rand_bbox."""
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    return out, 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


class Mixup(_Mixing):
    def forward(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> Batch:
        lam = float(rng.beta(self.alpha, self.alpha))
        return mixup(x, lam), self._targets(y, lam, x.dtype)


class CutMix(_Mixing):
    def forward(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> Batch:
        mixed, lam = cutmix(x, float(rng.beta(self.alpha, self.alpha)), rng)
        return mixed, self._targets(y, lam, x.dtype)


class MixupCutMix(_Mixing):
    def forward(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> Batch:
        if rng.random() >= self.prob:
            return x, self._targets(y, 1.0, x.dtype)
        if rng.random() < self.switch_prob:
            mixed, lam = cutmix(x, float(rng.beta(self.cutmix_alpha, self.cutmix_alpha)), rng)
            return mixed, self._targets(y, lam, x.dtype)
        lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
        return mixup(x, lam), self._targets(y, lam, x.dtype)


class Rotations(Declared):
    def forward(self, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> Batch:
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotations() takes square images [N, C, H, W], got {list(x.shape)}")
        rotated = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=1)
        return rotated.reshape(-1, *x.shape[1:]), y


def spec_transform(spec) -> Optional[Declared]:
    """The train block's ``batch_transform``, built; None without one (or one that does not check)."""
    from kdsl.catalog.binding import bind
    from kdsl.catalog.registry import REGISTRY
    from kdsl.lang import ir
    from kdsl.lang.literal import literal_value

    setting = spec.train.get("batch_transform") if spec.train is not None else None
    call = setting.value if setting is not None else None
    component = REGISTRY.get("batch_transform", call.func) if isinstance(call, ir.Call) else None
    if component is None:
        return None
    binding = bind(component, [literal_value(a) for a in call.args],
                   [(k.name, literal_value(k.value)) for k in call.kwargs], inputs=False)
    return component.load()(**binding.options)


def _with_contrast(spec, batch):
    """With ``contrast_negatives = K``, the example batch's ``contrast_idx`` [N, 1 + K]: each
    sample's index, then K placeholder negatives (index 0), the shape training batches have."""
    from kdsl.lang.literal import try_literal

    setting = spec.train.get("contrast_negatives") if spec.train is not None else None
    ok, k = try_literal(setting.value) if setting is not None else (False, None)
    index = batch.get("index")
    if not ok or not isinstance(k, int) or not isinstance(index, torch.Tensor):
        return batch
    negatives = torch.zeros(index.shape[0], k, dtype=torch.long)
    return dict(batch, contrast_idx=torch.cat([index.long().view(-1, 1), negatives], dim=1))


def transform_example(spec, x, batch):
    """A check's dry-run example ``(input, batch fields)`` as the spec's batch transform makes
    training batches (rotated images; mixed labels where the class count is known), so that the
    losses are checked on the batches they will get."""
    batch = _with_contrast(spec, batch)
    module = spec_transform(spec)
    if module is None or not isinstance(x, torch.Tensor) or "target" not in batch:
        return x, batch
    module.keep_unknown = True
    x, y = module(x, batch["target"], np.random.default_rng(0))
    return x, dict(batch, target=y)
