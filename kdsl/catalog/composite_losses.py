"""Losses that read several tensors of a model - logits with features, or an auxiliary
self-supervision head: signatures, shape rules and documentation (no torch here).

The implementations live in :mod:`kdsl.components.composite_losses`. Where a torchdistill loss
adds a logit term to a feature term, kdsl keeps the feature term here and the logit term is a
second term of the spec (``dist``, ``kd``, ``kl_div``), each entry saying which.
"""

from __future__ import annotations

from kdsl.catalog.types import (BOOL, FLOAT, LABELS, NON_NEGATIVE, POSITIVE, PROBABILITY, TENSOR,
                                Param, choice, declarer)
from kdsl.catalog.shapes import rank, same_batch, same_shape


_S = Param("preds_S", TENSOR, doc="student tensor")
_T = Param("preds_T", TENSOR, doc="teacher tensor")
_DETACH = Param("detach_teacher", BOOL, True, "stop gradients at the teacher's inputs")
_SSKD = "Xu, Liu, Li and Loy, Knowledge Distillation Meets Self-Supervision, ECCV 2020"
_SSKD_TITLE = 'Xu, Liu, Li and Loy, "Knowledge Distillation Meets Self-Supervision", ECCV 2020.'
_SKD = "torchdistill's SKD losses (SKDInstanceLoss, SKDDirectionLoss)"
_ROTATION_LAYOUT = """The batch is laid out as SSKD's loader gives it, each original followed by
        its three rotations ([x0, rot90(x0), rot180(x0), rot270(x0), x1, ...]): rows i with
        i % 4 == 0 are the originals."""


_loss = declarer("loss", __name__, inputs=(_S, _T))


