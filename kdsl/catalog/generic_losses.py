"""Losses that take what a model computed itself (no torch here)."""

from kdsl.catalog.types import ANY, STR, Param, declarer

_loss = declarer("loss", __name__)

COMPONENTS = (
    _loss(
        "model_loss", "ModelLoss",
        "A loss the model computes itself (a scalar, or a dict of named losses summed).",
        "L = value if value is a tensor (summed if not a scalar); for a dict, the sum of the "
        "entries whose key contains `key` (mmdet returns {'loss_cls': ..., 'loss_bbox': ...}); "
        "for an object with a `loss` attribute (Hugging Face outputs), that attribute. Use it to "
        "keep a detector's or a language model's own training loss in the loss graph, e.g. when "
        "the teacher's label assignment is delivered into the student's pass (LAD).",
        inputs=(Param("value", ANY, doc="a tensor, a dict of tensors, or an object with .loss"),),
        options=(Param("key", STR, "loss", "dict keys (or attribute) that hold losses"),)),
)
