"""Built-in connectors that belong to one distillation method: OFD's margin ReLU, Factor
Transfer's paraphraser and translator, CRD's embedding head and MGD's masked generator.

Declarations only; the implementations are in :mod:`kdsl.components.method_connectors`, imported
when a connector is built. Like every catalog module, this one must not import torch.
"""

from __future__ import annotations

from kdsl.catalog.connectors import IN_CHANNELS, X_CHANNELS, X_MAP
from kdsl.catalog.shapes import rank
from kdsl.catalog.types import (BOOL, COUNT, FLOAT, INT, MODULE, POSITIVE, PROBABILITY, TENSOR, Infer, Param,
                                declarer, optional)

_OFD = "Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019"
_FT = "Kim, Park and Kwak, Paraphrasing Complex Network: Network Compression via Factor " \
      "Transfer, NeurIPS 2018"
_CRD = "Tian, Krishnan and Isola, Contrastive Representation Distillation, ICLR 2020"
_MGD = "Yang et al., Masked Generative Distillation, ECCV 2022"


_connector = declarer("connector", __name__)


COMPONENTS = (
    _connector(
        "ofd_margin", "OFDMargin",
        summary="OFD's teacher-side margin ReLU max(x, m), margins from a teacher BatchNorm.",
        doc=("Computes max(x, m) with a per-channel margin m, the teacher transform of OFD (Heo "
             "et al., ICCV 2019), applied to the teacher's pre-ReLU feature. Modelling the "
             "output of the given teacher BatchNorm as x ~ N(beta, gamma^2) per channel, m is "
             "the expected negative response E[x | x < 0] = beta - |gamma| phi(beta/|gamma|) / "
             "Phi(-beta/|gamma|); when Phi(-beta/|gamma|) <= 0.001 the paper's -3|gamma| is used "
             "instead, and a zero gamma gives min(beta, 0). The margins are computed once when "
             "the connector is built and kept as a buffer: there are no trainable parameters."),
        paper=_OFD,
        inputs=(X_CHANNELS,),
        options=(Param("bn", MODULE, doc="teacher BatchNorm producing the feature, e.g. "
                       "teacher.layer2.0.bn1"),),
        rules=(rank("x", 2, 3, 4, 5),),
    ),
    _connector(
        "paraphraser", "Paraphraser",
        summary="Factor Transfer's paraphraser: teacher-feature autoencoder returning the factor.",
        doc=("The teacher-side module of Factor Transfer (Kim et al., NeurIPS 2018): a "
             "convolutional autoencoder whose encoder (three 3x3 convolutions with LeakyReLU, "
             "C -> C -> F -> F channels, optional batch norm) extracts the teacher factor that "
             "the connector returns, and whose decoder (three 3x3 transposed convolutions back "
             "to C) reconstructs the input. The paraphraser is pretrained on the teacher's "
             "features with the reconstruction error, e.g. a stage with loss rec = "
             "mse(para.reconstruct(t_feat), t_feat), before distillation with "
             "ft(translator(s_feat), para.encode(t_feat)). F is `factor_channels`, or "
             "int(in_channels * rate) with the paper's paraphrase rate 0.5; `in_channels` is "
             "inferred."),
        paper=_FT,
        inputs=(X_MAP,),
        options=(IN_CHANNELS,
                 Param("rate", FLOAT, 0.5, "paraphrase rate: factor channels / in_channels",
                       POSITIVE),
                 Param("factor_channels", optional(INT), None,
                       "factor channels; overrides rate", COUNT),
                 Param("use_bn", BOOL, False, "batch norm after each convolution")),
        rules=(rank("x", 4),),
        infer=(Infer("in_channels", "input", dim=1),),
        methods=(("encode", "the teacher factor encoder(x), [N, F, H, W]; the same as the "
                            "connector's own output"),
                 ("reconstruct", "decoder(encoder(x)), shaped like x: the paraphraser's "
                                 "pretraining output, compared with x")),
    ),
    _connector(
        "translator", "Translator",
        summary="Factor Transfer's translator: maps student features to the factor space.",
        doc=("The student-side module of Factor Transfer (Kim et al., NeurIPS 2018): three 3x3 "
             "convolutions with LeakyReLU (C_s -> C_s -> F -> F channels, optional batch norm) "
             "that turn a student feature map into a factor comparable with the paraphraser's. "
             "`in_channels` is inferred from the input and `factor_channels` from the tensor the "
             "output is compared with (the paraphraser's factor)."),
        paper=_FT,
        inputs=(X_MAP,),
        options=(IN_CHANNELS,
                 Param("factor_channels", INT, doc="channels of the factor (inferred from the "
                       "target)", constraint=COUNT),
                 Param("use_bn", BOOL, False, "batch norm after each convolution")),
        rules=(rank("x", 4),),
        infer=(Infer("in_channels", "input", dim=1), Infer("factor_channels", "target", dim=1)),
        methods=(("encode", "the student factor, [N, F, H, W]; the same as the connector's own "
                            "output"),),
    ),
    _connector(
        "crd_embed", "CRDEmbed",
        summary="CRD's embedding head: flatten, linear to feat_dim, L2-normalise.",
        doc=("Flattens each sample, maps it linearly to `feat_dim` dimensions and divides by its "
             "L2 norm, the embedding head that Contrastive Representation Distillation (Tian et "
             "al., ICLR 2020) puts on both the student's and the teacher's features before the "
             "contrastive loss. `in_features` is inferred as the number of elements per sample "
             "of the input."),
        paper=_CRD,
        inputs=(Param("x", TENSOR, doc="tensor [N, ...], flattened per sample"),),
        options=(Param("in_features", INT, doc="elements per sample of the input (inferred)",
                       constraint=COUNT),
                 Param("feat_dim", INT, 128, "embedding size", COUNT)),
        infer=(Infer("in_features", "input", flat=True),),
    ),
    _connector(
        "mgd_generator", "MGDGenerator",
        summary="MGD's generator: align channels, random spatial mask, conv-ReLU-conv generation.",
        doc=("The student-side module of Masked Generative Distillation (Yang et al., ECCV "
             "2022): a 1x1 convolution aligns student channels to teacher channels when they "
             "differ, a random mask zeroes each spatial position (all channels) with probability "
             "`lambda_mgd` (torch's RNG, so seeding makes it reproducible), and a 3x3 conv, "
             "ReLU, 3x3 conv block generates the teacher feature from the rest. The mask is "
             "drawn in training mode only; in eval mode the full aligned feature is used, like "
             "dropout. Both channel counts are inferred."),
        paper=_MGD,
        inputs=(X_MAP,),
        options=(Param("student_channels", INT, doc="channels of the input (inferred)",
                       constraint=COUNT),
                 Param("teacher_channels", INT, doc="channels of the target (inferred)",
                       constraint=COUNT),
                 Param("lambda_mgd", FLOAT, 0.65, "fraction of spatial positions masked",
                       PROBABILITY)),
        rules=(rank("x", 4),),
        infer=(Infer("student_channels", "input", dim=1),
               Infer("teacher_channels", "target", dim=1)),
    ),
)
