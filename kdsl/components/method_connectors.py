"""Connectors that belong to one distillation method: OFD's margin ReLU, Factor Transfer's
paraphraser and translator, CRD's embedding head and MGD's masked generator.

Each class implements a catalog entry of :mod:`kdsl.catalog.method_connectors` and takes exactly
the options declared there; their types and ranges are checked in the catalog
(:func:`kdsl.catalog.binding.instantiate`), so the classes do not repeat those checks.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from kdsl.components.connectors import ConnectorConfigError

# --------------------------------------------------------------------------------------------
# OFD: margin ReLU on the teacher side
# --------------------------------------------------------------------------------------------
#: Below this probability of a negative response, the conditional mean is dominated by the far
#: tail of the Gaussian and is replaced by -3 std, as in the OFD paper's released code.
OFD_MIN_NEGATIVE_MASS = 1e-3


def ofd_margin_from_affine(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel OFD margin ``E[x | x < 0]`` for ``x ~ N(bias, weight**2)``, in float64.

    A teacher feature taken right after BatchNorm (before its ReLU) is modelled per channel as a
    Gaussian with the BN's shift ``beta`` as mean and ``|gamma|`` as standard deviation (the sign
    of gamma flips the distribution but the Gaussian is symmetric about its mean). Then

        m = beta - |gamma| * phi(beta / |gamma|) / Phi(-beta / |gamma|)

    When ``Phi(-beta/|gamma|) <= 1e-3`` (almost no negative responses) the paper's code uses
    ``m = -3 |gamma|`` instead, which also avoids dividing by a vanishing probability. A zero
    gamma makes the channel constant at ``beta``: its negative mean is ``beta`` when beta < 0,
    and 0 otherwise (the limit of the formula as the spread shrinks).
    """
    gamma = weight.detach().to(torch.float64).abs()
    beta = bias.detach().to(torch.float64)
    safe_gamma = torch.where(gamma > 0, gamma, torch.ones_like(gamma))
    z = beta / safe_gamma
    negative_mass = torch.special.ndtr(-z)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    safe_mass = torch.where(negative_mass > OFD_MIN_NEGATIVE_MASS, negative_mass,
                            torch.ones_like(negative_mass))
    margin = torch.where(negative_mass > OFD_MIN_NEGATIVE_MASS,
                         beta - gamma * density / safe_mass, -3.0 * gamma)
    return torch.where(gamma > 0, margin, beta.clamp(max=0.0))


def _affine_of(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(bn, nn.Module):
        raise ConnectorConfigError(f"'bn' of 'ofd_margin' must be a BatchNorm layer of the "
                                   f"teacher (e.g. teacher.layer2.0.bn1), got {type(bn).__name__}")
    weight, bias = getattr(bn, "weight", None), getattr(bn, "bias", None)
    if weight is None and bias is None and isinstance(getattr(bn, "num_features", None), int):
        # a BatchNorm without affine parameters outputs N(0, 1) per channel
        return torch.ones(bn.num_features), torch.zeros(bn.num_features)
    if (not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor)
            or weight.dim() != 1 or weight.shape != bias.shape):
        raise ConnectorConfigError(
            f"'bn' of 'ofd_margin' must be a BatchNorm layer with per-channel weight and bias, "
            f"got {type(bn).__name__}")
    return weight, bias


