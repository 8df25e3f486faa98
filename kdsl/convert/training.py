"""Optimizers, learning-rate schedules and models, as both frameworks name them (torch class names),
translated to kdsl's catalog names; shared by the MMRazor and torchdistill converters.

Model table (documented in the README): a framework's architecture name -> a kdsl.zoo factory.
The names are those of the CIFAR models both projects' configs use; the architectures match, but
module paths may differ from the framework's implementation, so a mapped model is reported as
approximated (check the paths with ``kdsl modules``). Any other model becomes a bare placeholder
(``student`` / ``teacher``) that ``kdsl train`` asks to be given (--student/--teacher).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from kdsl.convert import values
from kdsl.convert.report import ConversionReport, Where
from kdsl.convert.spec import call
from kdsl.lang import ir

ZOO: Dict[str, str] = {
    **{f"resnet{d}": f"kdsl.zoo:resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": "kdsl.zoo:resnet8x4", "resnet32x4": "kdsl.zoo:resnet32x4",
    "wide_resnet16_2": "kdsl.zoo:wrn_16_2", "wide_resnet40_1": "kdsl.zoo:wrn_40_1",
    "wide_resnet40_2": "kdsl.zoo:wrn_40_2", "wrn_16_2": "kdsl.zoo:wrn_16_2",
    "wrn_40_1": "kdsl.zoo:wrn_40_1", "wrn_40_2": "kdsl.zoo:wrn_40_2",
    "wrn16_2": "kdsl.zoo:wrn_16_2", "wrn40_1": "kdsl.zoo:wrn_40_1", "wrn40_2": "kdsl.zoo:wrn_40_2",
    "vgg8": "kdsl.zoo:vgg8", "vgg13": "kdsl.zoo:vgg13",
    "mobilenetv2": "kdsl.zoo:mobilenetv2", "mobilenet_v2": "kdsl.zoo:mobilenetv2",
    "shufflenetv1": "kdsl.zoo:shufflenetv1", "shufflenetv2": "kdsl.zoo:shufflenetv2",
}

# torch optimizer class -> (kdsl optimizer, {torch option: kdsl option})
OPTIMIZERS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "SGD": ("sgd", {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
                    "nesterov": "nesterov"}),
    "Adam": ("adam", {"lr": "lr", "betas": "betas", "weight_decay": "weight_decay"}),
    "AdamW": ("adamw", {"lr": "lr", "betas": "betas", "weight_decay": "weight_decay"}),
}
# torch's defaults where kdsl's differ: an option the config leaves out keeps torch's value
_TORCH_DEFAULTS = {"sgd": {"momentum": 0.0, "weight_decay": 0.0}, "adam": {}, "adamw": {}}


def model_decl(role: str, name: str, arch: Optional[str], options: Mapping[str, Any],
               checkpoint: Optional[str], report: ConversionReport, key: str,
               where: Where) -> Tuple[ir.ModelDecl, Any]:
    """A model declaration for a framework architecture name, and the finding it needs."""
    if arch and ":" in arch:  # already a kdsl reference (pkg.module:factory): kept as it is
        return ir.ModelDecl(role=role, name=name, factory=ir.Factory(ref=arch),
                            checkpoint=checkpoint), None
    ref = ZOO.get((arch or "").lower())
    if ref is None:
        finding = report.add(key, "dropped", f"model '{arch}' has no kdsl equivalent in the "
                             "converter's table: a placeholder; give it with "
                             f"--{role} pkg.module:factory", where)
        return ir.ModelDecl(role=role, name=name, checkpoint=checkpoint), finding
    kwargs = tuple(ir.Keyword(name=k, value=ir.Const(value=v)) for k, v in options.items()
                   if k == "num_classes")
    finding = report.add(key, "approximated", f"model '{arch}' becomes {ref} (the same "
                         "architecture; its module paths may differ, check with `kdsl modules`)",
                         where)
    factory = ir.Factory(ref=ref, kwargs=kwargs)
    return ir.ModelDecl(role=role, name=name, factory=factory, checkpoint=checkpoint), finding


def optimizer_call(kind: str, options: Mapping[str, Any], report: ConversionReport, key: str,
                   where: Where) -> Tuple[Optional[ir.Call], Any]:
    """``sgd(lr=..., ...)`` for a torch optimizer class and its options."""
    entry = OPTIMIZERS.get(kind.split(".")[-1])
    if entry is None:
        return None, report.add(key, "dropped", f"optimizer '{kind}' has no kdsl equivalent "
                                "(kdsl has sgd, adam, adamw)", where)
    name, rename = entry
    values = {rename[k]: v for k, v in options.items() if k in rename}
    values.update({k: v for k, v in _TORCH_DEFAULTS[name].items() if k not in values})
    left = sorted(k for k in options if k not in rename and k != "type")
    finding = None
    if left:
        finding = report.add(key, "approximated", f"optimizer options {', '.join(left)} have "
                             "no kdsl equivalent and were left out", where)
    return call(name, **values), finding


def schedule_call(kind: str, options: Mapping[str, Any], epochs: Optional[int],
                  report: ConversionReport, key: str, where: Where) -> Tuple[Optional[ir.Call], Any]:
    """``step(...)``/``cosine(...)``/``constant()`` for a torch lr scheduler and its options
    (stepped per epoch)."""
    kind = kind.split(".")[-1]
    if kind in ("MultiStepLR", "MultiStepParamScheduler"):
        return call("step", milestones=values.sequence(options, "milestones", f"{key}.milestones"),
                    gamma=options.get("gamma", 0.1)), None
    if kind in ("CosineAnnealingLR", "CosineAnnealingParamScheduler"):
        span = options.get("T_max")
        finding = None
        if span is not None and epochs is not None and span != epochs:
            finding = report.add(key, "approximated", f"T_max={span} differs from the {epochs} "
                                 "epochs: kdsl's cosine anneals over the whole run", where)
        return call("cosine", min_lr=options.get("eta_min", 0.0) or None), finding
    if kind in ("ConstantLR", "ConstantParamScheduler") and options.get("factor", 1.0) == 1.0:
        return call("constant"), None
    return None, report.add(key, "dropped", f"lr scheduler '{kind}' has no kdsl equivalent "
                            "(kdsl has step, cosine, constant, each with warmup_epochs)", where)


def setting(key: str, value: ir.Node) -> ir.TrainSetting:
    return ir.TrainSetting(key=key, value=value)
