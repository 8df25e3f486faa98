"""Connectors of one paper that return several tensors: FBKD's student and teacher modules,
knowledge review's attention-based fusion (ABF) and BYOT's gated shallow classifier.

Each returns a tuple; a spec selects an element with ``x[0]``, ``x[1]`` (the FBKD tuples go to
the fbkd loss whole). Declarations only; the implementations are in
:mod:`kdsl.components.paper_connectors`, imported when a connector is built. Like every catalog
module, this one must not import torch.
"""

from __future__ import annotations

from kdsl.catalog.connectors import IN_CHANNELS, X_MAP
from kdsl.catalog.shapes import rank
from kdsl.catalog.types import (BOOL, COUNT, INT, FLOAT, POSITIVE, TENSOR, Infer, Param, choice,
                                declarer, optional)

_FBKD = ("Zhang and Ma, Improve Object Detection with Feature-based Knowledge Distillation: "
         "Towards Accurate and Efficient Detectors, ICLR 2021")
_REVIEW = "Chen, Liu, Zhao and Jia, Distilling Knowledge via Knowledge Review, CVPR 2021"
_BYOT = ("Zhang et al., Be Your Own Teacher: Improve the Performance of Convolutional Neural "
         "Networks via Self Distillation, ICCV 2019")

_NON_LOCAL = (
    Param("reduction", INT, 2, "channel reduction of the non-local block's embeddings", COUNT),
    Param("mode", choice("dot_product", "embedded_gaussian"), "dot_product",
          "pairwise function of the non-local block (MMRazor's FBKD uses dot_product)"),
    Param("sub_sample", BOOL, False, "max-pool g and phi of the non-local block"),
    Param("maxpool_stride", INT, 2, "kernel of that max pooling", COUNT),
    Param("zeros_init", BOOL, True, "start the non-local block as the identity (zero BN scale)"),
    Param("spatial_tau", FLOAT, 0.5, "temperature of the spatial attention mask", POSITIVE),
    Param("channel_tau", FLOAT, 0.5, "temperature of the channel attention mask", POSITIVE),
)

_FBKD_MASKS = """With a(x) = mean_c |x_c| ([N, H, W]) and c(x) = mean_hw |x| ([N, C]), the
        spatial mask is H W softmax(a(x) / spatial_tau) over the positions and the channel mask
        C softmax(c(x) / channel_tau) over the channels (Eq. 1-2 of the paper). The non-local
        block (Wang et al., CVPR 2018, as mmcv's NonLocal2d) is x + BN(W_z(f(theta(x),
        phi(x)) g(x))), f the dot product divided by the number of positions (mode
        "dot_product") or the softmax of the scaled dot product ("embedded_gaussian"), with
        theta, phi, g 1x1 convolutions to in_channels / reduction channels."""

_connector = declarer("connector", __name__)
# FBKD's student and teacher modules: the same input, options and rules
_fbkd_side = declarer("connector", __name__, paper=_FBKD, inputs=(X_MAP,),
                      options=(IN_CHANNELS,) + _NON_LOCAL, rules=(rank("x", 4),),
                      infer=(Infer("in_channels", "input", dim=1),))


