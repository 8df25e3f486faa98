"""General-purpose connectors: convolution, linear and MLP adapters, normalisation, resizing.

Every class here is the implementation of a catalog entry in :mod:`kdsl.catalog.connectors`;
``__init__`` takes exactly the options declared there and ``forward`` the declared inputs. The
method-specific connectors (OFD, Factor Transfer, CRD, MGD) live in
:mod:`kdsl.components.method_connectors`.

The options' types, choices and ranges are declared, and checked, in the catalog
(:func:`kdsl.catalog.binding.instantiate`, which the builders call), so the classes do not repeat
those checks. What the catalog cannot say per option (one option must divide another, exactly one
of two must be given) raises :class:`ConnectorConfigError` (a ``ValueError``) with a message that
names the options, so the compiler can report every connector problem the same way.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from kdsl.core.suggest import did_you_mean


class ConnectorConfigError(ValueError):
    """A connector was given options it cannot be built from."""


# --------------------------------------------------------------------------------------------
# Activations and normalisation layers shared by several connectors
# --------------------------------------------------------------------------------------------
ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "none": nn.Identity,
}

CONV_NORMS: Tuple[str, ...] = ("bn", "ln", "gn", "none")
MLP_NORMS: Tuple[str, ...] = ("bn", "ln", "none")
NORM_KINDS: Tuple[str, ...] = ("bn", "ln")
POOL_MODES: Tuple[str, ...] = ("avg", "max")
INTERPOLATE_MODES: Tuple[str, ...] = ("nearest", "nearest-exact", "linear", "bilinear",
                                      "bicubic", "trilinear", "area")


def make_activation(act: str) -> nn.Module:
    return ACTIVATIONS[act]()


class ChannelBatchNorm(_BatchNorm):
    """Batch norm over dimension 1 for inputs of any rank >= 2.

    ``BatchNorm1d/2d/3d`` differ only in the rank they accept; a connector does not know the
    rank of its input when it is built, so this one accepts them all.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"batch norm needs an input of shape [N, C, ...], "
                             f"got {list(input.shape)}")


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over dimension 1 (the channels), separately at every other position.

    For an ``[N, C, H, W]`` feature map this normalises each pixel's channel vector, the
    convention of ConvNeXt-style ``LayerNorm2d``; ``nn.LayerNorm(C)`` alone would normalise
    the last (width) dimension instead.
    """

    def __init__(self, num_features: int, affine: bool = True) -> None:
        super().__init__(num_features, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class LastDimBatchNorm(ChannelBatchNorm):
    """Batch norm of the last dimension, statistics over every other one (tokens included)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(-1, 1)).movedim(1, -1)


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def make_channel_norm(owner: str, norm: str, channels: int, num_groups: int = 32) -> nn.Module:
    """The normalisation layer of a conv connector (channels in dimension 1)."""
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "ln":
        return ChannelLayerNorm(channels)
    if norm == "gn":
        if channels % num_groups:
            best = _largest_divisor_at_most(channels, num_groups)
            raise ConnectorConfigError(
                f"norm='gn' of '{owner}' needs out_channels ({channels}) divisible by num_groups "
                f"({num_groups}); num_groups={best} would work")
        return nn.GroupNorm(num_groups, channels)
    return nn.Identity()


def _make_feature_norm(norm: str, features: int) -> nn.Module:
    if norm == "bn":
        return LastDimBatchNorm(features)
    if norm == "ln":
        return nn.LayerNorm(features)
    return nn.Identity()


