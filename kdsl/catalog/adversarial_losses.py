"""Adversarial terms of data-free distillation: ZSKT's generator objective (signatures and
documentation; no torch here). The implementations live in
:mod:`kdsl.components.adversarial_losses`.
"""

from __future__ import annotations

from kdsl.catalog.shapes import rank, same_shape
from kdsl.catalog.types import FLOAT, POSITIVE, TENSOR, Param, declarer

_ZSKT = ("Micaelli and Storkey, Zero-shot Knowledge Transfer via Adversarial Belief Matching, "
         "NeurIPS 2019")

_loss = declarer("loss", __name__)

COMPONENTS = (
    _loss(
        "zskt_adversarial", "ZSKTAdversarial",
        "ZSKT's generator objective: minus the KL divergence of teacher and student.",
        """L_G = -KL(softmax(T / tau) || softmax(S / tau)), summed over the classes and
        averaged over the batch (tau = 1 in the paper), on logits of a generated batch.
        Minimising it makes the generator produce the inputs on which student and teacher
        disagree most; the student then minimises kl_div on them (with zskt_attention). No
        input is detached: the gradient reaches the generator through both networks, and only
        the generator's parameters are stepped in its phase. Micaelli and Storkey, "Zero-shot
        Knowledge Transfer via Adversarial Belief Matching", NeurIPS 2019, Eq. (1).""",
        _ZSKT,
        inputs=(Param("preds_S", TENSOR, doc="student logits on generated inputs, [N, C]"),
                Param("preds_T", TENSOR, doc="teacher logits on the same inputs, [N, C]")),
        options=(Param("tau", FLOAT, 1.0, "softmax temperature", POSITIVE),),
        rules=(same_shape("preds_S", "preds_T"), rank("preds_S", 2)),
    ),
)
