"""DAFL's image generator, for data-free distillation (``generator gen = model("kdsl.zoo:dafl_generator")``).

Chen et al., "Data-Free Learning of Student Networks", ICCV 2019, train this DCGAN-style generator
so that a frozen teacher answers confidently, strongly and evenly over the classes on its images,
and distil the teacher into the student on those images. Input: latent codes ``[N, latent_dim]``
(``noise(latent_dim)`` in a spec); output: images ``[N, channels, img_size, img_size]``.

Module names, in order: ``linear`` (to ``128 x (img_size/4)^2``), ``bn0``, ``up1`` (nearest x2),
``conv1``/``bn1``/``relu1`` (128 -> 128), ``up2`` (nearest x2), ``conv2``/``bn2``/``relu2``
(128 -> 64), ``conv3`` (64 -> channels), ``tanh``, ``bn3`` (no affine parameters); the
standardised images are then scaled by ``std`` and shifted by ``mean`` (defaults 1 and 0: DAFL's
own generator), so that they have the statistics of the inputs the teacher was trained on - for
the bundled digits in [0, 1], ``mean=0.305, std=0.376``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DAFLGenerator", "dafl_generator"]

#: Channels of the generator's first feature map (DAFL's code and MMRazor's ``hidden_channels``).
HIDDEN_CHANNELS = 128
#: DAFL's code passes 0.8 as BatchNorm2d's second positional argument, which is ``eps``, not the
#: momentum; MMRazor keeps it as ``bn_eps=0.8``. Kept so that results are comparable.
BN_EPS = 0.8
LEAKY_SLOPE = 0.2


class DAFLGenerator(nn.Module):
    """DAFL's generator: linear, BN, (upsample x2, conv 3x3, BN, LeakyReLU) twice, conv, tanh, BN.

    The last BatchNorm has no affine parameters: it standardises every output channel over the
    batch (in training mode), so generated images have the zero-mean, unit-variance statistics
    of normalised real inputs whatever the teacher's normalisation was.
    """

    def __init__(self, latent_dim: int = 100, img_size: int = 32, channels: int = 3,
                 mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        for name, value in (("latent_dim", latent_dim), ("img_size", img_size), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if img_size % 4:
            # two x2 upsamplings from img_size / 4: other sizes would not come back to img_size
            raise ValueError(f"img_size must be a multiple of 4, got {img_size}")
        hidden = HIDDEN_CHANNELS
        self.latent_dim, self.img_size, self.channels = latent_dim, img_size, channels
        self.init_size = img_size // 4
        self.linear = nn.Linear(latent_dim, hidden * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(hidden)
        self.up1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv1 = nn.Conv2d(hidden, hidden, 3, stride=1, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self.relu1 = nn.LeakyReLU(LEAKY_SLOPE)
        self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv2 = nn.Conv2d(hidden, hidden // 2, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(hidden // 2, eps=BN_EPS)
        self.relu2 = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv3 = nn.Conv2d(hidden // 2, channels, 3, stride=1, padding=1)
        self.tanh = nn.Tanh()
        self.bn3 = nn.BatchNorm2d(channels, affine=False)
        self.mean, self.std = float(mean), float(std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"dafl_generator takes latent codes [N, {self.latent_dim}], "
                             f"got {list(z.shape)}")
        x = self.linear(z).view(z.shape[0], -1, self.init_size, self.init_size)
        x = self.up1(self.bn0(x))
        x = self.up2(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        images = self.bn3(self.tanh(self.conv3(x)))
        if self.mean == 0.0 and self.std == 1.0:
            return images
        return images * self.std + self.mean

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, img_size={self.img_size}, channels={self.channels}, "
                f"mean={self.mean}, std={self.std}")


def dafl_generator(latent_dim: int = 100, img_size: int = 32, channels: int = 3,
                   mean: float = 0.0, std: float = 1.0) -> DAFLGenerator:
    """DAFL's generator (Chen et al., ICCV 2019): ``[N, latent_dim]`` codes to
    ``[N, channels, img_size, img_size]`` images (``img_size`` a multiple of 4; about 1.05M
    parameters at the defaults, 0.27M for the 8x8 digits with ``img_size=8, channels=1``).
    PyTorch's default initialisation, as in DAFL's code. ``mean``/``std`` give the images the
    statistics of the teacher's real inputs (see the module's doc)."""
    return DAFLGenerator(latent_dim, img_size, channels, mean, std)
