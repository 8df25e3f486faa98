"""Relational distillation losses: signatures, shape rules and documentation (no torch here).

The implementations live in :mod:`kdsl.components.relation_losses`. These losses compare how the samples
of a batch relate to each other in the student (``preds_S``) and in the teacher (``preds_T``),
so the two may differ in every dimension but the batch; inputs ``[N, ...]`` are flattened per
sample. Gradients reach both inputs, as in MMRazor, so a trainable teacher-side connector is
trained too. Every loss returns a scalar that the spec multiplies by the term's weight.
"""

from __future__ import annotations

from kdsl.catalog.types import (BOOL, COUNT, FLOAT, INT, LABELS, NON_NEGATIVE, POSITIVE, TENSOR,
                                Infer, Param, at_least, choice, declarer, interval, optional)
from kdsl.catalog.shapes import rank, same_batch, same_shape


_S = Param("preds_S", TENSOR, doc="student feature or embedding, [N, ...] (flattened per sample)")
_T = Param("preds_T", TENSOR, doc="teacher feature or embedding, [N, ...] (flattened per sample)")
_BATCH = (same_batch("preds_S", "preds_T"),)
_L2_NORM = Param("with_l2_norm", BOOL, True, "l2-normalize each flattened sample first")
_RKD_REDUCTION = Param("reduction", choice("mean", "sum"), "mean",
                       "mean or sum of the Huber terms (torchdistill RKDLoss's reduction)")
_RKD_TORCHDISTILL = """torchdistill's RKDLoss is dist_factor * rkd_distance + angle_factor *
        rkd_angle with with_l2_norm=false and its reduction (it detaches the teacher)."""

_RKD = "Park et al., Relational Knowledge Distillation, CVPR 2019"
_RKD_TITLE = 'Park, Kim, Lu and Cho, "Relational Knowledge Distillation", CVPR 2019.'


_loss = declarer("loss", __name__, inputs=(_S, _T), rules=_BATCH)


