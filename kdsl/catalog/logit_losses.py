"""Logit distillation losses: signatures, shape rules and documentation (no torch here).

The implementations live in :mod:`kdsl.components.logit_losses`. The class dimension is dimension 1; the
student's logits are ``preds_S``, the teacher's ``preds_T``, hard labels ``gt_labels``. Every
loss returns a scalar (or per-element values with ``reduction="none"`` where offered), which the
spec multiplies by the term's weight, so no entry has a ``loss_weight`` option. Losses that read
the teacher's logits stop gradients at them unless ``detach_teacher=false``. Where kdsl's value
differs from MMRazor's implementation of the same loss, the entry says how and why.
"""

from __future__ import annotations

from kdsl.catalog.types import (BOOL, FLOAT, INT, LABELS, NON_NEGATIVE, POSITIVE, PROBABILITY,
                                TENSOR, Param, choice, declarer, optional)
from kdsl.catalog.shapes import labels_for, rank, same_shape


_S = Param("preds_S", TENSOR, doc="student logits, [N, C] (or [N, C, H, W] where allowed)")
_T = Param("preds_T", TENSOR, doc="teacher logits, same shape as preds_S")
_LABELS = Param("gt_labels", LABELS, doc="class index per sample, [N]")
_TAU = Param("tau", FLOAT, 1.0, "softmax temperature", POSITIVE)
_DETACH = Param("detach_teacher", BOOL, True,
                "stop gradients at the teacher's logits (MMRazor's teacher_detach)")
_PAIR_RULES = (same_shape("preds_S", "preds_T"),)
_DENSE_RULES = _PAIR_RULES + (rank("preds_S", 2, 4),)
_CLASSIFICATION_RULES = _PAIR_RULES + (rank("preds_S", 2),)
_LABELLED_RULES = _CLASSIFICATION_RULES + (labels_for("gt_labels", "preds_S"),)

_HINTON = "Hinton, Vinyals and Dean, Distilling the Knowledge in a Neural Network, 2015"


_loss = declarer("loss", __name__, inputs=(_S, _T))


