"""Feature distillation losses: signatures, shape rules and documentation (no torch here).

The implementations live in :mod:`kdsl.components.feature_losses`. Every loss compares a student tensor
``preds_S`` with a teacher tensor ``preds_T`` (``fsp`` compares two pairs of layers) and returns a
scalar; the spec multiplies it by the term's weight, so no entry has a ``loss_weight`` option.
Where kdsl's value differs from MMRazor's implementation of the same loss, the entry says by how
much and why.
"""

from __future__ import annotations

from kdsl.catalog.types import (BOOL, COUNT, FLOAT, INT, NON_NEGATIVE, POSITIVE, REQUIRED, TENSOR,
                                Infer, Param, choice, declarer, optional)
from kdsl.catalog.shapes import rank, same_batch, same_channels, same_shape, same_spatial


_S = Param("preds_S", TENSOR, doc="student feature, [N, C, ...]")
_T = Param("preds_T", TENSOR, doc="teacher feature, [N, C, ...]")
_PAIR = (_S, _T)
_SAME_SHAPE = (same_shape("preds_S", "preds_T"),)
# mse and l2 with broadcast=true compare inputs as torch broadcasts them (BYOT), not same shapes
_BROADCAST = Param("broadcast", BOOL, False, "inputs need only broadcast against each other, as torch "
                   "broadcasts them (BYOT), instead of having the same shape")
_SAME_OR_BROADCAST = (same_shape("preds_S", "preds_T", unless="broadcast"),)
_REDUCTION = Param("reduction", choice("mean", "sum", "batchmean"), "mean",
                   "mean over elements, sum, or sum divided by the batch size")


_loss = declarer("loss", __name__, inputs=_PAIR)