COMPONENTS = (
    _loss(
        "rkd_distance", "DistanceWiseRKD",
        "Relational KD, distance: match the batch's normalized pairwise distances.",
        f"""With d_ij = ||x_i - x_j||_2 the distances between the (flattened, optionally
        l2-normalized) samples and mu the mean over the pairs i != j, psi = d / mu, and
        L = mean over all N x N pairs of huber(psi_S - psi_T), huber being smooth L1 with
        beta 1. Invariant to scaling either input. Needs N >= 2. MMRazor's DistanceWiseRKD
        returns 25 times this value (its default loss_weight, which is the term's weight in a
        kdsl spec); it averages the distances that are positive, which differs from kdsl only
        when two samples of the batch coincide. {_RKD_TORCHDISTILL} {_RKD_TITLE}""",
        _RKD,
        options=(_L2_NORM, _RKD_REDUCTION),
    ),
    _loss(
        "rkd_angle", "AngleWiseRKD",
        "Relational KD, angle: match the angles formed by every triplet of samples.",
        f"""With e_ab = (x_b - x_a) / ||x_b - x_a||_2 (0 when b = a) over the (flattened,
        optionally l2-normalized) samples, psi_abc = <e_ab, e_ac> is the cosine of the angle at
        x_a, and L = mean over all N^3 triplets of huber(psi_S - psi_T), huber being smooth L1
        with beta 1; the degenerate triplets count as in the authors' code and MMRazor's.
        Invariant to scaling either input. The cosines are computed from the N x N Gram matrix,
        in O(N^3) memory instead of O(N^2 D). MMRazor's AngleWiseRKD returns 50 times this
        value (its default loss_weight, the term's weight in a kdsl spec). {_RKD_TORCHDISTILL}
        {_RKD_TITLE}""",
        _RKD,
        options=(_L2_NORM, _RKD_REDUCTION),
    ),
    _loss(
        "pkt", "PKTLoss",
        "Probabilistic knowledge transfer: match cosine-kernel neighbour distributions.",
        """With the cosine kernel K(a, b) = (cos(a, b) + 1) / 2, each sample i gets the
        conditional distribution p_{j|i} = K(x_i, x_j) / sum_{k != i} K(x_i, x_k) over the
        other samples j != i, and L = (1 / N) sum_i sum_{j != i} p^T_{j|i} * log((p^T_{j|i} +
        eps) / (p^S_{j|i} + eps)), eps = 1e-7 (also the floor on the norms): the paper's KL
        divergence, averaged over the anchors so that the weight does not depend on the batch
        size. Invariant to scaling each sample; zero when student and teacher agree. The
        authors' code also counts each sample as its own neighbour and averages over the N^2
        pairs; kdsl follows the paper, and form="torchdistill" follows that code as
        torchdistill's PKTLoss does (x / (||x|| + eps), NaNs zeroed, the diagonal kept, the
        mean over N^2). Passalis and Tefas, "Learning Deep Representations with Probabilistic
        Knowledge Transfer", ECCV 2018.""",
        "Passalis and Tefas, Probabilistic Knowledge Transfer, ECCV 2018",
        options=(Param("form", choice("paper", "torchdistill"), "paper",
                       '"torchdistill": authors\' code and torchdistill PKTLoss - self-pairs '
                       'counted, mean over N^2'),
                 Param("eps", FLOAT, 1e-7, "norm floor and log-ratio guard", POSITIVE)),
    ),
    _loss(
        "sp", "SPLoss",
        "Similarity-preserving KD: match the batch's row-normalized similarity matrices.",
        """With Q the [N, D] flattened samples, G = Q Q^T with each row l2-normalized, and
        L = ||G_S - G_T||_F^2 / N^2. Samples similar for the teacher should be similar for the
        student; invariant to scaling either input. torchdistill's SPKDLoss divides each row by
        its l1 norm (normalize="l1"; its 'batchmean' is reduction="mean"). Tung and Mori,
        "Similarity-Preserving Knowledge Distillation", ICCV 2019.""",
        "Tung and Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019",
        options=(Param("normalize", choice("l2", "l1"), "l2",
                       '"l1": rows divided by their l1 norm (torchdistill SPKDLoss)'),
                 Param("reduction", choice("mean", "sum"), "mean",
                       "mean over the N^2 entries (the paper's / N^2) or sum")),
    ),
    _loss(
        "cc", "CCLoss",
        "Correlation congruence: match the batch's kernel correlation matrices.",
        """The samples are flattened and l2-normalized, and the Gaussian RBF kernel
        exp(-gamma ||a - b||^2) = exp(-2 gamma) exp(2 gamma <a, b>) is replaced by its Taylor
        expansion of order p: k(a, b) = sum_{q=0}^{p} exp(-2 gamma) (2 gamma)^q / q! <a, b>^q.
        With Psi the N x N matrix of k over the batch, L = ||Psi_S - Psi_T||_F^2 / N^2.
        kernel="bilinear" takes Psi = Z Z^T; normalize=false skips the l2 normalization;
        distance="unsquared" takes ||Psi_S - Psi_T||_F; reduction="sum" drops the / N^2.
        torchdistill's CCKDLoss is normalize=false, distance="unsquared" (its 'batchmean' is
        reduction="mean", max_p is p). Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019.""",
        "Peng et al., Correlation Congruence for Knowledge Distillation, ICCV 2019",
        options=(Param("gamma", FLOAT, 0.4, "RBF kernel parameter", POSITIVE),
                 Param("p", INT, 2, "order of the Taylor expansion", NON_NEGATIVE),
                 Param("kernel", choice("gaussian", "bilinear"), "gaussian",
                       "Taylor-expanded Gaussian RBF, or the plain dot product"),
                 Param("normalize", BOOL, True,
                       "l2-normalize each sample first (false: torchdistill CCKDLoss)"),
                 Param("distance", choice("squared", "unsquared"), "squared",
                       '"unsquared": Frobenius norm, not its square (torchdistill CCKDLoss)'),
                 Param("reduction", choice("mean", "sum"), "mean",
                       "divide by the N^2 entries, or not")),
    ),
    _loss(
        "crd", "CRDLoss",
        "Contrastive representation distillation with momentum memory banks (NCE).",
        """The inputs are the student's and the teacher's embeddings (unit vectors, from
        crd_embed) and each sample's index in the dataset. The loss holds two memory banks
        of num_data x feat_dim unit vectors (buffers, saved with checkpoints): M_S of student
        and M_T of teacher embeddings. With the dataset indices c_i = (i, n_1 .. n_k) of a
        sample's positive and k negatives, the student's scores are P_ij = exp(<s_i, M_T[c_ij]>
        / nce_t) / Z_S (and the teacher's exp(<t_i, M_S[c_ij]> / nce_t) / Z_T), Z being fixed on
        the first batch as num_data times the mean score. With m = k / num_data, the NCE loss
        of each side is -(1/N) sum_i [log(P_i0 / (P_i0 + m + eps)) + sum_j log(m / (P_ij + m +
        eps))], eps = 1e-7, and L is the sum of both sides. The negatives are nce_k indices
        drawn uniformly from the other samples with torch's RNG, unless contrast_idx
        ([N, 1 + k], the positive first, as RepDistiller's sampled datasets give) is passed.
        In training mode each side's memory then moves to the batch: M[i] <- normalize(nce_m *
        M[i] + (1 - nce_m) * embedding_i). feat_dim is inferred from preds_S.
        negatives="exact" draws class-aware negatives, as RepDistiller's sampled dataset with
        mode "exact": the loss keeps each dataset sample's class (a buffer, filled from target,
        e.g. batch.target, as batches arrive and saved with checkpoints), and sample i's nce_k
        negatives are drawn uniformly, with replacement, from the indices already seen with a
        class other than y_i - after one epoch, every sample of another class. Until such an
        index has been seen (the first batches), they are drawn from all the other indices.
        Tian, Krishnan and Isola, "Contrastive Representation Distillation", ICLR 2020.""",
        "Tian, Krishnan and Isola, Contrastive Representation Distillation, ICLR 2020",
        inputs=(Param("preds_S", TENSOR, doc="student embedding, [N, feat_dim]"),
                Param("preds_T", TENSOR, doc="teacher embedding, [N, feat_dim]"),
                Param("indices", TENSOR, doc="index of each sample in the dataset, [N] "
                      "(batch.index)"),
                Param("contrast_idx", optional(TENSOR), None,
                      "dataset indices to contrast, [N, 1 + k], the positive first"),
                Param("target", optional(LABELS), None,
                      "class of each sample, [N] (batch.target); needed by negatives=\"exact\"")),
        options=(Param("num_data", INT, doc="number of samples in the training set",
                       constraint=at_least(2)),  # a positive and at least one negative
                 Param("feat_dim", INT, doc="embedding size (inferred from preds_S)",
                       constraint=COUNT),
                 Param("nce_k", INT, 16384, "negatives drawn per sample", COUNT),
                 Param("nce_t", FLOAT, 0.07, "temperature of the scores", POSITIVE),
                 Param("nce_m", FLOAT, 0.5, "momentum of the memory banks",
                       interval(0, 1, hi_open=True)),
                 Param("negatives", choice("uniform", "exact"), "uniform",
                       '"exact": negatives only from other classes, by target (RepDistiller '
                       'mode "exact"; the CRD paper\'s class-aware sampling)')),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 2),
               same_batch("indices", "preds_S"), rank("indices", 1),
               same_batch("contrast_idx", "preds_S"), rank("contrast_idx", 2),
               same_batch("target", "preds_S"), rank("target", 1)),
        infer=(Infer("feat_dim", "preds_S", dim=1),),
    ),
)