# --------------------------------------------------------------------------------------------
# Convolutional adapters
# --------------------------------------------------------------------------------------------
class ConvBN(nn.Module):
    """Conv2d, then a normalisation layer, then an optional activation.

    ``padding=None`` pads ``(kernel_size - 1) // 2``, which keeps the spatial size for odd
    kernels at stride 1. ``bias="auto"`` gives the convolution a bias only when there is no
    normalisation layer after it (a norm's own shift makes a conv bias redundant).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 padding: Optional[int] = None, norm: str = "bn", act: str = "none",
                 bias: Union[bool, str] = "auto", num_groups: int = 32) -> None:
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2
        use_bias = norm == "none" if bias == "auto" else bool(bias)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=use_bias)
        self.norm = make_channel_norm("conv_bn", norm, out_channels, num_groups)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class Conv1x1(nn.Module):
    """FitNets' regressor: a 1x1 convolution, optionally followed by batch norm."""

    def __init__(self, in_channels: int, out_channels: int, bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


# --------------------------------------------------------------------------------------------
# Adapters on the last dimension
# --------------------------------------------------------------------------------------------
class Linear(nn.Linear):
    """A linear map of the last dimension (``nn.Linear``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class MLP(nn.Module):
    """Linear layers on the last dimension with norm and activation between them.

    ``hidden`` lists the widths of the hidden layers; ``None`` means one hidden layer as wide as
    the output, and ``[]`` a single linear layer. The last layer has no norm or activation, so
    the output can take any value the target can.
    """

    def __init__(self, in_features: int, out_features: int,
                 hidden: Optional[Sequence[int]] = None, act: str = "relu",
                 norm: str = "none") -> None:
        super().__init__()
        widths = [out_features] if hidden is None else list(hidden)
        layers: List[nn.Module] = []
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), _make_feature_norm(norm, width),
                       make_activation(act)]
            previous = width
        layers.append(nn.Linear(previous, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Norm(nn.Module):
    """Batch norm (``kind="bn"``) or layer norm (``kind="ln"``) over dimension 1 of the input."""

    def __init__(self, num_features: int, kind: str = "bn", affine: bool = True) -> None:
        super().__init__()
        if kind == "bn":
            self.norm: nn.Module = ChannelBatchNorm(num_features, affine=affine)
        else:
            self.norm = ChannelLayerNorm(num_features, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


# --------------------------------------------------------------------------------------------
# Shape-only connectors (no parameters)
# --------------------------------------------------------------------------------------------
def _spatial_rank(owner: str, x: torch.Tensor) -> int:
    spatial = x.dim() - 2
    if spatial not in (1, 2, 3):
        raise ValueError(f"'{owner}' needs an input of shape [N, C, L], [N, C, H, W] or "
                         f"[N, C, D, H, W], got {list(x.shape)}")
    return spatial


_ADAPTIVE_POOLS = {
    ("avg", 1): F.adaptive_avg_pool1d, ("avg", 2): F.adaptive_avg_pool2d,
    ("avg", 3): F.adaptive_avg_pool3d, ("max", 1): F.adaptive_max_pool1d,
    ("max", 2): F.adaptive_max_pool2d, ("max", 3): F.adaptive_max_pool3d,
}


class Pool(nn.Module):
    """Adaptive average or max pooling of the spatial dimensions to ``output_size``."""

    def __init__(self, output_size: Union[int, Sequence[int]] = 1, mode: str = "avg") -> None:
        super().__init__()
        self.output_size: Union[int, Tuple[int, ...]] = (
            output_size if isinstance(output_size, int) else tuple(output_size))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = _spatial_rank("pool", x)
        size = self.output_size
        if isinstance(size, tuple) and len(size) != spatial:
            raise ValueError(f"'pool' has output_size {list(size)} for {len(size)} spatial "
                             f"dimension(s), but the input {list(x.shape)} has {spatial}")
        return _ADAPTIVE_POOLS[(self.mode, spatial)](x, size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, mode={self.mode!r}"


# the number of spatial dimensions each interpolation mode works on (None: any)
_MODE_SPATIAL = {"linear": 1, "bilinear": 2, "bicubic": 2, "trilinear": 3}


class Interpolate(nn.Module):
    """Resize the spatial dimensions to ``size`` or by ``scale_factor`` (exactly one of them)."""

    def __init__(self, size: Union[int, Sequence[int], None] = None,
                 scale_factor: Union[float, Sequence[float], None] = None,
                 mode: str = "bilinear", align_corners: Optional[bool] = None) -> None:
        super().__init__()
        if (size is None) == (scale_factor is None):
            raise ConnectorConfigError("'interpolate' needs exactly one of 'size' and "
                                       "'scale_factor'")
        if size is not None and not isinstance(size, int):
            size = tuple(size)
        if scale_factor is not None:
            scale_factor = (float(scale_factor) if isinstance(scale_factor, (int, float))
                            else tuple(float(f) for f in scale_factor))
        self.mode = mode
        if align_corners is not None and self.mode not in _MODE_SPATIAL:
            raise ConnectorConfigError(
                f"'align_corners' of 'interpolate' only applies to the modes "
                f"{', '.join(_MODE_SPATIAL)}, not {self.mode!r}")
        self.size = size
        self.scale_factor = scale_factor
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = _spatial_rank("interpolate", x)
        wanted = _MODE_SPATIAL.get(self.mode)
        if wanted is not None and wanted != spatial:
            raise ValueError(f"interpolate mode {self.mode!r} works on {wanted} spatial "
                             f"dimension(s), but the input {list(x.shape)} has {spatial}")
        return F.interpolate(x, size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                             align_corners=self.align_corners)

    def extra_repr(self) -> str:
        target = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{target}, mode={self.mode!r}"


class Flatten(nn.Module):
    """Flatten dimensions ``start_dim`` to ``end_dim`` into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# --------------------------------------------------------------------------------------------
# Any torch.nn module
# --------------------------------------------------------------------------------------------
# Names in torch.nn that are modules but cannot serve as a one-tensor adapter built from options.
_NOT_ADAPTERS = {
    "Module": "the abstract base class",
    "Container": "a container",
    "Sequential": "a container",
    "ModuleList": "a container",
    "ModuleDict": "a container",
    "ParameterList": "a container",
    "ParameterDict": "a container",
    "DataParallel": "a wrapper around another module",
    "RNNBase": "a base class (use RNN, LSTM or GRU)",
    "RNNCellBase": "a base class (use RNNCell, LSTMCell or GRUCell)",
}


def _is_loss_name(name: str) -> bool:
    return name.endswith("Loss") or name in ("NLLLoss2d",)


def torch_nn_module_names() -> List[str]:
    """Public ``torch.nn`` module classes that ``torch_nn`` can build."""
    names = []
    for name in dir(nn):
        obj = getattr(nn, name)
        if (not name.startswith("_") and isinstance(obj, type) and issubclass(obj, nn.Module)
                and name not in _NOT_ADAPTERS and not _is_loss_name(name)):
            names.append(name)
    return sorted(names)


def _required_forward_inputs(cls: type) -> List[str]:
    params = list(inspect.signature(cls.forward).parameters.values())[1:]
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


def _resolve_torch_nn_type(name: Any) -> type:
    if not isinstance(name, str) or not name:
        raise ConnectorConfigError(f"'type' of 'torch_nn' must name a torch.nn module class "
                                   f"such as \"Conv2d\", got {name!r}")
    candidates = torch_nn_module_names()
    obj = getattr(nn, name, None) if not name.startswith("_") else None
    if name in _NOT_ADAPTERS:
        raise ConnectorConfigError(f"torch.nn.{name} is {_NOT_ADAPTERS[name]} and cannot be "
                                   f"built as a connector; name a layer such as \"Conv2d\"")
    if _is_loss_name(name) and obj is not None:
        raise ConnectorConfigError(f"torch.nn.{name} is a loss, not a connector; use it as a "
                                   f"loss in the spec instead")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        what = "is not a module class" if obj is not None else "does not exist"
        hint = did_you_mean(name, candidates)
        raise ConnectorConfigError(f"torch.nn.{name} {what}" + (f"; {hint}" if hint else ""))
    return obj


def _check_torch_nn_options(cls: type, options: Dict[str, Any]) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    names = [p.name for p in named]
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    label = f"torch.nn.{cls.__name__}"
    if not open_kwargs:
        for key in options:
            if key not in names:
                hint = did_you_mean(key, names)
                raise ConnectorConfigError(
                    f"{label} has no option '{key}'; "
                    + (hint if hint else f"it takes {', '.join(names) or 'no options'}"))
    missing = [p.name for p in named if p.default is p.empty and p.name not in options]
    if missing:
        raise ConnectorConfigError(f"{label} needs the option{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(repr(m) for m in missing)}")


class TorchNN(nn.Module):
    """Any ``torch.nn`` module applied to one tensor, built by class name from its options.

    ``TorchNN(type="Conv2d", in_channels=64, out_channels=128, kernel_size=3, padding=1)``
    builds ``nn.Conv2d(in_channels=64, ...)``; the built module is ``self.module``. Names are
    checked before construction so that a misspelt class or option gets a did-you-mean, and
    errors raised by the constructor itself are re-raised naming the class.
    """

    def __init__(self, type: str, **options: Any) -> None:
        super().__init__()
        cls = _resolve_torch_nn_type(type)
        inputs = _required_forward_inputs(cls)
        if len(inputs) > 1:
            raise ConnectorConfigError(
                f"torch.nn.{type} takes {len(inputs)} inputs ({', '.join(inputs)}); a torch_nn "
                f"connector is applied to one tensor")
        _check_torch_nn_options(cls, options)
        try:
            self.module = cls(**options)
        except (TypeError, ValueError, RuntimeError) as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
            raise ConnectorConfigError(f"torch.nn.{type}({shown}) failed: {exc}") from exc

    def forward(self, x: torch.Tensor) -> Any:
        return self.module(x)
