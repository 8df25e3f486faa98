"""Built-in general-purpose connectors: trainable (or fixed) adapters applied to tensors inside losses.

Declarations only; the implementations are in :mod:`kdsl.components.connectors`, imported when a
connector is built. The connectors of one distillation method (OFD, Factor Transfer, CRD, MGD) are
declared in :mod:`kdsl.catalog.method_connectors`. This module must not import torch, so that
checking a spec stays fast and works without it.
"""

from __future__ import annotations

from kdsl.catalog.types import (BOOL, COUNT, FLOAT, INT, NON_NEGATIVE, POSITIVE, STR, TENSOR, Infer, Param,
                                choice, declarer, each, list_of, one_of, one_or_each, optional)
from kdsl.catalog.shapes import rank


# Kept in step with the implementations' accepted values (a test compares them).
ACT_CHOICES = ("relu", "leaky_relu", "gelu", "silu", "sigmoid", "tanh", "none")
CONV_NORM_CHOICES = ("bn", "ln", "gn", "none")
MLP_NORM_CHOICES = ("bn", "ln", "none")
NORM_KIND_CHOICES = ("bn", "ln")
POOL_MODE_CHOICES = ("avg", "max")
INTERPOLATE_MODE_CHOICES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic",
                            "trilinear", "area")

# Inputs and options shared with :mod:`kdsl.catalog.method_connectors`.
X_MAP = Param("x", TENSOR, doc="feature map [N, C, H, W]")
X_CHANNELS = Param("x", TENSOR, doc="tensor [N, C, ...] with channels in dimension 1")
IN_CHANNELS = Param("in_channels", INT, doc="channels of the input (inferred)", constraint=COUNT)

_X_ANY = Param("x", TENSOR, doc="tensor whose last dimension is the feature dimension")
_X_SPATIAL = Param("x", TENSOR, doc="tensor [N, C, L], [N, C, H, W] or [N, C, D, H, W]")

_OUT_CHANNELS = Param("out_channels", INT, doc="channels of the output (inferred from the target)",
                      constraint=COUNT)
_CHANNELS_IN_OUT = (Infer("in_channels", "input", dim=1), Infer("out_channels", "target", dim=1))
_IN_FEATURES = Param("in_features", INT, doc="size of the input's last dimension (inferred)",
                     constraint=COUNT)
_OUT_FEATURES = Param("out_features", INT, doc="size of the output's last dimension (inferred from "
                      "the target)", constraint=COUNT)

_FITNETS = "Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015"


_connector = declarer("connector", __name__)