COMPONENTS = (
    _loss(
        "dist_plus", "DISTPlusLoss",
        "DIST+'s feature term: channel and spatial Pearson relations of feature maps.",
        """With rho the Pearson correlation, channel = mean over (n, h, w) of rho over the
        channels of S[n, :, h, w] and T[n, :, h, w] (1e-8 added to the product of the norms),
        and spatial = mean over (h, w) of rho over the batch of the channel sums sum_c S[:, c,
        h, w] and sum_c T[:, c, h, w]; L = channel_weight * (1 - channel) + spatial_weight *
        (1 - spatial). The logit part of DIST+ is the dist loss, a second term.
        form="torchdistill" adds channel_weight * channel instead of channel_weight * (1 -
        channel), as torchdistill's DISTPlusLoss does (its iota and kappa are channel_weight
        and spatial_weight; its beta, gamma and tau go to dist with form="torchdistill").
        DIST+ is Huang et al.'s extension of "Knowledge Distillation from A Stronger Teacher"
        (NeurIPS 2022) to intermediate features.""",
        "Huang et al., DIST+ (extends Knowledge Distillation from A Stronger Teacher, NeurIPS 2022)",
        inputs=(Param("preds_S", TENSOR, doc="student feature map, [N, C, H, W]"),
                Param("preds_T", TENSOR, doc="teacher feature map, same shape")),
        options=(Param("channel_weight", FLOAT, 1.0, "weight of the channel term (iota)",
                       NON_NEGATIVE),
                 Param("spatial_weight", FLOAT, 1.0, "weight of the spatial term (kappa)",
                       NON_NEGATIVE),
                 Param("form", choice("paper", "torchdistill"), "paper",
                       '"torchdistill": torchdistill DISTPlusLoss - the channel term adds the '
                       'correlation, not 1 - correlation')),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 3, 4, 5)),
    ),
    _loss(
        "srd", "SRDLoss",
        "SRD's feature term: 2 log of the summed |S - T|^exponent of projected features.",
        """L = 2 * log(sum over all elements of |S - T|^exponent), S the student's projected
        (and normalized) feature and T the teacher's: the log makes the gradient scale-free.
        torchdistill's SRDLoss adds KL(softmax(z_T / tau) || softmax(z_S / tau)) / N without
        tau^2, which is a second term kd(z_S, z_T, alpha=0, tau=tau, form="torchdistill").
        Miles and Mikolajczyk, "Understanding the Role of the Projector in Knowledge
        Distillation", AAAI 2024.""",
        "Miles and Mikolajczyk, Understanding the Role of the Projector in KD, AAAI 2024",
        options=(Param("exponent", FLOAT, 2.0, "power of each absolute difference", POSITIVE),),
        rules=(same_shape("preds_S", "preds_T"),),
    ),
    _loss(
        "skd_instance", "SKDInstanceLoss",
        "SKD's instance term: tempered KL divergence per sample, without tau^2.",
        """L = KL(softmax(T / tau) || softmax(S / tau)) summed over classes and averaged over
        the batch, not multiplied by tau^2 (unlike kl_div): the same value as
        kd(alpha=0, form="torchdistill"). Same value as torchdistill's SKDInstanceLoss.""",
        _SKD,
        inputs=(Param("preds_S", TENSOR, doc="student logits, [N, C]"),
                Param("preds_T", TENSOR, doc="teacher logits, [N, C]")),
        options=(Param("tau", FLOAT, 4.0, "softmax temperature", POSITIVE), _DETACH),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 2)),
    ),
    _loss(
        "skd_direction", "SKDDirectionLoss",
        "SKD's direction term: Mahalanobis length of the batch-similarity differences.",
        """With G = X X^T for the row-l2-normalized (flattened) samples X, D = G_S - G_T
        ([N, N]) and Sigma = cov(D) + tikhonov * I the unbiased covariance of D's columns as
        variables, L = mean_n sqrt(D_n Sigma^-1 D_n^T), solved through a Cholesky factor. The
        Tikhonov term keeps Sigma invertible (it is singular for N > 2 otherwise). Needs
        N >= 2. Same value as torchdistill's SKDDirectionLoss.""",
        _SKD,
        options=(Param("tikhonov", FLOAT, 0.1, "ridge added to the covariance", POSITIVE),
                 _DETACH),
        rules=(same_batch("preds_S", "preds_T"),),
    ),
    _loss(
        "sskd", "SSKDLoss",
        "SSKD: KD on originals, on rotated samples and on self-supervised similarities.",
        f"""{_ROTATION_LAYOUT} With KD_tau(a, b) = tau^2 * KL(softmax(b / tau) ||
        softmax(a / tau)) reduced by reduction, and A the [3N/4, N/4] cosine similarities of
        each rotation's ss embedding to every original's, L = ce_weight * CE(S_orig, y) +
        kl_weight * KD_kl_tau(S_orig, T_orig) + ss_weight * KD_ss_tau(A_S, A_T) over the rows of
        A_T kept by ranking + tf_weight * KD_tf_tau(S_rot, T_rot) over the rotated rows kept by
        ranking. Ranking keeps every row whose target (the label, or the row's own original)
        the teacher ranks first, and the ratio (ss_ratio, tf_ratio) of the others with the
        best rank of the target. A_T never carries gradients. gt_labels holds one label per
        original ([N / 4]). Defaults are the paper's CIFAR-100 setting; torchdistill's
        SSKDLoss is the same computation (its loss_weights are the four weights, [1, 1, 1, 1]
        when not given). {_SSKD_TITLE}""",
        _SSKD,
        inputs=(Param("preds_S", TENSOR, doc="student logits of the 4N' samples, [N, C]"),
                Param("preds_T", TENSOR, doc="teacher logits, [N, C]"),
                Param("ss_S", TENSOR, doc="student self-supervision embeddings, [N, D]"),
                Param("ss_T", TENSOR, doc="teacher self-supervision embeddings, [N, D']"),
                Param("gt_labels", LABELS, doc="label of each original, [N / 4]")),
        options=(Param("kl_tau", FLOAT, 4.0, "temperature of the originals' KD", POSITIVE),
                 Param("ss_tau", FLOAT, 0.5, "temperature of the similarity KD", POSITIVE),
                 Param("tf_tau", FLOAT, 4.0, "temperature of the rotations' KD", POSITIVE),
                 Param("ss_ratio", FLOAT, 0.75, "share of the wrongly ranked similarity rows kept",
                       PROBABILITY),
                 Param("tf_ratio", FLOAT, 1.0, "share of the wrongly ranked rotations kept",
                       PROBABILITY),
                 Param("ce_weight", FLOAT, 1.0, "weight of the cross-entropy", NON_NEGATIVE),
                 Param("kl_weight", FLOAT, 0.9, "weight of the originals' KD", NON_NEGATIVE),
                 Param("ss_weight", FLOAT, 10.0, "weight of the similarity KD", NON_NEGATIVE),
                 Param("tf_weight", FLOAT, 2.7, "weight of the rotations' KD", NON_NEGATIVE),
                 Param("reduction", choice("batchmean", "sum", "mean"), "batchmean",
                       "reduction of the KL terms; the CE uses mean (batchmean, mean) or sum"),
                 _DETACH),
        rules=(same_batch("preds_S", "preds_T"), same_batch("preds_S", "ss_S"),
               same_batch("preds_S", "ss_T"), rank("preds_S", 2), rank("gt_labels", 1)),
    ),
    _loss(
        "sskd_aux", "SSKDAuxLoss",
        "SSKD's first stage: each rotation must pick out its original by cosine similarity.",
        f"""{_ROTATION_LAYOUT} With A the [3N/4, N/4] cosine similarities of each rotation's
        embedding to every original's, L = CE(A, o) with o each rotation's original, reduced
        by mean or sum: the contrastive pretext task that trains the teacher's self-supervision
        head. Same value as torchdistill's AuxSSKDLoss. {_SSKD_TITLE}""",
        _SSKD,
        inputs=(Param("preds", TENSOR, doc="self-supervision embeddings, [N, D], N % 4 == 0"),),
        options=(Param("reduction", choice("mean", "sum"), "mean", "mean or sum over rotations"),),
        rules=(rank("preds", 2),),
    ),
)
