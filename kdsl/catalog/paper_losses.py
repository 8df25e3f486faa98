"""Feature losses of one paper each: FBKD's masked feature, pooled and non-local relation loss,
and ZSKT's attention term (signatures, shape rules and documentation; no torch here).

The implementations live in :mod:`kdsl.components.paper_losses`. FBKD's loss takes the tuples
that the fbkd_student and fbkd_teacher connectors return (:mod:`kdsl.catalog.paper_connectors`),
as MMRazor's FBKDLoss does.
"""

from __future__ import annotations

from kdsl.catalog.shapes import rank, same_batch, same_spatial
from kdsl.catalog.types import FLOAT, NON_NEGATIVE, TENSOR, Param, choice, declarer

_FBKD = ("Zhang and Ma, Improve Object Detection with Feature-based Knowledge Distillation: "
         "Towards Accurate and Efficient Detectors, ICLR 2021")
_ZSKT = ("Micaelli and Storkey, Zero-shot Knowledge Transfer via Adversarial Belief Matching, "
         "NeurIPS 2019")


_loss = declarer("loss", __name__)


COMPONENTS = (
    _loss(
        "fbkd", "FBKDLoss",
        "FBKD: attention-masked feature L2, pooled channel/spatial terms and non-local relations.",
        """preds_S is the tuple of fbkd_student (M_s^S, M_c^S, c_S, s_S, r_S, f_S) and preds_T
        that of fbkd_teacher (M_s^T, M_c^T, s_T, r_T, f_T). With M_s = (M_s^S + M_s^T) / 2
        (no gradient) the spatial attention mask shared by both, L = mask_l2_weight *
        sqrt(sum (f_T - f_S)^2 M_s) + channel_weight * ||mean_hw f_T - c_S||_2 + spatial_weight
        * ||s_T - s_S||_2 + nonlocal_weight * ||r_T - r_S||_2, every norm over the whole batch
        (torch.dist). This is MMRazor's FBKDLoss (the authors' code): the paper's Eq. 3 also
        weighs the feature term with the channel mask, which the code computes but leaves out,
        and so does kdsl. The defaults are the authors' weights. Zhang and Ma, "Improve Object
        Detection with Feature-based Knowledge Distillation: Towards Accurate and Efficient
        Detectors", ICLR 2021.""",
        _FBKD,
        inputs=(Param("preds_S", TENSOR, doc="the fbkd_student tuple (6 tensors)"),
                Param("preds_T", TENSOR, doc="the fbkd_teacher tuple (5 tensors)")),
        options=(Param("mask_l2_weight", FLOAT, 7e-5, "weight of the masked feature term",
                       NON_NEGATIVE),
                 Param("channel_weight", FLOAT, 4e-3, "weight of the channel-pool term",
                       NON_NEGATIVE),
                 Param("spatial_weight", FLOAT, 4e-3, "weight of the spatial-pool term",
                       NON_NEGATIVE),
                 Param("nonlocal_weight", FLOAT, 7e-5, "weight of the non-local relation term "
                       "(MMRazor's nonloacl_weight)", NON_NEGATIVE)),
    ),
    _loss(
        "zskt_attention", "ZSKTAttention",
        "ZSKT's attention term: distance of l2-normalized channel-mean squared activations.",
        """With a(A) = f(A) / ||f(A)||_2, f(A) = (1 / C) sum_c A_c^2 the spatial attention map
        of a block's output flattened per sample, the student's loss adds beta * sum_l ||a(A_T,l)
        - a(A_S,l)||_2 over the block pairs l (beta = 250 in the paper): one zskt_attention term
        per pair, weighted by beta, beside kl_div(s, t) on the generated batch. form="paper" is
        that l2 distance, averaged over the batch; form="code" is the authors' code, the mean of
        the squared differences (the same as at(p=2)). The adversarial term of the generator is
        zskt_adversarial. Micaelli and Storkey, "Zero-shot Knowledge Transfer via Adversarial
        Belief Matching", NeurIPS 2019, Eq. (2).""",
        _ZSKT,
        inputs=(Param("preds_S", TENSOR, doc="student block output, [N, C, H, W]"),
                Param("preds_T", TENSOR, doc="teacher block output, [N, C', H, W]")),
        options=(Param("form", choice("paper", "code"), "paper",
                       '"paper": l2 distance per sample (Eq. 2); "code": mean squared difference '
                       "(the authors' code)"),),
        rules=(same_batch("preds_S", "preds_T"), same_spatial("preds_S", "preds_T"),
               rank("preds_S", 3, 4, 5), rank("preds_T", 3, 4, 5)),
    ),
)
