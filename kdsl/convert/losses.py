"""Each MMRazor and torchdistill loss class, as the kdsl loss and options that compute the same
value (the reference-vector parity tests, tests/catalog/parity_table.py, establish each form).

A :class:`LossForm` says which kdsl loss a framework class becomes, which of the framework's
forward arguments feed the kdsl loss's inputs (in the kdsl loss's order), how the framework's
constructor options are renamed, which options are fixed (``form="torchdistill"``), and the
framework's own scaling (MMRazor's default ``loss_weight``, ABLoss's 3/1000). An option the form
does not know is reported and left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple


@dataclass(frozen=True)
class LossForm:
    loss: str
    inputs: Tuple[str, ...]                    # framework argument names, kdsl input order
    rename: Mapping[str, str] = field(default_factory=dict)  # framework option -> kdsl option
    fixed: Mapping[str, Any] = field(default_factory=dict)   # kdsl options always set
    scale: float = 1.0                          # the framework's factor on top of the weight
    default_weight: float = 1.0                 # MMRazor's default loss_weight
    ignored: Tuple[str, ...] = ()               # options that do not change the value
    values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)  # option value renames
    note: Optional[str] = None                  # what differs, when the form is not exact

    def options(self, kwargs: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
        """The kdsl options for the framework's ``kwargs``, and the options left out."""
        out: Dict[str, Any] = {}
        unknown = []
        for key, value in kwargs.items():
            if key in self.rename:
                out[self.rename[key]] = self.values.get(key, {}).get(value, value)
            elif key not in self.ignored and key not in ("loss_weight", "type"):
                unknown.append(key)
        out.update(self.fixed)
        return out, unknown


_PAIR = ("preds_S", "preds_T")
_FEATURE = ("s_feature", "t_feature")
_SAME = lambda *names: {n: n for n in names}  # noqa: E731

# MMRazor 1.x, mmrazor/models/losses (and mmcls's CrossEntropyLoss for the task term)
MMRAZOR: Dict[str, LossForm] = {
    "KLDivergence": LossForm("kl_div", _PAIR, dict(_SAME("tau", "reduction"),
                                                   teacher_detach="detach_teacher")),
    "ChannelWiseDivergence": LossForm("cwd", _PAIR, _SAME("tau")),
    # torch's legacy rule on MMRazor's size_average=False: every reduction but batchmean sums
    "DKDLoss": LossForm("dkd", _PAIR + ("gt_labels",), _SAME("tau", "alpha", "beta", "reduction"),
                        fixed={"form": "mmrazor"},
                        values={"reduction": {"sum": "sum", "mean": "sum", "none": "sum"}}),
    "DISTLoss": LossForm("dist", ("logits_S", "logits_T"),
                         dict(_SAME("tau"), inter_loss_weight="inter_weight",
                              intra_loss_weight="intra_weight", teacher_detach="detach_teacher")),
    "ATLoss": LossForm("at", _FEATURE),
    "OFDLoss": LossForm("ofd", _FEATURE, _SAME("mul_factor")),
    "L2Loss": LossForm("l2", _FEATURE, _SAME("normalize", "mult", "div_element", "dist")),
    "L1Loss": LossForm("l1", _FEATURE, _SAME("reduction"), ignored=("size_average", "reduce")),
    "DistanceWiseRKD": LossForm("rkd_distance", _PAIR, _SAME("with_l2_norm"), default_weight=25.0),
    "AngleWiseRKD": LossForm("rkd_angle", _PAIR, _SAME("with_l2_norm"), default_weight=50.0),
    "WSLD": LossForm("wsld", ("student", "teacher", "gt_labels"), _SAME("tau"),
                     ignored=("num_classes",)),
    "PKDLoss": LossForm("pkd", _PAIR, _SAME("resize_stu")),
    "MGDLoss": LossForm("mgd", _PAIR, _SAME("alpha_mgd")),
    "ABLoss": LossForm("ab", _FEATURE, _SAME("margin"), scale=0.003),
    "FTLoss": LossForm("ft", _FEATURE),
    # kdsl's fbkd is MMRazor's FBKDLoss (the catalog entry says so), its option names fixed
    "FBKDLoss": LossForm("fbkd", ("s_input", "t_input"),
                         dict(_SAME("mask_l2_weight", "channel_weight", "spatial_weight"),
                              nonloacl_weight="nonlocal_weight", nonlocal_weight="nonlocal_weight")),
    "CrossEntropyLoss": LossForm("cross_entropy", ("cls_score", "label"),
                                 ignored=("use_sigmoid", "use_soft")),
    "OnehotLikeLoss": LossForm("dafl_onehot", ("preds_T",),
                               note="kdsl's dafl_onehot is not checked against MMRazor's vectors"),
    "InformationEntropyLoss": LossForm("dafl_entropy", ("preds_T",), ignored=("gamma",),
                                       note="kdsl's dafl_entropy is not checked against "
                                       "MMRazor's vectors"),
    "ActivationLoss": LossForm("dafl_activation", ("feat_T",), ignored=("norm_type",),
                               note="kdsl's dafl_activation is not checked against MMRazor's "
                               "vectors"),
}

_TD_STUDENT_TEACHER = ("student", "teacher")  # torchdistill losses read io_dicts by path

# torchdistill 1.x, torchdistill/losses/mid_level.py (and torch.nn losses in SimpleLossWrapper).
# A torchdistill loss names the layers it reads in its own options; its ``inputs`` here are the
# option pairs (path, io) of the student's and the teacher's.
TORCHDISTILL: Dict[str, LossForm] = {
    "KDLoss": LossForm("kd", _TD_STUDENT_TEACHER + ("targets",),
                       dict(temperature="tau", alpha="alpha", beta="beta", reduction="reduction",
                            label_smoothing="label_smoothing"),
                       fixed={"form": "torchdistill"}),
    "DISTLoss": LossForm("dist", _TD_STUDENT_TEACHER, dict(tau="tau", beta="inter_weight",
                                                           gamma="intra_weight"),
                         fixed={"form": "torchdistill"}),
    "PKTLoss": LossForm("pkt", _TD_STUDENT_TEACHER, _SAME("eps"), fixed={"form": "torchdistill"}),
    "SPKDLoss": LossForm("sp", _TD_STUDENT_TEACHER, _SAME("reduction"), fixed={"normalize": "l1"},
                         values={"reduction": {"batchmean": "mean"}}),
    "SKDInstanceLoss": LossForm("skd_instance", _TD_STUDENT_TEACHER, dict(temperature="tau")),
    "SKDDirectionLoss": LossForm("skd_direction", _TD_STUDENT_TEACHER, _SAME("tikhonov")),
    "CrossEntropyLoss": LossForm("cross_entropy", ("input", "target"),
                                 _SAME("reduction", "label_smoothing", "ignore_index")),
    "MSELoss": LossForm("mse", ("input", "target"), _SAME("reduction")),
    "L1Loss": LossForm("l1", ("input", "target"), _SAME("reduction")),
    "SmoothL1Loss": LossForm("smooth_l1", ("input", "target"), _SAME("reduction", "beta")),
    # the translator's and paraphraser's outputs (torchdistill_wrappers); p=2 is a per-sample norm
    "FTLoss": LossForm("ft", _TD_STUDENT_TEACHER, _SAME("p", "reduction", "distance")),
}

# the io_dict options every torchdistill loss that reads one student and one teacher layer takes
TD_PATH_OPTIONS = ("student_module_path", "student_module_io", "teacher_module_path",
                   "teacher_module_io")
