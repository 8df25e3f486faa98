"""torchdistill losses that are several kdsl terms: one per layer pair (ATLoss's ``at_pairs``,
AltActTransferLoss's and ChSimLoss's ``feature_pairs``), or one per part (RKDLoss's distance and
angle, DISTPlusLoss's logit and feature relations, SRDLoss's feature term and KD, LogitStdKDLoss's
KD and cross-entropy), as a kdsl spec writes them. Each expansion gives (name suffix, kdsl loss,
arguments, options, weight); an argument is ``(model, module path, io)`` or ``TARGETS``. The
forms are those tests/catalog/parity_table.py establishes against torchdistill's values."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple, Union

TARGETS = "targets"
Argument = Union[Tuple[str, str, str], str]
Expansion = List[Tuple[str, str, List[Argument], Dict[str, Any], float]]


def _side(model: str, entry: Mapping[str, Any]) -> Argument:
    return model, str(entry.get("path", ".")), str(entry.get("io", "output"))


def _paths(kwargs: Mapping[str, Any], part: str) -> List[Argument]:
    """The student's and teacher's ``{model}_{part}module_path``/``_io`` options."""
    return [(model, str(kwargs.get(f"{model}_{part}module_path", ".")),
             str(kwargs.get(f"{model}_{part}module_io", "output"))) for model in ("student", "teacher")]


def _pairs(key: str, loss: str, options: Callable[[Mapping[str, Any]], Dict[str, Any]]):
    def expand(kwargs: Mapping[str, Any]) -> Expansion:
        pairs = kwargs.get(key) or {}
        return [(f"_{name}", loss, [_side("student", pair["student"]), _side("teacher", pair["teacher"])],
                 options(kwargs), float(pair.get("weight", 1))) for name, pair in pairs.items()]
    return expand


def _rkd(kwargs: Mapping[str, Any]) -> Expansion:
    args: List[Argument] = [("student", str(kwargs.get("student_output_path", ".")), "output"),
                            ("teacher", str(kwargs.get("teacher_output_path", ".")), "output")]
    options = {"with_l2_norm": False, "reduction": kwargs.get("reduction", "mean")}
    return [(suffix, loss, args, dict(options), float(kwargs.get(factor, 0)))
            for suffix, loss, factor in (("_distance", "rkd_distance", "dist_factor"),
                                         ("_angle", "rkd_angle", "angle_factor"))
            if kwargs.get(factor)]


def _dist_plus(kwargs: Mapping[str, Any]) -> Expansion:
    return [("_logits", "dist", _paths(kwargs, "logit_"),
             dict(tau=kwargs.get("tau", 1.0), inter_weight=kwargs.get("beta", 1.0),
                  intra_weight=kwargs.get("gamma", 1.0), form="torchdistill"), 1.0),
            ("_features", "dist_plus", _paths(kwargs, "feature_"),
             dict(channel_weight=kwargs.get("iota", 1.0), spatial_weight=kwargs.get("kappa", 1.0),
                  form="torchdistill"), 1.0)]


def _srd(kwargs: Mapping[str, Any]) -> Expansion:
    # the KD part is soft-only (alpha 0): no targets
    return [("_features", "srd", _paths(kwargs, "feature_"),
             {"exponent": kwargs.get("exponent", 2.0)}, 1.0),
            ("_kd", "kd", _paths(kwargs, "linear_"),
             dict(tau=kwargs.get("temperature", 1.0), alpha=0.0, form="torchdistill",
                  reduction=kwargs.get("reduction", "batchmean")), 1.0)]


def _logit_std_kd(kwargs: Mapping[str, Any]) -> Expansion:
    tau = kwargs.get("temperature", 1.0)
    std = dict(tau=tau, form="torchdistill", eps=kwargs.get("eps", 1e-7))
    if not kwargs.get("alpha"):  # torchdistill's soft-only path has no tau^2
        return [("", "logit_std_kd", _paths(kwargs, ""), std, tau ** -2)]
    beta = kwargs.get("beta", 1 - kwargs["alpha"])
    student = _paths(kwargs, "")[0]
    return [("_kd", "logit_std_kd", _paths(kwargs, ""), std, float(beta)),
            ("_ce", "cross_entropy", [student, TARGETS], {}, float(kwargs["alpha"]))]


# torchdistill class -> (expansion, the options it reads)
EXPANDED: Dict[str, Tuple[Callable[[Mapping[str, Any]], Expansion], Tuple[str, ...]]] = {
    "ATLoss": (_pairs("at_pairs", "at", lambda kw: {"form": kw.get("mode", "code")}),
               ("at_pairs", "mode")),
    "AltActTransferLoss": (_pairs("feature_pairs", "ab", lambda kw: {
        "margin": kw.get("margin", 1.0),
        "reduction": "batchmean" if kw.get("reduction", "mean") == "mean" else "sum"}),
        ("feature_pairs", "margin", "reduction")),
    "ChSimLoss": (_pairs("feature_pairs", "ickd", lambda kw: {"reduction": "mean_n2"}),
                  ("feature_pairs",)),
    "RKDLoss": (_rkd, ("student_output_path", "teacher_output_path", "dist_factor",
                       "angle_factor", "reduction")),
    "DISTPlusLoss": (_dist_plus, tuple(f"{m}_{p}_module_{s}" for m in ("student", "teacher")
                                       for p in ("logit", "feature") for s in ("path", "io"))
                     + ("beta", "gamma", "tau", "iota", "kappa")),
    "SRDLoss": (_srd, tuple(f"{m}_{p}_module_{s}" for m in ("student", "teacher")
                            for p in ("feature", "linear") for s in ("path", "io"))
                + ("exponent", "temperature", "reduction")),
    "LogitStdKDLoss": (_logit_std_kd, ("student_module_path", "student_module_io",
                                       "teacher_module_path", "teacher_module_io", "temperature",
                                       "alpha", "beta", "eps", "reduction")),
}
