"""Data-free distillation losses: what a generator is trained to make a frozen teacher do
(no torch here).

DAFL (Chen et al., ICCV 2019) trains a generator so that the teacher, fed the generated images,
answers as it does on real data: confident (one-hot) predictions, strong feature activations, and
every class about equally often. The three terms are separate losses so that a spec weighs them
itself (the paper's code uses ``oh 1, a 0.1, ie 5``):

    loss oh  = dafl_onehot(t_logits)
    loss act = dafl_activation(t_feat) * 0.1
    loss ie  = dafl_entropy(t_logits) * 5

None of them stops gradients at the teacher: they exist to send gradients through the (frozen)
teacher into the generator. The implementations are in :mod:`kdsl.components.datafree_losses`.
"""

from __future__ import annotations

from kdsl.catalog.shapes import rank
from kdsl.catalog.types import FLOAT, TENSOR, Param, choice, declarer, greater_than

_DAFL = "Chen et al., Data-Free Learning of Student Networks, ICCV 2019"

_LOGITS = Param("preds_T", TENSOR, doc="teacher logits on generated inputs, [N, C]")
_FEAT = Param("feat_T", TENSOR, doc="a teacher feature on generated inputs, [N, ...] "
                                    "(DAFL uses the input of the classifier)")


_loss = declarer("loss", __name__, paper=_DAFL)


COMPONENTS = (
    _loss(
        "dafl_onehot", "DAFLOneHot",
        "DAFL's one-hot loss: cross-entropy of the teacher's logits against their own argmax.",
        """L_oh = (1/N) sum_i CE(y_i, argmax_c y_i) with y_i the teacher's logits for the i-th
        generated sample, i.e. mean_i -log softmax(y_i)_{t_i}, t_i = argmax_c y_i,c (the
        pseudo-label carries no gradient). Minimising it makes the generator produce inputs the
        teacher classifies with confidence, as it does real images. Same value as DAFL's code and
        MMRazor's OnehotLikeLoss. Chen et al., "Data-Free Learning of Student Networks", ICCV
        2019.""",
        inputs=(_LOGITS,),
        rules=(rank("preds_T", 2),),
    ),
    _loss(
        "dafl_activation", "DAFLActivation",
        "DAFL's activation loss: minus the mean absolute value of a teacher feature.",
        """L_a = -mean(|f|) with f the teacher's feature flattened per sample: reduction "mean"
        (the default) averages |f| over all N x D elements, as DAFL's code and MMRazor's
        ActivationLoss (norm_type "abs") do; reduction "batchmean" gives the paper's formula
        -(1/N) sum_i ||f_i||_1, which is D times larger. Minimising it rewards inputs that
        activate the teacher's features strongly. Chen et al., "Data-Free Learning of Student
        Networks", ICCV 2019.""",
        inputs=(_FEAT,),
        options=(Param("reduction", choice("mean", "batchmean"), "mean",
                       "mean over all elements (DAFL's code) or sum / N (the paper's formula)"),),
        rules=(rank("feat_T", 2, 3, 4, 5),),
    ),
    _loss(
        "dafl_entropy", "DAFLEntropy",
        "DAFL's information-entropy loss: minus the entropy of the batch's mean prediction.",
        """With p = (1/N) sum_i softmax(y_i) the teacher's mean class distribution over the
        batch, L_ie = sum_c p_c log_b p_c = -H_b(p). Minimising it maximises the entropy of p,
        so the generated batch covers every class about equally (the minimum, -log_b C, is
        reached at the uniform p). The logarithm's base b is 10 by default, as in DAFL's code
        and MMRazor's InformationEntropyLoss (log10), so the paper's weight 5 carries over; the
        entropy in nats is base=2.718281828459045, which multiplies the loss by ln(10). p is
        computed from log-probabilities (a log-sum-exp over the batch), so a class no sample
        predicts gives a finite loss and gradient. Unlike MMRazor with several GPUs, the batch
        is the one of this process. Chen et al., "Data-Free Learning of Student Networks",
        ICCV 2019.""",
        inputs=(_LOGITS,),
        options=(Param("base", FLOAT, 10.0, "base of the logarithm (10 as in DAFL's code)",
                       greater_than(1)),),
        rules=(rank("preds_T", 2),),
    ),
)
