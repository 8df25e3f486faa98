"""Feature losses of one paper each: torch implementations of :mod:`kdsl.catalog.paper_losses`
(FBKD's loss, ZSKT's attention term)."""

from __future__ import annotations

from typing import Sequence

import torch

from kdsl.components._common import Declared, upcast
from kdsl.components.feature_losses import ATLoss

__all__ = ["FBKDLoss", "ZSKTAttention"]


def _parts(value, count: int, side: str, connector: str):
    if not isinstance(value, (tuple, list)) or len(value) != count:
        got = f"a tuple of {len(value)}" if isinstance(value, (tuple, list)) else \
            type(value).__name__
        raise ValueError(f"fbkd's {side} must be the whole output of a {connector} connector "
                         f"(a tuple of {count} tensors), got {got}")
    return upcast(*value)


class FBKDLoss(Declared):
    """Masked feature L2 + pooled channel and spatial terms + non-local relation term."""

    def forward(self, preds_S: Sequence[torch.Tensor],
                preds_T: Sequence[torch.Tensor]) -> torch.Tensor:
        s_spatial, _, s_channel_pool, s_spatial_pool, s_relation, s_feat = _parts(
            preds_S, 6, "preds_S", "fbkd_student")
        t_spatial, _, t_spatial_pool, t_relation, t_feat = _parts(
            preds_T, 5, "preds_T", "fbkd_teacher")
        if s_feat.shape != t_feat.shape:
            raise ValueError(f"fbkd needs student and teacher features of the same shape, got "
                             f"{list(s_feat.shape)} and {list(t_feat.shape)} (map the student's "
                             f"with conv_bn first)")
        # the shared mask weighs the comparison but is not itself trained by it
        mask = ((s_spatial + t_spatial) / 2).detach()
        feature = ((t_feat - s_feat).pow(2) * mask).sum().sqrt()
        channel = torch.dist(t_feat.mean((2, 3)), s_channel_pool)
        spatial = torch.dist(t_spatial_pool, s_spatial_pool)
        relation = torch.dist(t_relation, s_relation)
        return (self.mask_l2_weight * feature + self.channel_weight * channel
                + self.spatial_weight * spatial + self.nonlocal_weight * relation)


class ZSKTAttention(ATLoss):
    """ZSKT's attention term: attention transfer with the squared map (p = 2), paper form."""

    p = 2.0  # the paper's squared map, not an option of zskt_attention
