"""Feature distillation losses: torch implementations of :mod:`kdsl.catalog.feature_losses`.

Each class takes the catalog's options (its constructor is made from its entry:
:class:`~kdsl.components._common.Declared`) and the catalog's inputs positionally, and returns a
scalar. The options' types and ranges are declared, and checked, in the catalog
(:func:`kdsl.catalog.binding.instantiate`); only checks relating several options stay here.
The formulas, papers and the relation to MMRazor's implementations are documented on the catalog
entries.
"""

from __future__ import annotations

import math
from typing import Any, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kdsl.components._common import Declared, compute_dtype, flat, upcast

__all__ = [
    "L2Loss", "L1Loss", "MSELoss", "SmoothL1Loss", "CosineLoss", "ATLoss", "OFDLoss", "ABLoss",
    "FTLoss", "ChannelWiseDivergence", "PKDLoss", "MGDLoss", "FSPLoss", "NSTLoss", "VIDLoss",
    "VIDNLLLoss", "ICKDLoss",
]

def _pool_to_common_size(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Average-pool whichever map is larger (per spatial dimension) down to the smaller size."""
    size = tuple(min(x, y) for x, y in zip(a.shape[2:], b.shape[2:]))
    if tuple(a.shape[2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


# --------------------------------------------------------------------------------------------
# Element-wise distances
# --------------------------------------------------------------------------------------------
class L2Loss(Declared):
    """FitNets hint loss with MMRazor's L2Loss options."""

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(flat(x), p=2.0, dim=1) * self.mult
        # broadcasting inputs keep their shapes: each sample normalized over its own elements
        return normalized.view_as(x) if self.broadcast else normalized

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        if self.normalize:
            s, t = self._normalized(s), self._normalized(t)
        diff = s - t
        total = diff.pow(2).sum()
        if self.dist:
            return total.sqrt()
        if self.div_element:
            return total / diff.numel()
        return total / diff.shape[0]


def _fused(loss_fn, pair, reduction: str, **kwargs) -> torch.Tensor:
    # torch's fused losses keep only their inputs for backward, not the elementwise
    # difference: a feature-sized tensor less per term
    s, t = pair
    if reduction == "batchmean":
        return loss_fn(s, t, reduction="sum", **kwargs) / s.shape[0]
    return loss_fn(s, t, reduction=reduction, **kwargs)


class L1Loss(Declared):
    """Absolute difference, reduced."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        return _fused(F.l1_loss, upcast(preds_S, preds_T), self.reduction)


class MSELoss(Declared):
    """Squared difference, reduced."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        if self.broadcast and s.shape != t.shape:
            # torch's mse_loss would broadcast too, with a warning; the reductions are its own
            squared = (s - t).pow(2)
            if self.reduction == "batchmean":
                return squared.sum() / squared.shape[0]
            return squared.sum() if self.reduction == "sum" else squared.mean()
        return _fused(F.mse_loss, (s, t), self.reduction)


class SmoothL1Loss(Declared):
    """Huber-style smooth L1 difference, reduced."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        return _fused(F.smooth_l1_loss, upcast(preds_S, preds_T), self.reduction, beta=self.beta)


class CosineLoss(Declared):
    """One minus the cosine similarity of per-sample flattened features, averaged over the batch."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        s, t = flat(s), flat(t)
        # Each norm is clamped on its own so that a zero feature gives similarity 0 (loss 1)
        # rather than NaN.
        norms = s.norm(dim=1).clamp_min(self.eps) * t.norm(dim=1).clamp_min(self.eps)
        return (1.0 - (s * t).sum(dim=1) / norms).mean()


# --------------------------------------------------------------------------------------------
# Maps and masks derived from a feature
# --------------------------------------------------------------------------------------------
class ATLoss(Declared):
    """Attention transfer: squared distance of normalized spatial attention maps."""

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        # |x|^p rather than x^p: the paper's map is of absolute values, which only matters for
        # odd p (for p = 2 both give the same values and gradients).
        return F.normalize(flat(x.abs().pow(self.p).mean(dim=1)), p=2.0, dim=1)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        diff = self.attention(s) - self.attention(t)
        if self.form == "paper":
            # Eq. (2): the l2 distance of the maps, per sample, averaged over the batch
            return diff.norm(dim=1).mean()
        return diff.pow(2).mean()


class OFDLoss(Declared):
    """Overhaul of feature distillation: partial L2 that skips where S <= T <= 0."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        # A student below a non-positive teacher is already on the right side of the ReLU that
        # follows, so pushing it up would only change values the ReLU discards.
        counted = (s > t) | (t > 0)
        return ((s - t).pow(2) * counted).sum() / s.shape[0] / self.mul_factor


class ABLoss(Declared):
    """Activation boundaries: squared hinge pushing the student to the teacher's side of zero."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        active = t > 0
        # relu(m -/+ s)^2 is the paper's piecewise-differentiable stand-in for the
        # non-differentiable indicator of a neuron being on the wrong side of the boundary.
        per_neuron = torch.where(active, F.relu(self.margin - s), F.relu(self.margin + s)).pow(2)
        return per_neuron.sum() / (1 if self.reduction == "sum" else s.shape[0])


class FTLoss(Declared):
    """Factor transfer: p-distance of per-sample l2-normalized factors."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        return factor_distance(s, t, self.p, 2.0, self.reduction, self.distance)


def factor_distance(s: torch.Tensor, t: torch.Tensor, p: float, q: float, reduction: str,
                    distance: str) -> torch.Tensor:
    """Distance of the per-sample l_q-normalized factors: the mean (or sum) over elements of
    |d|^p, or with ``distance="norm"`` the per-sample ||d||_p reduced over the batch."""
    diff = F.normalize(flat(s), p=q, dim=1) - F.normalize(flat(t), p=q, dim=1)
    if distance == "norm":
        per_sample = diff.norm(p=p, dim=1)
        return per_sample.sum() if reduction == "sum" else per_sample.mean()
    elementwise = diff.abs() if p == 1 else diff.abs().pow(p)
    return elementwise.sum() if reduction == "sum" else elementwise.mean()


class ChannelWiseDivergence(Declared):
    """Channel-wise distillation: KL between per-channel spatial softmax distributions."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        n, c = s.shape[0], s.shape[1]
        log_p_s = F.log_softmax(s.reshape(n * c, -1) / self.tau, dim=1)
        log_p_t = F.log_softmax(t.reshape(n * c, -1) / self.tau, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum()
        return kl * (self.tau ** 2) / (n * c)


class PKDLoss(Declared):
    """Pearson-correlation distillation: MSE of per-channel standardized features, halved."""

    @staticmethod
    def _standardize(x: torch.Tensor) -> torch.Tensor:
        # Statistics over batch and positions (all dims but the channel) make the MSE of the
        # standardized maps equal to 1 - Pearson r per channel, invariant to each channel's
        # scale and shift, which is what lets a detector student copy a very different teacher.
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        std = x.std(dim=dims, keepdim=True)
        return (x - mean) / (std + 1e-6)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        if s.shape[2:] != t.shape[2:]:
            if self.resize_stu:
                s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
            else:
                t = F.interpolate(t, size=s.shape[2:], mode="bilinear", align_corners=False)
        return F.mse_loss(self._standardize(s), self._standardize(t)) / 2


class MGDLoss(Declared):
    """Masked generative distillation: summed squared error of the generated feature, per sample."""

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        return self.alpha_mgd * (s - t).pow(2).sum() / s.shape[0]


# --------------------------------------------------------------------------------------------
# Correlations between layers or channels
# --------------------------------------------------------------------------------------------
def _fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    if first.shape[2:] != second.shape[2:]:
        # two maps of one network at different resolutions: the larger is max-pooled to the
        # smaller, as torchdistill does (the paper pairs maps of one size)
        size = tuple(min(x, y) for x, y in zip(first.shape[2:], second.shape[2:]))
        first = F.adaptive_max_pool2d(first, size) if first.shape[2:] != size else first
        second = F.adaptive_max_pool2d(second, size) if second.shape[2:] != size else second
    a, b = first.flatten(2), second.flatten(2)
    return torch.bmm(a, b.transpose(1, 2)) / a.shape[2]


class FSPLoss(Declared):
    """Flow of solution procedure: squared distance of the student's and teacher's FSP matrices."""

    def forward(self, s_first: torch.Tensor, s_second: torch.Tensor, t_first: torch.Tensor,
                t_second: torch.Tensor) -> torch.Tensor:
        s_first, s_second, t_first, t_second = upcast(s_first, s_second, t_first, t_second)
        if s_first.shape[2:] != t_first.shape[2:]:
            s_first, t_first = _pool_to_common_size(s_first, t_first)
            s_second, t_second = _pool_to_common_size(s_second, t_second)
        diff = _fsp_matrix(s_first, s_second) - _fsp_matrix(t_first, t_second)
        if self.norm == "column":
            # torchdistill: the unsquared l2 norm of each column of the difference, summed
            return diff.norm(dim=1).sum() / diff.shape[0]
        return diff.pow(2).sum() / diff.shape[0]


class NSTLoss(Declared):
    """Neuron selectivity transfer: polynomial-kernel MMD between the channels' spatial maps."""

    def _kernel_mean(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(a, b.transpose(1, 2))
        return (gram + self.coef0).pow(self.degree).mean(dim=(1, 2))

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        # Each channel's map is one sample of the layer's "selectivity" distribution; the
        # normalization makes the kernel compare patterns, not activation magnitudes.
        s = F.normalize(s.flatten(2), p=2.0, dim=2)
        t = F.normalize(t.flatten(2), p=2.0, dim=2)
        mmd = self._kernel_mean(t, t) + self._kernel_mean(s, s) - 2 * self._kernel_mean(s, t)
        return mmd.mean()


class VIDLoss(Declared):
    """Variational information distillation: Gaussian negative log-likelihood of the teacher
    feature under a mean regressed from the student and a learned per-channel variance."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        in_channels, out_channels = self.in_channels, self.out_channels
        init_pred_var, eps = self.init_pred_var, self.eps
        # relates two options, which a per-option constraint of the catalog cannot say
        if init_pred_var <= eps:
            raise ValueError(f"init_pred_var must exceed eps ({eps}), got {init_pred_var}")
        if self.regressor == "none" and in_channels != out_channels:
            raise ValueError(f"regressor='none' needs in_channels == out_channels, got "
                             f"{in_channels} and {out_channels}")
        mid = out_channels if self.mid_channels is None else self.mid_channels
        # the option's word is replaced by the module it names
        self.regressor = nn.Sequential() if self.regressor == "none" else nn.Sequential(
            nn.Conv2d(in_channels, mid, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid, out_channels, kernel_size=1, bias=False),
        )
        # Inverse softplus, so that the variance starts at init_pred_var exactly; a large start
        # keeps the first steps from being dominated by a badly regressed mean.
        self.log_scale = nn.Parameter(
            torch.full((out_channels,), math.log(math.expm1(init_pred_var - eps))))

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def _regress(self, x: torch.Tensor) -> torch.Tensor:
        # Parameters are cast to the compute dtype rather than the inputs to the parameters', so
        # float64 inputs keep their precision with float32 parameters (gradients flow through
        # the cast back to the parameters).
        for layer in self.regressor:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, layer.weight.to(x.dtype))
            else:
                x = layer(x)
        return x

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        dtype = compute_dtype(s, self.log_scale)
        # A 1x1 convolution acts on each position alone, so any layout of the positions works:
        # (N, C), (N, C, L) and (N, C, H, W) all become (N, C, positions, 1).
        s = s.to(dtype).reshape(s.shape[0], s.shape[1], -1, 1)
        t = t.to(dtype).reshape(t.shape[0], t.shape[1], -1, 1)
        mean = self._regress(s)
        var = self.variance().to(dtype).view(1, -1, 1, 1)
        return (0.5 * ((mean - t).pow(2) / var + var.log())).mean()


class VIDNLLLoss(Declared):
    """VID's Gaussian negative log-likelihood of the teacher given a predicted mean and variance
    (torchdistill's VIDLoss, fed by a regressor that returns both)."""

    def forward(self, mean: torch.Tensor, preds_T: torch.Tensor,
                variance: torch.Tensor) -> torch.Tensor:
        mean, preds_T, variance = upcast(mean, preds_T, variance)
        return (0.5 * ((mean - preds_T).pow(2) / variance + variance.log())).mean()


class ICKDLoss(Declared):
    """Inter-channel correlation: squared distance of row-normalized channel Gram matrices."""

    @staticmethod
    def _correlation(x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        gram = torch.bmm(flat, flat.transpose(1, 2))
        # Row normalization makes each channel's correlation profile comparable between a
        # student and a teacher whose activations have different magnitudes.
        return F.normalize(gram, p=2.0, dim=2)

    def forward(self, preds_S: torch.Tensor, preds_T: torch.Tensor) -> torch.Tensor:
        s, t = upcast(preds_S, preds_T)
        diff = self._correlation(s) - self._correlation(t)
        n = s.shape[0] * (s.shape[0] if self.reduction == "mean_n2" else 1)
        return diff.pow(2).sum() / (n * s.shape[1])
