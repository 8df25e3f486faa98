"""Which kdsl loss, with which options, reproduces each case of the reference vector files.

``TABLE[file][case id]`` is a list of :class:`Term`: the case's value is the sum of ``weight *
loss(**options)`` over its terms, the loss's inputs taken from the case's inputs as ``inputs``
maps them (kdsl input name -> case input name). A torchdistill loss that sums several pairs of
layers is one term per pair, as a kdsl spec writes it. ``state`` names buffers or parameters of
the built loss that are set from case inputs (CRD's memory banks, VID's variance parameter).
The table is built per family from the cases' own kwargs, so the mapping of each option is
written once; every case id of both files must be in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping


@dataclass(frozen=True)
class Term:
    loss: str
    options: Mapping[str, Any]
    inputs: Mapping[str, str]
    weight: float = 1.0
    state: Mapping[str, str] = field(default_factory=dict)


_ST = {"preds_S": "student_logits", "preds_T": "teacher_logits"}
_FEATURES = {"preds_S": "student_feature", "preds_T": "teacher_feature"}
_LIVE = {"detach_teacher": False}  # torchdistill and MMRazor let gradients reach the teacher


def _pairs(kwargs: Mapping[str, Any], key: str, by_path: bool = False) -> List[tuple]:
    """(pair number, weight) of a torchdistill ``*_pairs`` config, in order; the number is the
    pair's position, or with ``by_path`` the digit ending its teacher path (ICKD's layer{k})."""
    return [(int(pair["teacher"]["path"][-1]) if by_path else i, pair.get("weight", 1))
            for i, pair in enumerate(kwargs[key].values(), start=1)]


# ---- torchdistill --------------------------------------------------------------------------
def _kd(kw):
    options = dict(tau=kw["temperature"], alpha=kw["alpha"], beta=kw.get("beta"),
                   reduction=kw["reduction"], form="torchdistill",
                   label_smoothing=kw.get("label_smoothing", 0.0), **_LIVE)
    return [Term("kd", options, dict(_ST, gt_labels="targets"))]


def _logit_std_kd(kw):
    std = dict(tau=kw["temperature"], form="torchdistill", eps=kw.get("eps", 1e-7), **_LIVE)
    if not kw.get("alpha"):  # torchdistill's soft-only path: no tau^2
        return [Term("logit_std_kd", std, _ST, weight=kw["temperature"] ** -2)]
    beta = kw.get("beta", 1 - kw["alpha"])
    return [Term("cross_entropy", {}, {"preds_S": "student_logits", "gt_labels": "targets"},
                 weight=kw["alpha"]),
            Term("logit_std_kd", std, _ST, weight=beta)]


def _fsp(kw):
    names = ("s_first", "s_second", "t_first", "t_second")
    sources = ("student_first_{}", "student_second_{}", "teacher_first_{}", "teacher_second_{}")
    return [Term("fsp", {"norm": "column"}, {n: s.format(i) for n, s in zip(names, sources)}, w)
            for i, w in _pairs(kw, "fsp_pairs")]


def _paired(loss, options, key, by_path=False):
    def build(kw):
        return [Term(loss, options(kw), {"preds_S": f"student_feature_{i}",
                                         "preds_T": f"teacher_feature_{i}"}, w)
                for i, w in _pairs(kw, key, by_path)]
    return build


def _rkd(kw):
    options = dict(with_l2_norm=False, reduction=kw["reduction"])
    return [Term(loss, options, _FEATURES, kw[factor])
            for loss, factor in (("rkd_distance", "dist_factor"), ("rkd_angle", "angle_factor"))
            if kw[factor]]


def _vid(kw):
    if "regressor4vid" in kw:
        r = kw["regressor4vid"]
        options = dict(in_channels=r["in_channels"], out_channels=r["out_channels"],
                       mid_channels=r["middle_channels"], eps=r["eps"],
                       init_pred_var=r["init_pred_var"], regressor="none")
        return [Term("vid", options, _FEATURES, state={"log_scale": "student_soft_plus_param"})]
    return [Term("vid_nll", {}, {"mean": f"student_pred_mean_{i}", "preds_T": f"teacher_feature_{i}",
                                 "variance": f"student_pred_var_{i}"}, w)
            for i, w in _pairs(kw, "feature_pairs")]


def _cckd(kw):
    kernel = kw["kernel_config"]
    options = dict(kernel=kernel["type"], normalize=False, distance="unsquared",
                   reduction="mean" if kw["reduction"] == "batchmean" else "sum")
    if kernel["type"] == "gaussian":
        options.update(gamma=kernel["gamma"], p=kernel["max_p"])
    return [Term("cc", options, {"preds_S": "student_embed", "preds_T": "teacher_embed"})]


def _crd(kw):
    options = dict(num_data=kw["num_samples"], feat_dim=kw["input_size"],
                   nce_k=kw["num_negative_samples"], nce_t=kw["temperature"],
                   nce_m=kw["momentum"])
    assert kw["output_size"] == kw["num_samples"] and kw["eps"] == 1e-7
    inputs = {"preds_S": "student_embed", "preds_T": "teacher_embed", "indices": "pos_idx",
              "contrast_idx": "contrast_idx"}
    # torchdistill's memory_v1 holds student embeddings, memory_v2 teacher embeddings
    return [Term("crd", options, inputs, state={"memory_s": "memory_v1", "memory_t": "memory_v2"})]


def _sskd(kw):
    weights = kw.get("loss_weights") or [1.0, 1.0, 1.0, 1.0]
    options = dict(kl_tau=kw["kl_temp"], ss_tau=kw["ss_temp"], tf_tau=kw["tf_temp"],
                   ss_ratio=kw["ss_ratio"], tf_ratio=kw["tf_ratio"], reduction=kw["reduction"],
                   **dict(zip(("ce_weight", "kl_weight", "ss_weight", "tf_weight"), weights)),
                   **_LIVE)
    inputs = dict(_ST, ss_S="student_ss_output", ss_T="teacher_ss_output", gt_labels="targets")
    return [Term("sskd", options, inputs)]


def _dist_plus(kw):
    return [Term("dist", dict(tau=kw["tau"], inter_weight=kw["beta"], intra_weight=kw["gamma"],
                              form="torchdistill", **_LIVE), _ST),
            Term("dist_plus", dict(channel_weight=kw["iota"], spatial_weight=kw["kappa"],
                                   form="torchdistill"), _FEATURES)]


def _srd(kw):
    return [Term("srd", {"exponent": kw["exponent"]}, _FEATURES),
            Term("kd", dict(tau=kw["temperature"], alpha=0.0, form="torchdistill",
                            reduction=kw["reduction"], **_LIVE), _ST)]


def _regularization(kw):
    source = "teacher_feature" if kw["is_from_teacher"] else "student_feature"
    return [Term("regularization", {"p": float(kw["p"])}, {"x": source})]


TORCHDISTILL: Dict[str, Callable[[Mapping[str, Any]], List[Term]]] = {
    "kd": _kd,
    "kd_label_smoothing": _kd,
    "logit_std_kd": _logit_std_kd,
    "fitnet_mse": lambda kw: [Term("mse", dict(kw["low_level_loss"]["kwargs"]), _FEATURES)],
    "fsp": _fsp,
    "at": _paired("at", lambda kw: {"form": kw["mode"]}, "at_pairs"),
    "pkt": lambda kw: [Term("pkt", dict(form="torchdistill", eps=kw["eps"]),
                            {"preds_S": "student_penultimate",
                             "preds_T": "teacher_penultimate"})],
    "ft": lambda kw: [Term("ft", dict(p=kw["p"], reduction=kw["reduction"],
                                      distance="elementwise" if kw["p"] == 1 else "norm"),
                           {"preds_S": "student_factor", "preds_T": "teacher_factor"})],
    "ab": _paired("ab", lambda kw: dict(margin=kw["margin"], reduction="batchmean"
                                        if kw["reduction"] == "mean" else "sum"),
                  "feature_pairs"),
    "rkd": _rkd,
    "vid": _vid,
    "cckd": _cckd,
    "spkd": lambda kw: [Term("sp", dict(normalize="l1", reduction="mean" if kw["reduction"]
                                        == "batchmean" else "sum"), _FEATURES)],
    "crd": _crd,
    "aux_sskd": lambda kw: [Term("sskd_aux", {"reduction": kw["reduction"]},
                                 {"preds": "teacher_ss_output"})],
    "sskd": _sskd,
    "pad_l2": lambda kw: [Term("pad_l2", dict(eps=kw["eps"], reduction=kw["reduction"]),
                               {"preds_S": "student_embed", "preds_T": "teacher_embed",
                                "log_variance": "student_log_variance"})],
    "hcl": lambda kw: [Term("hcl", dict(output_sizes=kw["output_sizes"],
                                        reduction=kw["reduction"]), _FEATURES)],
    "regularization": _regularization,
    "kta": lambda kw: [Term("kta", dict(p=kw["p"], q=float(kw["q"]), reduction=kw["reduction"]),
                            {"preds_S": "student_adapted_feature",
                             "preds_T": "teacher_factor"})],
    "affinity": lambda kw: [Term("affinity", {"reduction": kw["reduction"]},
                                 {"preds_S": "student_affinity_feature",
                                  "preds_T": "teacher_factor"})],
    "ickd": _paired("ickd", lambda kw: {"reduction": "mean_n2"}, "feature_pairs", by_path=True),
    "dist": lambda kw: [Term("dist", dict(tau=kw["tau"], inter_weight=kw["beta"],
                                          intra_weight=kw["gamma"], form="torchdistill", **_LIVE),
                             _ST)],
    "dist_plus": _dist_plus,
    "srd": _srd,
    "skd_instance": lambda kw: [Term("skd_instance", dict(tau=kw["temperature"], **_LIVE), _ST)],
    "skd_direction": lambda kw: [Term("skd_direction", dict(tikhonov=kw["tikhonov"], **_LIVE),
                                      _ST)],
}


# ---- MMRazor -------------------------------------------------------------------------------
_PAIR = {"preds_S": "preds_S", "preds_T": "preds_T"}
_SFEATURE = {"preds_S": "s_feature", "preds_T": "t_feature"}


def _mmrazor_dkd(kw):
    # form="mmrazor" repeats MMRazor's masking, so its NaN teacher gradients are reproduced too
    options = dict(alpha=kw["alpha"], beta=kw["beta"], tau=kw["tau"], form="mmrazor", **_LIVE)
    return [Term("dkd", options, dict(_PAIR, gt_labels="gt_labels"))]


MMRAZOR: Dict[str, Callable[[Mapping[str, Any]], List[Term]]] = {
    "kl_divergence": lambda kw: [Term("kl_div", dict(kw), _PAIR)],
    "channel_wise_divergence": lambda kw: [Term("cwd", dict(kw), _PAIR)],
    "dkd": _mmrazor_dkd,
    "dist": lambda kw: [Term("dist", dict(tau=kw["tau"], inter_weight=kw["inter_loss_weight"],
                                          intra_weight=kw["intra_loss_weight"]),
                             {"preds_S": "logits_S", "preds_T": "logits_T"})],
    "attention_transfer": lambda kw: [Term("at", dict(kw), _SFEATURE)],
    "ofd": lambda kw: [Term("ofd", dict(kw), _SFEATURE)],
    "l2": lambda kw: [Term("l2", dict(kw), _SFEATURE)],
    "l1": lambda kw: [Term("l1", dict(kw), _SFEATURE)],
    # MMRazor's default loss_weight is part of its value; in kdsl it is the term's weight
    "rkd_distance": lambda kw: [Term("rkd_distance", dict(kw), _PAIR, 25.0)],
    "rkd_angle": lambda kw: [Term("rkd_angle", dict(kw), _PAIR, 50.0)],
    "wsld": lambda kw: [Term("wsld", dict(tau=kw["tau"], **_LIVE),
                             {"preds_S": "student", "preds_T": "teacher",
                              "gt_labels": "gt_labels"})],
    "pkd": lambda kw: [Term("pkd", dict(kw), _PAIR)],
    "mgd": lambda kw: [Term("mgd", dict(kw), _PAIR)],
    # MMRazor's ABLoss multiplies the paper's value by 3 / 1000 (the authors' script)
    "ab": lambda kw: [Term("ab", dict(kw), _SFEATURE, 0.003)],
    "factor_transfer": lambda kw: [Term("ft", dict(kw), _SFEATURE)],
}

FAMILIES = {"torchdistill_vectors.json": TORCHDISTILL, "loss_vectors.json": MMRAZOR}


def terms_for(file: str, case: Mapping[str, Any]) -> List[Term]:
    """The terms that reproduce ``case`` of ``file`` (KeyError when the table lacks its family)."""
    family = case["id"].split("/", 1)[0]
    return FAMILIES[file][family](case["kwargs"])