class OFDMargin(nn.Module):
    """OFD's teacher transform: ``max(x, m)`` with a per-channel margin ``m`` from a BatchNorm.

    The margin is computed once, when the connector is built, from the teacher's (trained) BN
    and kept as the buffer ``margin``; the connector has no trainable parameters. Call
    :meth:`recompute_margin` if the teacher's weights are loaded after the connector is built.
    """

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        weight, bias = _affine_of(bn)
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        self.register_buffer("margin", ofd_margin_from_affine(weight, bias).to(
            device=weight.device, dtype=dtype))
        # A plain tuple, not an attribute holding the module: registering the teacher's BN as a
        # submodule would put its parameters in this connector's parameters() and state_dict.
        self._source: Tuple[nn.Module] = (bn,)

    @torch.no_grad()
    def recompute_margin(self) -> None:
        weight, bias = _affine_of(self._source[0])
        self.margin.copy_(ofd_margin_from_affine(weight, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.margin.numel()
        if x.dim() < 2 or x.shape[1] != channels:
            raise ValueError(f"ofd_margin was built from a BatchNorm of {channels} channels, but "
                             f"its input has shape {list(x.shape)}")
        view = (1, channels) + (1,) * (x.dim() - 2)
        return torch.maximum(x, self.margin.to(dtype=x.dtype).view(view))

    def extra_repr(self) -> str:
        return f"channels={self.margin.numel()}"


# --------------------------------------------------------------------------------------------
# Factor Transfer: paraphraser (teacher side) and translator (student side)
# --------------------------------------------------------------------------------------------
#: Negative slope of the LeakyReLUs in Factor Transfer's paraphraser and translator.
FT_LEAKY_SLOPE = 0.1


def _ft_layer(cin: int, cout: int, use_bn: bool, transposed: bool = False) -> List[nn.Module]:
    conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: List[nn.Module] = [conv_type(cin, cout, 3, stride=1, padding=1, bias=not use_bn)]
    if use_bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(FT_LEAKY_SLOPE))
    return layers


class Paraphraser(nn.Module):
    """Factor Transfer's paraphraser: a convolutional autoencoder on teacher features.

    The encoder (three 3x3 convolutions, ``C -> C -> F -> F``) produces the teacher factor, which
    ``forward`` returns; the decoder (three 3x3 transposed convolutions, ``F -> F -> C -> C``)
    reconstructs the feature and is used only to pretrain the paraphraser
    (:meth:`reconstruct`, :meth:`reconstruction_loss`). ``F`` is ``factor_channels`` if given,
    else ``int(in_channels * rate)``.
    """

    def __init__(self, in_channels: int, rate: float = 0.5,
                 factor_channels: Optional[int] = None, use_bn: bool = False) -> None:
        super().__init__()
        if factor_channels is None:
            factor_channels = max(1, int(in_channels * rate))
        self.in_channels = in_channels
        self.factor_channels = factor_channels
        c, f = in_channels, factor_channels
        self.encoder = nn.Sequential(*_ft_layer(c, c, use_bn), *_ft_layer(c, f, use_bn),
                                     *_ft_layer(f, f, use_bn))
        self.decoder = nn.Sequential(*_ft_layer(f, f, use_bn, True), *_ft_layer(f, c, use_bn, True),
                                     *_ft_layer(c, c, use_bn, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher factor ``[N, F, H, W]`` (what ``forward`` returns): ``para.encode(t)``."""
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``, shaped like ``x``: the pretraining target is ``x`` itself."""
        return self.decoder(self.encoder(x))

    def reconstruction_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error, the paraphraser's pretraining objective."""
        return F.mse_loss(self.reconstruct(x), x)


class Translator(nn.Module):
    """Factor Transfer's translator: three 3x3 convolutions mapping student features
    (``C_s -> C_s -> F -> F``) into the paraphraser's factor space."""

    def __init__(self, in_channels: int, factor_channels: int, use_bn: bool = False) -> None:
        super().__init__()
        c, f = in_channels, factor_channels
        self.layers = nn.Sequential(*_ft_layer(c, c, use_bn), *_ft_layer(c, f, use_bn),
                                    *_ft_layer(f, f, use_bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The student factor ``[N, F, H, W]`` (what ``forward`` returns), named like the
        paraphraser's so that a spec reads ``ft(trans.encode(s), para.encode(t))``."""
        return self.layers(x)


# --------------------------------------------------------------------------------------------
# CRD: embedding head
# --------------------------------------------------------------------------------------------
class CRDEmbed(nn.Module):
    """CRD's embedding head: flatten, a linear map to ``feat_dim``, L2 normalisation."""

    def __init__(self, in_features: int, feat_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, feat_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2.0, dim=1)


# --------------------------------------------------------------------------------------------
# MGD: masked generation of teacher features
# --------------------------------------------------------------------------------------------
class MGDGenerator(nn.Module):
    """MGD's generator: align channels, mask random pixels, regenerate the teacher feature.

    A 1x1 convolution maps ``student_channels`` to ``teacher_channels`` when they differ. In
    training mode each spatial position of each sample is then zeroed (across all channels)
    with probability ``lambda_mgd``, drawn from torch's global RNG for the input's device, so
    ``torch.manual_seed`` makes it reproducible. A 3x3 conv, ReLU, 3x3 conv block generates the
    teacher feature from what is left. In eval mode no mask is drawn, as with dropout: the
    output is deterministic and the RNG is left untouched.
    """

    def __init__(self, student_channels: int, teacher_channels: int,
                 lambda_mgd: float = 0.65) -> None:
        super().__init__()
        self.lambda_mgd = float(lambda_mgd)
        self.align: Optional[nn.Module] = (
            nn.Conv2d(student_channels, teacher_channels, 1) if student_channels != teacher_channels
            else None)
        t = teacher_channels
        self.generation = nn.Sequential(nn.Conv2d(t, t, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(t, t, 3, padding=1))

    def keep_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh ``[N, 1, H, W]`` mask for ``x``: 0 where masked, 1 where kept."""
        n, _, h, w = x.shape
        draw = torch.rand((n, 1, h, w), device=x.device)
        # P(draw < lambda) = lambda for draw ~ U[0, 1), so lambda=1 masks every position
        return (draw >= self.lambda_mgd).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"mgd_generator needs a feature map [N, C, H, W], "
                             f"got {list(x.shape)}")
        if self.align is not None:
            x = self.align(x)
        if self.training and self.lambda_mgd > 0.0:
            x = x * self.keep_mask(x)
        return self.generation(x)

    def extra_repr(self) -> str:
        return f"lambda_mgd={self.lambda_mgd}"