COMPONENTS = (
    _connector(
        "conv_bn", "ConvBN",
        summary="Conv2d + normalisation + optional activation (channel and stride adapter).",
        doc=("Applies a 2-D convolution, then a normalisation layer (`norm`: batch norm, layer "
             "norm over the channels at each position, group norm with `num_groups` groups, or "
             "none) and an activation (`act`, none by default so the output can match "
             "pre-activation teacher features). It adapts the channels of a student feature map "
             "to the teacher's and, with `stride`, its resolution, like MMRazor's "
             "ConvModuleConnector. `padding` defaults to (kernel_size - 1) // 2, which keeps the "
             "spatial size for odd kernels at stride 1; `bias=\"auto\"` gives the convolution a "
             "bias only when `norm` is none. `in_channels` and `out_channels` are inferred from "
             "the input and from the tensor the output is compared with."),
        inputs=(X_MAP,),
        options=(
            IN_CHANNELS, _OUT_CHANNELS,
            Param("kernel_size", INT, 1, "convolution kernel size", COUNT),
            Param("stride", INT, 1, "convolution stride", COUNT),
            Param("padding", optional(INT), None,
                  "zero padding; none pads (kernel_size - 1) // 2", NON_NEGATIVE),
            Param("norm", choice(*CONV_NORM_CHOICES), "bn", "normalisation after the conv"),
            Param("act", choice(*ACT_CHOICES), "none", "activation after the norm"),
            Param("bias", one_of(BOOL, choice("auto")), "auto",
                  "conv bias; \"auto\": only without a norm"),
            Param("num_groups", INT, 32, "groups of norm=\"gn\" (must divide out_channels)", COUNT),
        ),
        rules=(rank("x", 4),),
        infer=_CHANNELS_IN_OUT,
    ),
    _connector(
        "conv1x1", "Conv1x1",
        summary="FitNets regressor: a 1x1 convolution, optionally followed by batch norm.",
        doc=("Maps the channels of a student feature map to the teacher's with a 1x1 "
             "convolution (with a bias unless `bn` is true), optionally followed by BatchNorm2d; "
             "this is the convolutional regressor of FitNets (Romero et al., ICLR 2015) that "
             "lets a thin student's hint layer be compared with a wider teacher's guided layer. "
             "Both channel counts are inferred."),
        paper=_FITNETS,
        inputs=(X_MAP,),
        options=(IN_CHANNELS, _OUT_CHANNELS,
                 Param("bn", BOOL, False, "add BatchNorm2d after the conv")),
        rules=(rank("x", 4),),
        infer=_CHANNELS_IN_OUT,
    ),
    _connector(
        "linear", "Linear",
        summary="A linear map of the last dimension.",
        doc=("Computes x W^T + b over the last dimension of the input (nn.Linear), e.g. to map "
             "a student's embedding or token features to the teacher's width. `in_features` is "
             "inferred from the input's last dimension and `out_features` from the last "
             "dimension of the tensor the output is compared with."),
        inputs=(_X_ANY,),
        options=(_IN_FEATURES, _OUT_FEATURES,
                 Param("bias", BOOL, True, "add a learnt bias")),
        infer=(Infer("in_features", "input", dim=-1), Infer("out_features", "target", dim=-1)),
    ),
    _connector(
        "mlp", "MLP",
        summary="A multi-layer perceptron on the last dimension.",
        doc=("Linear layers over the last dimension, each hidden one followed by `norm` (batch "
             "norm with statistics over all other dimensions, layer norm, or none) and `act`; "
             "the last layer is linear only. `hidden` lists the hidden widths: none means one "
             "hidden layer as wide as the output, an empty list a single linear layer. A "
             "non-linear projector is often a better student-to-teacher adapter than a linear "
             "one. `in_features` and `out_features` are inferred like those of `linear`."),
        inputs=(_X_ANY,),
        options=(_IN_FEATURES, _OUT_FEATURES,
                 Param("hidden", optional(list_of(INT)), None,
                       "hidden widths; none: one layer of out_features", each(COUNT)),
                 Param("act", choice(*ACT_CHOICES), "relu", "activation after each hidden layer"),
                 Param("norm", choice(*MLP_NORM_CHOICES), "none",
                       "normalisation after each hidden layer")),
        infer=(Infer("in_features", "input", dim=-1), Infer("out_features", "target", dim=-1)),
    ),
    _connector(
        "norm", "Norm",
        summary="Batch norm or layer norm over the channels (dimension 1) of the input.",
        doc=("Normalises the input over its channel dimension 1: `kind=\"bn\"` is batch norm "
             "(statistics over the batch and all positions, running averages in eval mode) for "
             "inputs of any rank >= 2; `kind=\"ln\"` is layer norm of each position's channel "
             "vector. Normalising both sides before a feature loss removes differences of scale "
             "between student and teacher. `num_features` is inferred from the input's "
             "dimension 1; for token tensors [N, L, C] use torch_nn(type=\"LayerNorm\")."),
        inputs=(X_CHANNELS,),
        options=(Param("num_features", INT, doc="channels of the input (inferred)", constraint=COUNT),
                 Param("kind", choice(*NORM_KIND_CHOICES), "bn", "batch norm or layer norm"),
                 Param("affine", BOOL, True, "learn a per-channel scale and shift")),
        rules=(rank("x", 2, 3, 4, 5),),
        infer=(Infer("num_features", "input", dim=1),),
    ),
    _connector(
        "pool", "Pool",
        summary="Adaptive average or max pooling to output_size.",
        doc=("Pools the spatial dimensions of an [N, C, L], [N, C, H, W] or [N, C, D, H, W] "
             "input to `output_size` with adaptive average or max pooling, e.g. to compare "
             "feature maps of different resolutions or to reduce them to channel vectors "
             "(output_size 1). A list gives one size per spatial dimension."),
        inputs=(_X_SPATIAL,),
        options=(Param("output_size", one_of(INT, list_of(INT)), 1, "output spatial size",
                       one_or_each(COUNT)),
                 Param("mode", choice(*POOL_MODE_CHOICES), "avg", "average or max pooling")),
        rules=(rank("x", 3, 4, 5),),
    ),
    _connector(
        "interpolate", "Interpolate",
        summary="Resize the spatial dimensions to size or by scale_factor.",
        doc=("Resamples the spatial dimensions of the input (torch.nn.functional.interpolate) "
             "to `size` or by `scale_factor`, exactly one of which must be given, with `mode` "
             "(linear, bilinear/bicubic and trilinear need 1, 2 and 3 spatial dimensions). It "
             "matches the resolution of a student feature map to the teacher's; "
             "`align_corners` applies to the linear modes only."),
        inputs=(_X_SPATIAL,),
        options=(Param("size", optional(one_of(INT, list_of(INT))), None, "output spatial size",
                       one_or_each(COUNT)),
                 Param("scale_factor", optional(one_of(FLOAT, list_of(FLOAT))), None,
                       "multiplier of the spatial size", one_or_each(POSITIVE)),
                 Param("mode", choice(*INTERPOLATE_MODE_CHOICES), "bilinear",
                       "interpolation algorithm"),
                 Param("align_corners", optional(BOOL), None,
                       "align corner pixels (linear modes)")),
        rules=(rank("x", 3, 4, 5),),
    ),
    _connector(
        "flatten", "Flatten",
        summary="Flatten dimensions start_dim..end_dim into one.",
        doc=("Reshapes the input so that dimensions `start_dim` to `end_dim` become one "
             "(torch.flatten); with the defaults an [N, C, H, W] feature map becomes "
             "[N, C*H*W], as losses on per-sample vectors expect. It has no parameters."),
        inputs=(Param("x", TENSOR, doc="any tensor"),),
        options=(Param("start_dim", INT, 1, "first dimension flattened"),
                 Param("end_dim", INT, -1, "last dimension flattened")),
    ),
    _connector(
        "torch_nn", "TorchNN",
        summary="Any torch.nn module by class name, its options passed through.",
        doc=("Builds torch.nn.<type>(**options) and applies it to the input, for adapters the "
             "other connectors do not cover, e.g. torch_nn(type=\"Conv2d\", in_channels=64, "
             "out_channels=128, kernel_size=3, padding=1). The class name is checked against "
             "torch.nn's module classes (with a did-you-mean for misspellings) and the options "
             "against the class's constructor before it is built. Containers, losses and "
             "modules taking several inputs are refused. Options are not inferred; Lazy* "
             "modules (LazyConv2d, LazyLinear) infer their input size themselves."),
        inputs=(Param("x", TENSOR, doc="input of the module"),),
        options=(Param("type", STR, doc="torch.nn class name, e.g. \"Conv2d\""),),
        open_options=True,
    ),
)
