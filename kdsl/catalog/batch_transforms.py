"""Batch transforms of the training data (``train { batch_transform = mixup(alpha=0.8) }``):
applied to each training batch of (input, target) before the models see it, never to validation
batches. The implementations live in :mod:`kdsl.components.batch_transforms`."""

from __future__ import annotations

from kdsl.catalog.types import ANY, FLOAT, INT, LABELS, POSITIVE, PROBABILITY, TENSOR, Param, declarer, optional

_transform = declarer("batch_transform", __name__, inputs=(
    Param("x", TENSOR, doc="the batch's inputs, [N, C, H, W]"),
    Param("y", LABELS, doc="the batch's class labels, [N]"),
    Param("rng", ANY, doc="numpy's generator of this step (seeded by the trainer)")))

_SMOOTHING = Param("label_smoothing", FLOAT, 0.0, "mass spread uniformly over the classes of each target",
                   PROBABILITY)
_CLASSES = Param("num_classes", optional(INT), None, "classes of the one-hot targets (default: the data's)",
                 POSITIVE)
_MIXED = """The targets become class probabilities [N, C] (what cross_entropy takes as soft
        labels): with smoothing s, each one-hot label is 1 - s + s / C on its class and s / C
        elsewhere, then mixed with the same weights as the inputs. The batch is mixed with itself
        reversed (sample i with sample N - 1 - i), one weight per batch, as timm's Mixup
        (mode="batch") that DeiT trains with. The weight is drawn from numpy's generator seeded by
        (seed, epoch, step), so a resumed run mixes the same batches the same way."""

COMPONENTS = (
    _transform("mixup", "Mixup", "Mixup: inputs and labels mixed with a Beta(alpha, alpha) weight",
               f"""x = lam * x + (1 - lam) * x_reversed and y = lam * y + (1 - lam) * y_reversed,
               lam ~ Beta(alpha, alpha). {_MIXED} Zhang et al., "mixup: Beyond Empirical Risk
               Minimization", ICLR 2018.""",
               "Zhang et al., mixup, ICLR 2018",
               options=(Param("alpha", FLOAT, 0.8, "Beta distribution's parameter", POSITIVE), _SMOOTHING, _CLASSES)),
    _transform("cutmix", "CutMix", "CutMix: a box of each input replaced by another's, labels mixed by area",
               f"""lam ~ Beta(alpha, alpha); a box of height H * sqrt(1 - lam) and width W * sqrt(1 -
               lam), centred at a uniformly drawn pixel and clipped to the image, is copied from
               the reversed batch; y = lam' * y + (1 - lam') * y_reversed with lam' = 1 - box area /
               (H * W). {_MIXED} Yun et al., "CutMix", ICCV 2019.""",
               "Yun et al., CutMix, ICCV 2019",
               options=(Param("alpha", FLOAT, 1.0, "Beta distribution's parameter", POSITIVE), _SMOOTHING, _CLASSES)),
    _transform("mixup_cutmix", "MixupCutMix", "DeiT's batch mixing: CutMix or Mixup, chosen per batch",
               f"""Each batch is mixed (with probability prob) by CutMix with probability
               switch_prob, else by Mixup, as timm's Mixup(mixup_alpha=0.8, cutmix_alpha=1.0,
               switch_prob=0.5, label_smoothing=0.1) in DeiT's recipe. {_MIXED} Touvron et al.,
               "Training data-efficient image transformers", ICML 2021.""",
               "Touvron et al., DeiT, ICML 2021",
               options=(Param("mixup_alpha", FLOAT, 0.8, "Mixup's Beta parameter", POSITIVE),
                        Param("cutmix_alpha", FLOAT, 1.0, "CutMix's Beta parameter", POSITIVE),
                        Param("switch_prob", FLOAT, 0.5, "probability of CutMix rather than Mixup", PROBABILITY),
                        Param("prob", FLOAT, 1.0, "probability that a batch is mixed at all", PROBABILITY),
                        Param("label_smoothing", FLOAT, 0.1, _SMOOTHING.doc, PROBABILITY), _CLASSES)),
    _transform("rotations", "Rotations", "SSKD's batches: each image and its rotations by 90, 180, 270 degrees",
               """An input batch [N, C, H, W] (H = W) becomes [4N, C, H, W], each original followed
               by its rotations by 90, 180 and 270 degrees (torch.rot90 over the last two
               dimensions), the layout the sskd and sskd_aux losses read; the labels are kept, one
               per original ([N]). Xu et al., "Knowledge Distillation Meets Self-Supervision",
               ECCV 2020.""",
               "Xu et al., SSKD, ECCV 2020"),
)