COMPONENTS = (
    _fbkd_side(
        "fbkd_student", "FBKDStudent",
        summary="FBKD's student module: attention masks, pooled adaptations, non-local relation.",
        doc=f"""The student side of FBKD (Zhang and Ma, ICLR 2021) as MMRazor's
        FBKDStudentConnector computes it. For a student feature x [N, C, H, W] it returns the
        tuple (spatial mask [N, 1, H, W], channel mask [N, C, 1, 1], Linear(mean_hw x) [N, C],
        Conv3x3(mean_c x) [N, 1, H, W], Conv1x1(non_local(x)) [N, C, H, W], Conv1x1(x) [N, C,
        H, W]) that the fbkd loss takes whole. {_FBKD_MASKS} Student and teacher features need
        the same channels and size (put a conv_bn before it otherwise); in_channels is
        inferred.""",
    ),
    _fbkd_side(
        "fbkd_teacher", "FBKDTeacher",
        summary="FBKD's teacher module: attention masks, channel-mean map, non-local relation.",
        doc=f"""The teacher side of FBKD (Zhang and Ma, ICLR 2021) as MMRazor's
        FBKDTeacherConnector computes it: for a teacher feature x [N, C, H, W] the tuple
        (spatial mask, channel mask, mean_c x [N, 1, H, W], non_local(x), x), taken whole by
        the fbkd loss. {_FBKD_MASKS} Its non-local block is trained through the loss (it is
        the teacher's relation module, not part of the teacher network); in_channels is
        inferred.""",
    ),
    _connector(
        "abf", "ABF",
        summary="Knowledge review's attention-based fusion; returns (output, residual).",
        doc="""Attention-based fusion (Chen et al., CVPR 2021), as torchdistill's
        ABF: x' = BN(Conv1x1(x)) maps the student feature to mid_channels; with fuse=true, the
        residual r of the next deeper ABF is resized to x's size (nearest), and with [a, b] =
        sigmoid(Conv1x1([x', r])) two attention maps, x' <- a * x' + b * r. x' is resized to
        out_size (nearest) when given, and the output is y = BN(Conv3x3(x')) with out_channels
        channels. It returns the tuple (y, x'): y is compared with the teacher's feature (hcl(
        abf3(s3, r)[0], t3)) and x' is the residual of the next shallower ABF (abf2(s2,
        abf3(s3, r)[1])). The deepest stage has nothing to fuse: fuse=false and no residual.
        Convolution weights start kaiming-uniform with a = 1, as in the authors' code.
        in_channels is inferred.""",
        paper=_REVIEW,
        inputs=(Param("x", TENSOR, doc="student feature [N, C, H, W]"),
                Param("residual", optional(TENSOR), None,
                      "the deeper ABF's residual [N, mid_channels, h, w] (with fuse=true)")),
        options=(IN_CHANNELS,
                 Param("mid_channels", INT, doc="channels of the fused map", constraint=COUNT),
                 Param("out_channels", INT, doc="channels of the output (the teacher's)",
                       constraint=COUNT),
                 Param("fuse", BOOL, True, "fuse the deeper stage's residual (false: deepest)"),
                 Param("out_size", optional(INT), None,
                       "spatial size of the output (the teacher's); none: the input's",
                       COUNT)),
        rules=(rank("x", 4), rank("residual", 4)),
        infer=(Infer("in_channels", "input", dim=1),),
    ),
    _connector(
        "byot", "BYOT",
        summary="BYOT's shallow classifier: elementwise attention gate, SepConv stages, linear.",
        doc="""A shallow classifier of Be Your Own Teacher (Zhang et al., ICCV 2019)
        as MMRazor's BYOTConnector builds it, for a feature x [N, C, H, W] of a middle stage:
        the gate g = sigmoid(up2(ReLU(BN(SepConv_2(x))))) (SepConv_2 a DARTS separable
        convolution at stride 2, up2 bilinear upsampling by 2, so H and W must be even) is
        multiplied elementwise with x, then log2(out_channels / in_channels) SepConv stages at
        stride 2 double the channels while halving the resolution, the map is average-pooled
        (pool_size, or globally when none) and flattened to f [N, out_channels], and a linear
        layer gives logits [N, num_classes]. It returns (f, logits): the features are
        compared with the deepest stage's (l2) and the logits with the final output (kl_div)
        and the labels. in_channels and out_channels are the actual channel counts (MMRazor's
        in_channel and out_channel times its expansion); in_channels is inferred.""",
        paper=_BYOT,
        inputs=(X_MAP,),
        options=(IN_CHANNELS,
                 Param("out_channels", INT, doc="channels of the deepest stage: in_channels "
                       "times a power of 2", constraint=COUNT),
                 Param("num_classes", INT, doc="classes of the logits", constraint=COUNT),
                 Param("kernel_size", choice(3, 5), 3, "kernel of the separable convolutions"),
                 Param("pool_size", optional(INT), None,
                       "average-pooling kernel (MMRazor: 4); none: global average", COUNT)),
        rules=(rank("x", 4),),
        infer=(Infer("in_channels", "input", dim=1),),
    ),
)
