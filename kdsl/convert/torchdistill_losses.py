"""torchdistill losses that are several kdsl terms: one per layer pair (ATLoss's ``at_pairs``,
AltActTransferLoss's ``feature_pairs``), or one per factor (RKDLoss's distance and angle terms),
as a kdsl spec writes them. Each expansion gives (name suffix, kdsl loss, student side, teacher
side, options, weight); a side is (module path, io)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple

Side = Tuple[str, str]
Expansion = List[Tuple[str, str, Side, Side, Dict[str, Any], float]]


def _side(entry: Mapping[str, Any]) -> Side:
    return str(entry.get("path", ".")), str(entry.get("io", "output"))


def _pairs(key: str, loss: str, options: Callable[[Mapping[str, Any]], Dict[str, Any]]):
    def expand(kwargs: Mapping[str, Any]) -> Expansion:
        pairs = kwargs.get(key) or {}
        return [(f"_{name}", loss, _side(pair.get("student") or {}), _side(pair.get("teacher") or {}),
                 options(kwargs), float(pair.get("weight", 1)))
                for name, pair in pairs.items() if isinstance(pair, dict)]
    return expand


def _rkd(kwargs: Mapping[str, Any]) -> Expansion:
    student = (str(kwargs.get("student_output_path", ".")), "output")
    teacher = (str(kwargs.get("teacher_output_path", ".")), "output")
    options = {"with_l2_norm": False, "reduction": kwargs.get("reduction", "mean")}
    return [(suffix, loss, student, teacher, dict(options), float(kwargs.get(factor, 0)))
            for suffix, loss, factor in (("_distance", "rkd_distance", "dist_factor"),
                                         ("_angle", "rkd_angle", "angle_factor"))
            if kwargs.get(factor)]


# torchdistill class -> (expansion, the options it reads)
EXPANDED: Dict[str, Tuple[Callable[[Mapping[str, Any]], Expansion], Tuple[str, ...]]] = {
    "ATLoss": (_pairs("at_pairs", "at", lambda kw: {"form": kw.get("mode", "code")}),
               ("at_pairs", "mode")),
    "AltActTransferLoss": (_pairs("feature_pairs", "ab", lambda kw: {
        "margin": kw.get("margin", 1.0),
        "reduction": "batchmean" if kw.get("reduction", "mean") == "mean" else "sum"}),
        ("feature_pairs", "margin", "reduction")),
    "RKDLoss": (_rkd, ("student_output_path", "teacher_output_path", "dist_factor",
                       "angle_factor", "reduction")),
}
