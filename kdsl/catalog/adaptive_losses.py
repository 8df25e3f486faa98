"""Feature losses that pool, normalize or weigh their comparison - knowledge review's
hierarchical context loss, PAD's variance-weighted L2, KTAAD's translation and affinity losses -
and a norm penalty: signatures, shape rules and documentation (no torch here).

The implementations live in :mod:`kdsl.components.adaptive_losses`.
"""

from __future__ import annotations

from kdsl.catalog.types import (COUNT, FLOAT, INT, POSITIVE, TENSOR, Param, at_least, choice,
                                declarer, each, list_of)
from kdsl.catalog.shapes import rank, same_shape


_S = Param("preds_S", TENSOR, doc="student feature, [N, ...]")
_T = Param("preds_T", TENSOR, doc="teacher feature, same shape")
_BATCH_REDUCTION = Param("reduction", choice("mean", "sum"), "mean",
                         "mean or sum of the per-sample values over the batch")
_KTAAD = "He et al., Knowledge Adaptation for Efficient Semantic Segmentation, CVPR 2019"
_KTAAD_TITLE = ('He, Shen, Tian, Gong, Sun and Yan, "Knowledge Adaptation for Efficient Semantic '
                'Segmentation", CVPR 2019.')


_loss = declarer("loss", __name__, inputs=(_S, _T))


COMPONENTS = (
    _loss(
        "hcl", "HCLLoss",
        "Knowledge review's hierarchical context loss: MSE over a pyramid of pooled maps.",
        """L = (mse(S, T) + sum_k w_k mse(P_k(S), P_k(T))) / (1 + sum_k w_k), P_k the adaptive
        average pooling to k x k for each k of output_sizes smaller than the map's height, in
        order, w_k = 1/2, 1/4, ... halving at each level used; mse reduced by mean (or sum).
        The student's map is the output of the abf connector. Same value as torchdistill's
        HierarchicalContextLoss (which receives ABF's (output, residual) pair and uses the
        output). Chen, Liu, Zhao and Jia, "Distilling Knowledge via Knowledge Review", CVPR
        2021.""",
        "Chen et al., Distilling Knowledge via Knowledge Review, CVPR 2021",
        inputs=(Param("preds_S", TENSOR, doc="student map (abf output), [N, C, H, W]"),
                Param("preds_T", TENSOR, doc="teacher map, same shape")),
        options=(Param("output_sizes", list_of(INT), [4, 2, 1], "pooled sizes k, in order",
                       each(at_least(1))),
                 Param("reduction", choice("mean", "sum"), "mean", "reduction of each mse")),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 4)),
    ),
    _loss(
        "kta", "KTALoss",
        "Knowledge translation and adaptation: distance of l_q-normalized features.",
        f"""With f(x) = x / ||x||_q for each flattened sample, L = mean (or sum) over elements
        of |f(S) - f(T)| for p = 1, and otherwise the mean (or sum) over samples of
        ||f(S) - f(T)||_p. S is the student's adapted feature, T the teacher's translated
        factor (a paraphraser's encoder). Same value as torchdistill's KTALoss. {_KTAAD_TITLE}""",
        _KTAAD,
        options=(Param("p", INT, 1, "norm of the difference", COUNT),
                 Param("q", FLOAT, 2.0, "norm that normalizes each sample", POSITIVE),
                 _BATCH_REDUCTION),
        rules=(same_shape("preds_S", "preds_T"),),
    ),
    _loss(
        "affinity", "AffinityLoss",
        "KTAAD's affinity distillation: distance of each channel's spatial affinity matrices.",
        f"""With s_c the l2-normalized spatial vector of channel c of a sample (HW positions)
        and A(s_c) = s_c s_c^T / (H W), each sample's loss is sum_c ||A(S_c) - A(T_c)||_F,
        reduced over the batch by mean (or sum); computed without building the HW x HW
        matrices. Same value as torchdistill's AffinityLoss. {_KTAAD_TITLE}""",
        _KTAAD,
        options=(_BATCH_REDUCTION,),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 3, 4, 5)),
    ),
    _loss(
        "pad_l2", "PADL2Loss",
        "Prime-aware adaptive distillation: L2 weighted by a predicted per-dimension variance.",
        """With s, t the flattened embeddings and v the predicted log-variance (one per
        dimension, from a variance branch of the student), each sample's loss is mean_d((t_d -
        s_d)^2 / (eps + exp(v_d)) + v_d), reduced over the batch by mean (or sum): samples the
        student is unsure of weigh less, and the log-variance term stops it from being unsure
        of everything. The Gaussian likelihood's factor 1/2 is left out, as in the authors'
        code and torchdistill's PADL2Loss (same value). Zhang et al., "Prime-Aware Adaptive
        Distillation", ECCV 2020.""",
        "Zhang et al., Prime-Aware Adaptive Distillation, ECCV 2020",
        inputs=(Param("preds_S", TENSOR, doc="student embedding, [N, D] (flattened per sample)"),
                Param("preds_T", TENSOR, doc="teacher embedding, [N, D]"),
                Param("log_variance", TENSOR, doc="predicted log-variance, [N, D]")),
        options=(Param("eps", FLOAT, 1e-6, "added to the variance", POSITIVE), _BATCH_REDUCTION),
        # elementwise over [N, D]: the variance branch's width follows the embedding's
        rules=(same_shape("preds_S", "preds_T"), same_shape("preds_S", "log_variance")),
    ),
    _loss(
        "regularization", "RegularizationLoss",
        "The p-norm of a whole tensor: a penalty on an adapter's output.",
        """L = ||x||_p over all elements of x (torch.norm with p). Factor transfer and KTAAD
        keep a paraphraser's or adapter's output small with it. Same value as torchdistill's
        RegularizationLoss.""",
        inputs=(Param("x", TENSOR, doc="any tensor"),),
        options=(Param("p", FLOAT, 1.0, "order of the norm", POSITIVE),),
    ),
)