COMPONENTS = (
    _loss(
        "kl_div", "KLDivergence",
        "Hinton's KD: tempered KL divergence from the teacher's to the student's softmax.",
        """L = tau^2 * KL(softmax(T / tau) || softmax(S / tau)), the softmax taken over
        dimension 1, so [N, C, H, W] dense predictions are distilled per position. The
        pointwise terms are reduced by batchmean (sum divided by N, the default), sum, mean
        (over all elements) or none (the [N, C, ...] terms); tau^2 keeps the size of the
        gradients independent of the temperature. Same value as MMRazor's KLDivergence with the
        same tau and reduction (its teacher_detach is detach_teacher). Hinton, Vinyals and
        Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning Workshop
        2015.""",
        _HINTON,
        options=(_TAU,
                 Param("reduction", choice("batchmean", "sum", "mean", "none"), "batchmean",
                       "batchmean (sum / N), sum, mean over elements, or none"),
                 _DETACH),
        rules=_DENSE_RULES,
    ),
    _loss(
        "soft_cross_entropy", "SoftCrossEntropy",
        "Cross-entropy of the student against the teacher's softened distribution.",
        """L = tau^2 * reduce(-sum_c softmax(T / tau)_c * log_softmax(S / tau)_c), the sum over
        dimension 1 and reduce the mean (default), sum or none over the samples (and positions
        of dense predictions), as torch's cross_entropy with probability targets. It differs
        from kl_div by the teacher's entropy, a constant for the student, so both give the
        student the same gradients. Hinton, Vinyals and Dean, "Distilling the Knowledge in a
        Neural Network", NIPS Deep Learning Workshop 2015.""",
        _HINTON,
        options=(_TAU,
                 Param("reduction", choice("mean", "sum", "none"), "mean",
                       "mean or sum over samples and positions, or none"),
                 _DETACH),
        rules=_DENSE_RULES,
    ),
    _loss(
        "cross_entropy", "CrossEntropy",
        "Cross-entropy with hard labels: the task loss of the student.",
        """L = reduce(-(1 - eps) * log p_y - eps * mean_c log p_c) with p = softmax(S) over
        dimension 1, y the label and eps the label smoothing; positions labelled ignore_index
        count neither in the sum nor in the mean. This is torch's cross_entropy; gt_labels has
        shape [N] (or [N, H, W] for dense predictions). DeiT's hard-label distillation (Touvron
        et al., "Training data-efficient image transformers & distillation through attention",
        ICML 2021) is this loss with the teacher's argmax as the labels:
        cross_entropy(s_dist_logits, argmax(t_logits)), weighted 1/2 next to the task loss.
        gt_labels may also be class probabilities of the logits' shape (the soft labels of a
        Mixup or CutMix batch transform): L = reduce(-sum_c y_c log p_c), as torch computes it
        (ignore_index does not apply).""",
        inputs=(_S, Param("gt_labels", LABELS,
                          doc="class index per sample (or position), [N] or [N, H, W]; or class "
                              "probabilities, the logits' shape")),
        options=(Param("label_smoothing", FLOAT, 0.0, "mass spread uniformly over the classes",
                       PROBABILITY),
                 Param("ignore_index", INT, -100, "label value that contributes nothing"),
                 Param("reduction", choice("mean", "sum", "none"), "mean",
                       "mean over counted samples, sum, or none")),
        rules=(rank("preds_S", 2, 4), labels_for("gt_labels", "preds_S", probabilities=True)),
    ),
    _loss(
        "kd", "KDLoss",
        "Hinton's KD with the hard-label term: alpha * CE(S, y) + beta * tau^2 * KL.",
        """L = alpha * CE(S, y) + beta * tau^2 * KL(softmax(T / tau) || softmax(S / tau)), beta
        = 1 - alpha unless given, CE with label_smoothing; without gt_labels only the soft term
        (beta * tau^2 * KL) is returned. The KL is reduced by batchmean (sum / N), sum or mean
        over elements, the CE by mean (for batchmean and mean) or sum. form="torchdistill"
        reproduces torchdistill's KDLoss: where alpha is 0 or no labels are given it returns the
        bare KL, without beta and without tau^2 (the kd_* cases of torchdistill's vectors, and
        SKD's instance loss). kl_div with a second cross_entropy term gives the same value in a
        spec; this entry takes a torchdistill KDLoss config one to one. Hinton, Vinyals and
        Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning Workshop
        2015.""",
        _HINTON,
        inputs=(_S, _T, Param("gt_labels", optional(LABELS), None,
                              "class index per sample, [N]; without it only the soft term")),
        options=(Param("tau", FLOAT, 4.0, "softmax temperature", POSITIVE),
                 Param("alpha", FLOAT, 0.5, "weight of the hard-label cross-entropy", NON_NEGATIVE),
                 Param("beta", optional(FLOAT), None, "weight of the soft term (1 - alpha when none)",
                       NON_NEGATIVE),
                 Param("label_smoothing", FLOAT, 0.0, "label smoothing of the cross-entropy",
                       PROBABILITY),
                 Param("reduction", choice("batchmean", "sum", "mean"), "batchmean",
                       "reduction of the KL (batchmean, sum, mean); the CE uses mean or sum"),
                 Param("form", choice("paper", "torchdistill"), "paper",
                       '"torchdistill": torchdistill KDLoss - the soft-only path (alpha 0 or no '
                       'labels) drops beta and tau^2'),
                 _DETACH),
        rules=_LABELLED_RULES,
    ),
    _loss(
        "dkd", "DKDLoss",
        "Decoupled KD: target-class and non-target-class KD weighted separately.",
        """With b = [p_y, 1 - p_y] the binary target / rest distribution of softmax(z / tau)
        and q the softmax of the non-target logits over the C - 1 other classes,
        TCKD = KL(b_T || b_S), NCKD = KL(q_T || q_S), both summed over classes and averaged
        over the batch, and L = tau^2 * (alpha * TCKD + beta * NCKD). Defaults are the paper's
        CIFAR-100 setting; the paper also ramps the loss in over the first 20 epochs, which is
        a weight schedule in kdsl. Values and student gradients equal MMRazor's DKDLoss; its
        teacher gradients are NaN (it masks the target class with a -1000 logit, the teacher's
        masked probability underflows to 0 and KL's gradient with respect to the target is
        log 0), where kdsl computes both distributions in log space and gives finite teacher
        gradients with detach_teacher=false; form="mmrazor" repeats MMRazor's masked computation,
        NaN teacher gradients included, for bit-level parity. MMRazor passes size_average=False
        to torch's kl_div beside its reduction, and torch's legacy rule then sums: with
        reduction "batchmean" (its default) the sum is still divided by the batch size, with
        "sum", "mean" or "none" it is not; reduction="sum" here gives that batch sum. Zhao et al., "Decoupled Knowledge Distillation",
        CVPR 2022.""",
        "Zhao et al., Decoupled Knowledge Distillation, CVPR 2022",
        inputs=(_S, _T, _LABELS),
        options=(Param("alpha", FLOAT, 1.0, "weight of the target-class term TCKD", NON_NEGATIVE),
                 Param("beta", FLOAT, 8.0, "weight of the non-target-class term NCKD", NON_NEGATIVE),
                 Param("tau", FLOAT, 4.0, "softmax temperature", POSITIVE),
                 Param("form", choice("log_space", "mmrazor"), "log_space",
                       '"mmrazor": MMRazor DKDLoss - target masked by a -1000 logit, NaN teacher '
                       'gradients'),
                 Param("reduction", choice("batchmean", "sum"), "batchmean",
                       '"sum": both KLs summed over the batch, not averaged: MMRazor\'s DKDLoss with '
                       "reduction 'sum', 'mean' or 'none' (its size_average=False overrides them)"),
                 _DETACH),
        rules=_LABELLED_RULES,
    ),
    _loss(
        "dist", "DISTLoss",
        "DIST: match Pearson correlations of predictions within samples and within classes.",
        """With Y = softmax(Z / tau) over classes ([N, C]) and rho the Pearson correlation,
        inter = 1 - mean_i rho(Y_S[i, :], Y_T[i, :]) (each sample's class ranking) and
        intra = 1 - mean_c rho(Y_S[:, c], Y_T[:, c]) (each class's sample ranking);
        L = tau^2 * (inter_weight * inter + intra_weight * intra), rho(a, b) computed as in
        the authors' code, <a - mean(a), b - mean(b)> / (||a - mean(a)|| ||b - mean(b)|| +
        1e-8). Because rho is invariant to positive affine maps (up to that 1e-8), the student
        need not reproduce the teacher's probabilities, only their relations. Same value as
        MMRazor's DISTLoss, whose inter_loss_weight and intra_loss_weight are inter_weight and
        intra_weight, and of torchdistill's DISTLoss (beta, gamma) with form="torchdistill",
        whose correlation is torch's cosine_similarity of the centred rows (each norm clamped
        at 1e-8 instead of 1e-8 added to their product). Huang et al., "Knowledge
        Distillation from A Stronger Teacher", NeurIPS 2022.""",
        "Huang et al., Knowledge Distillation from A Stronger Teacher, NeurIPS 2022",
        options=(_TAU,
                 Param("inter_weight", FLOAT, 1.0, "weight of the inter-class (per-sample) term",
                       NON_NEGATIVE),
                 Param("intra_weight", FLOAT, 1.0, "weight of the intra-class (per-class) term",
                       NON_NEGATIVE),
                 Param("form", choice("paper", "torchdistill"), "paper",
                       '"torchdistill": torchdistill DISTLoss - norms clamped at 1e-8 in the '
                       'correlation (paper and MMRazor: 1e-8 added)'),
                 _DETACH),
        rules=_CLASSIFICATION_RULES,
    ),
    _loss(
        "wsld", "WSLDLoss",
        "Weighted soft labels: KD per sample weighted by how much worse the student does.",
        """With the hard-label cross-entropies ce_S and ce_T of the untempered logits (no
        gradient), each sample's weight is w = 1 - exp(-ce_S / (ce_T + 1e-7)), and
        L = tau^2 * mean_i w_i * CE(softmax(T_i / tau), softmax(S_i / tau)), the soft
        cross-entropy. Samples the teacher already beats the student on weigh more. The class
        count comes from the logits. Same value and gradients as MMRazor's WSLD (whose
        num_classes option is not needed, and whose teacher is not detached: pass
        detach_teacher=false for that). Zhou et al., "Rethinking Soft Labels for Knowledge
        Distillation: A Bias-Variance Tradeoff Perspective", ICLR 2021.""",
        "Zhou et al., Rethinking Soft Labels for Knowledge Distillation, ICLR 2021",
        inputs=(_S, _T, _LABELS),
        options=(Param("tau", FLOAT, 2.0, "softmax temperature of the soft term", POSITIVE),
                 _DETACH),
        rules=_LABELLED_RULES,
    ),
    _loss(
        "logit_std_kd", "LogitStdKDLoss",
        "KD on z-scored logits: the student matches the teacher's logit relations, not range.",
        """Each logit vector (dimension 1) is standardized, Z(z) = (z - mean(z)) / std(z) with
        the population standard deviation of the paper's Algorithm 1 (floored at eps), and
        L = tau^2 * KL(softmax(Z(T) / tau) || softmax(Z(S) / tau)) reduced as kl_div, tau being
        the base temperature. The loss is invariant to shifting or scaling each logit row by a
        positive factor. The authors' code divides by the unbiased std plus 1e-7: its loss at
        temperature t equals (C - 1) / C times kdsl's at tau = t * sqrt(C / (C - 1)) (up to
        that 1e-7). form="torchdistill" standardizes as that code and torchdistill's
        LogitStdKDLoss do, (z - mean(z)) / (eps + unbiased std(z)); torchdistill's alpha * CE +
        beta * tau^2 * KL is this loss weighted beta next to cross_entropy weighted alpha, and
        its soft-only path (no tau^2) this loss weighted 1 / tau^2. Sun et al., "Logit
        Standardization in Knowledge
        Distillation", CVPR 2024.""",
        "Sun et al., Logit Standardization in Knowledge Distillation, CVPR 2024",
        options=(Param("tau", FLOAT, 2.0, "base temperature", POSITIVE),
                 Param("reduction", choice("batchmean", "sum", "mean", "none"), "batchmean",
                       "batchmean (sum / N), sum, mean over elements, or none"),
                 Param("form", choice("paper", "torchdistill"), "paper",
                       '"torchdistill": torchdistill LogitStdKDLoss and the authors\' code - '
                       'unbiased std plus eps'),
                 Param("eps", FLOAT, 1e-7, "floor on the std (paper) or added to it "
                       "(torchdistill)", POSITIVE),
                 _DETACH),
        rules=_DENSE_RULES,
    ),
)