COMPONENTS = (
    _loss(
        "l2", "L2Loss",
        "FitNets hint loss: summed squared difference of (optionally l2-normalized) features.",
        """Hint loss between a student feature S and a teacher feature T of the same shape:
        L = sum((S' - T')^2) / N, where S' = mult * S / ||S||_2 per sample (flattened) when
        normalize, else S' = S (likewise T'). With div_element the sum is divided by the number
        of elements instead of N; with dist the loss is sqrt(sum((S' - T')^2)) (the Euclidean
        distance, as torch.dist). With broadcast, S and T need only broadcast against each other
        (each normalized over its own sample first); N and the element count are the broadcast
        difference's. Options and defaults follow MMRazor's L2Loss. Romero et al.,
        "FitNets: Hints for Thin Deep Nets", ICLR 2015.""",
        "Romero et al., FitNets, ICLR 2015",
        options=(
            Param("normalize", BOOL, True, "l2-normalize each flattened sample first"),
            Param("mult", FLOAT, 1.0, "scale applied to the normalized features"),
            Param("div_element", BOOL, False, "divide by the number of elements, not N"),
            Param("dist", BOOL, False, "return the Euclidean distance (square root of the sum)"),
            _BROADCAST,
        ),
        rules=_SAME_OR_BROADCAST,
    ),
    _loss(
        "l1", "L1Loss",
        "Absolute difference between student and teacher features.",
        """L = reduce(|S - T|) over all elements, reduce being the mean (default), the sum, or
        the sum divided by the batch size N (batchmean). Same as MMRazor's L1Loss with the same
        reduction.""",
        options=(_REDUCTION,),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "mse", "MSELoss",
        "Squared difference between student and teacher features.",
        """L = reduce((S - T)^2) over all elements, reduce being the mean (default), the sum, or
        the sum divided by the batch size N (batchmean). With broadcast, S and T need only
        broadcast against each other (torch's rules; BYOT compares features so), and the
        reduction runs over the broadcast difference (its elements, its batch size).""",
        options=(_REDUCTION, _BROADCAST),
        rules=_SAME_OR_BROADCAST,
    ),
    _loss(
        "smooth_l1", "SmoothL1Loss",
        "Smooth L1 (Huber-like) difference between student and teacher features.",
        """With d = |S - T| per element, l = 0.5 d^2 / beta where d < beta and d - 0.5 beta
        elsewhere (beta = 0 gives the plain L1); L = reduce(l), reduce being the mean (default),
        the sum, or the sum divided by the batch size N (batchmean). Girshick, "Fast R-CNN",
        ICCV 2015.""",
        "Girshick, Fast R-CNN, ICCV 2015",
        options=(
            Param("beta", FLOAT, 1.0, "where the quadratic part turns linear", NON_NEGATIVE),
            _REDUCTION,
        ),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "cosine", "CosineLoss",
        "One minus the cosine similarity of per-sample flattened features.",
        """With s_n, t_n the flattened n-th samples, L = mean_n (1 - <s_n, t_n> /
        (max(||s_n||, eps) * max(||t_n||, eps))). Invariant to a positive rescaling of either
        feature; 0 when they point the same way, 2 when opposite.""",
        options=(Param("eps", FLOAT, 1e-8, "lower bound on each norm", POSITIVE),),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "at", "ATLoss",
        "Attention transfer: squared distance of normalized spatial attention maps.",
        """With the attention map a(F) = Q / ||Q||_2, Q = mean_c |F_c|^p flattened per sample,
        L = mean((a(S) - a(T))^2) over the batch and the positions. Student and teacher may have
        different channels but must have the same spatial size; a(F) is invariant to scaling F.
        The squared-mean form is the authors' code (and MMRazor's ATLoss, same value); the paper
        writes the beta/2-weighted p-norm of the difference. Zagoruyko & Komodakis, "Paying More
        Attention to Attention: Improving the Performance of Convolutional Neural Networks via
        Attention Transfer", ICLR 2017. form="paper" computes Eq. (2) instead, mean_n ||a(S)_n
        - a(T)_n||_2 (torchdistill's ATLoss with mode 'paper'); form="code" is its mode 'code'.
        torchdistill's pairs are one term per pair, weighted.""",
        "Zagoruyko & Komodakis, Attention Transfer, ICLR 2017",
        options=(Param("p", FLOAT, 2.0, "exponent of the attention map", POSITIVE),
                 Param("form", choice("code", "paper"), "code",
                       '"code": authors\' code, MMRazor, torchdistill mode code; "paper": Eq. (2), '
                       'l2 distance per sample (torchdistill mode paper)')),
        rules=(same_batch("preds_S", "preds_T"), same_spatial("preds_S", "preds_T"),
               rank("preds_S", 3, 4, 5), rank("preds_T", 3, 4, 5)),
    ),
    _loss(
        "ofd", "OFDLoss",
        "Overhaul of feature distillation: partial L2 that skips where S <= T <= 0.",
        """Partial L2 distance: L = sum((S - T)^2 * [S > T or T > 0]) / N / mul_factor, so a
        position where the student is already below a non-positive teacher costs nothing (the
        ReLU after the distilled pre-activation would discard the difference). The teacher is
        meant to be the pre-ReLU feature clamped below at its margin, the student a connector's
        output; mul_factor is MMRazor's scale (same value as its OFDLoss). Heo et al., "A
        Comprehensive Overhaul of Feature Distillation", ICCV 2019.""",
        "Heo et al., Overhaul of Feature Distillation, ICCV 2019",
        options=(Param("mul_factor", FLOAT, 1000.0, "the sum is divided by N and by this",
                       POSITIVE),),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "ab", "ABLoss",
        "Activation boundaries: squared hinge pushing each student neuron to the teacher's side.",
        """L = sum(rho(T) * relu(m - S)^2 + (1 - rho(T)) * relu(m + S)^2) / N, rho(T) = [T > 0],
        m = margin: the paper's piecewise-differentiable surrogate for matching which neurons
        are active. kdsl returns the paper's value; MMRazor's ABLoss multiplies it by 3/1000 (an
        unexplained constant of the authors' training script), so MMRazor's value = kdsl's *
        0.003, and a weight of 0.003 reproduces it. torchdistill's AltActTransferLoss is this
        loss (reduction "mean" there is batchmean here; "sum" drops the 1 / N). Heo et al.,
        "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons",
        AAAI 2019.""",
        "Heo et al., Activation Boundaries, AAAI 2019",
        options=(Param("margin", FLOAT, 1.0, "margin m of the hinge", NON_NEGATIVE),
                 Param("reduction", choice("batchmean", "sum"), "batchmean",
                       "sum / N, or the sum (torchdistill reduction='sum')")),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "ft", "FTLoss",
        "Factor transfer: distance of l2-normalized student and teacher factors.",
        """With f(F) = F / ||F||_2 for each flattened sample, L = mean(|f(S) - f(T)|^p) over
        batch and elements, p = 1 by default as in the paper (and MMRazor's FTLoss, same value).
        The factors come from the teacher's paraphraser and the student's translator, which are
        connectors. reduction="sum" sums instead of averaging. distance="norm" takes the p-norm
        of each sample's difference, ||f(S) - f(T)||_p, reduced over the batch: the paper's
        Eq. (3) and torchdistill's FTLoss for p = 2 (torchdistill's p = 1 is the default
        elementwise form). Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression
        via Factor Transfer", NeurIPS 2018.""",
        "Kim et al., Factor Transfer, NeurIPS 2018",
        options=(Param("p", choice(1, 2), 1, "1 for the L1 distance, 2 for the squared one"),
                 Param("reduction", choice("mean", "sum"), "mean",
                       "mean or sum (over elements, or over samples with distance=norm)"),
                 Param("distance", choice("elementwise", "norm"), "elementwise",
                       '"norm": per-sample p-norm (paper Eq. 3, torchdistill FTLoss p=2)')),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "cwd", "ChannelWiseDivergence",
        "Channel-wise distillation: KL between per-channel spatial softmax distributions.",
        """Each channel c of each sample becomes a distribution over its positions,
        phi(F)_c = softmax(F_c / tau); L = tau^2 / (N C) * sum_{n,c}
        KL(phi(T)_{n,c} || phi(S)_{n,c}). Same value as MMRazor's ChannelWiseDivergence. Shu et
        al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021.""",
        "Shu et al., Channel-wise Distillation, ICCV 2021",
        options=(Param("tau", FLOAT, 1.0, "temperature", POSITIVE),),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 3, 4, 5)),
    ),
    _loss(
        "pkd", "PKDLoss",
        "Pearson correlation distillation: MSE of per-channel standardized features.",
        """Each channel is standardized over the batch and positions, z(F) = (F - mean) /
        (std + 1e-6) (unbiased std); L = mean((z(S) - z(T))^2) / 2, which equals 1 - r averaged
        over channels for the Pearson correlation r. When the spatial sizes differ, the student
        is resized bilinearly to the teacher's (resize_stu) or the teacher to the student's.
        Same value as MMRazor's PKDLoss. Cao et al., "PKD: General Distillation Framework for
        Object Detectors via Pearson Correlation Coefficient", NeurIPS 2022.""",
        "Cao et al., PKD, NeurIPS 2022",
        options=(Param("resize_stu", BOOL, True,
                       "resize the student to the teacher's spatial size (else the reverse)"),),
        rules=(same_batch("preds_S", "preds_T"), same_channels("preds_S", "preds_T"),
               rank("preds_S", 4), rank("preds_T", 4)),
    ),
    _loss(
        "mgd", "MGDLoss",
        "Masked generative distillation: squared error of the generated student feature.",
        """L = alpha_mgd * sum((G - T)^2) / N, where G is the feature generated from the randomly
        masked student feature by the mgd_generator connector. Same value as MMRazor's MGDLoss.
        Yang et al., "Masked Generative Distillation", ECCV 2022.""",
        "Yang et al., Masked Generative Distillation, ECCV 2022",
        options=(Param("alpha_mgd", FLOAT, 2e-5, "scale of the summed squared error",
                       NON_NEGATIVE),),
        rules=_SAME_SHAPE,
    ),
    _loss(
        "fsp", "FSPLoss",
        "Flow of solution procedure: distance of the FSP matrices of two layers.",
        """The FSP matrix of two maps F1 [N, C1, H, W] and F2 [N, C2, H, W] of one network is
        G_ij = sum_{h,w} F1_{i,h,w} F2_{j,h,w} / (H W); L = sum((G(s_first, s_second) -
        G(t_first, t_second))^2) / N, the paper's squared Frobenius norm averaged over the batch
        (RepDistiller averages over the C1 C2 entries as well). If the student's and teacher's
        spatial sizes differ, the larger pair is average-pooled to the smaller size first, as
        RepDistiller does. Two maps of one network at different resolutions are first
        max-pooled to the smaller one (torchdistill). norm="column" sums the unsquared l2 norms
        of the columns of the difference, sum_{n,j} ||G_S[n, :, j] - G_T[n, :, j]||_2 / N, as
        torchdistill's FSPLoss (one term per pair). Yim et al., "A Gift from Knowledge Distillation: Fast Optimization,
        Network Minimization and Transfer Learning", CVPR 2017.""",
        "Yim et al., FSP, CVPR 2017",
        inputs=(
            Param("s_first", TENSOR, doc="student's first layer, [N, C1, H, W]"),
            Param("s_second", TENSOR, doc="student's second layer, [N, C2, H, W]"),
            Param("t_first", TENSOR, doc="teacher's first layer, [N, C1, H', W']"),
            Param("t_second", TENSOR, doc="teacher's second layer, [N, C2, H', W']"),
        ),
        options=(Param("norm", choice("squared", "column"), "squared",
                       '"squared": squared Frobenius norm (paper); "column": unsquared column '
                       'norms (torchdistill FSPLoss)'),),
        rules=(
            rank("s_first", 4), rank("s_second", 4), rank("t_first", 4), rank("t_second", 4),
            same_batch("s_first", "s_second"), same_batch("s_first", "t_first"),
            same_batch("t_first", "t_second"),
            same_channels("s_first", "t_first"), same_channels("s_second", "t_second"),
        ),
    ),
    _loss(
        "nst", "NSTLoss",
        "Neuron selectivity transfer: polynomial-kernel MMD between channel activation maps.",
        """Each channel's spatial map, l2-normalized, is a sample: s_i from the student (C_S of
        them), t_j from the teacher (C_T). With k(x, y) = (<x, y> + coef0)^degree, L = mean_n
        [mean_{j,j'} k(t_j, t_j') + mean_{i,i'} k(s_i, s_i') - 2 mean_{i,j} k(s_i, t_j)], the
        squared MMD; the paper uses degree 2 and coef0 0. Channels may differ, spatial sizes
        must agree. Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
        Transfer", arXiv 2017.""",
        "Huang & Wang, Neuron Selectivity Transfer, arXiv 2017",
        options=(
            Param("degree", INT, 2, "degree d of the polynomial kernel", COUNT),
            Param("coef0", FLOAT, 0.0, "constant c of the polynomial kernel"),
        ),
        rules=(same_batch("preds_S", "preds_T"), same_spatial("preds_S", "preds_T"),
               rank("preds_S", 3, 4, 5), rank("preds_T", 3, 4, 5)),
    ),
    _loss(
        "vid", "VIDLoss",
        "Variational information distillation: Gaussian likelihood of the teacher's feature.",
        """The loss owns a regressor mu (1x1 convolutions in -> mid -> mid -> out with ReLUs,
        no bias) and a per-channel variance sigma_c^2 = softplus(alpha_c) + eps, alpha
        initialised so that sigma^2 starts at init_pred_var. L = mean over (n, c, positions) of
        0.5 * ((T - mu(S))^2 / sigma_c^2 + log sigma_c^2), the negative log-likelihood of the
        teacher under q(t | s) up to a constant, averaged rather than summed (as the authors'
        code). Its parameters train with the student. Left out, in_channels / out_channels are
        inferred from the channels of preds_S / preds_T; mid_channels defaults to out_channels.
        Spatial sizes must agree. With regressor="none" the mean is preds_S itself.
        Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR
        2019.""",
        "Ahn et al., VID, CVPR 2019",
        options=(
            Param("in_channels", INT, REQUIRED, "channels of preds_S", COUNT),
            Param("out_channels", INT, REQUIRED, "channels of preds_T", COUNT),
            Param("mid_channels", optional(INT), None, "hidden channels (default out_channels)",
                  COUNT),
            # "> eps" relates two options, so the implementation checks it
            Param("init_pred_var", FLOAT, 5.0, "initial variance (> eps)", POSITIVE),
            Param("eps", FLOAT, 1e-5, "lower bound of the variance", POSITIVE),
            Param("regressor", choice("conv", "none"), "conv",
                  '"none": the mean is preds_S itself (same channels), as torchdistill\'s '
                  'Regressor4VID without its convolutions'),
        ),
        rules=(same_batch("preds_S", "preds_T"), same_spatial("preds_S", "preds_T"),
               rank("preds_S", 2, 3, 4), rank("preds_T", 2, 3, 4)),
        infer=(Infer("in_channels", "preds_S", dim=1), Infer("out_channels", "preds_T", dim=1)),
    ),
    _loss(
        "ickd", "ICKDLoss",
        "Inter-channel correlation: distance of the channel Gram matrices.",
        """With F the (C, positions) matrix of a sample and G = row-l2-normalize(F F^T) its
        inter-channel correlation, L = sum((G(S) - G(T))^2) / (N C), as in the authors' code;
        reduction="mean_n2" divides by N^2 C instead, as torchdistill's ChSimLoss.
        Student and teacher need the same channels: project the student with a conv1x1
        connector first (the paper's projection); spatial sizes may differ. Liu et al.,
        "Exploring Inter-Channel Correlation for Diversity-preserved Knowledge Distillation",
        ICCV 2021.""",
        "Liu et al., ICKD, ICCV 2021",
        options=(Param("reduction", choice("mean", "mean_n2"), "mean",
                       '"mean": sum / (N C); "mean_n2": sum / (N^2 C) (torchdistill ChSimLoss)'),),
        rules=(same_batch("preds_S", "preds_T"), same_channels("preds_S", "preds_T"),
               rank("preds_S", 3, 4, 5), rank("preds_T", 3, 4, 5)),
    ),
    _loss(
        "vid_nll", "VIDNLLLoss",
        "VID's Gaussian negative log-likelihood given a predicted mean and variance.",
        """L = mean over all elements of 0.5 * ((mu - T)^2 / var + log var), var broadcast
        against T (a per-channel [1, C, 1, 1] variance works), without the constant term: the
        loss of vid with the regressor and the variance supplied from outside, as
        torchdistill's VIDLoss takes them from its Regressor4VID (one term per pair). Ahn et al.,
        "Variational Information Distillation for Knowledge Transfer", CVPR 2019.""",
        "Ahn et al., VID, CVPR 2019",
        inputs=(Param("mean", TENSOR, doc="predicted mean of the teacher feature, [N, C, ...]"),
                Param("preds_T", TENSOR, doc="teacher feature, same shape as mean"),
                Param("variance", TENSOR, doc="predicted variance, positive, broadcastable")),
        rules=(same_shape("mean", "preds_T"),),
    ),
)
