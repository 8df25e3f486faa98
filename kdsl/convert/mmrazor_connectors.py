"""MMRazor connector types as kdsl connectors (kdsl infers the input sizes it is not given)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from kdsl.convert import values
from kdsl.convert.report import ConversionReport, Where
from kdsl.convert.spec import SpecWriter, call, identifier
from kdsl.lang import ir


def _conv_module(c: Mapping[str, Any]) -> Tuple[str, Dict[str, Any]]:
    norm = values.mapping(c, "norm_cfg").get("type")
    act = values.string(values.mapping(c, "act_cfg"), "type", "act_cfg.type")
    return "conv_bn", dict(in_channels=c.get("in_channel"), out_channels=c.get("out_channel"),
                           kernel_size=c.get("kernel_size"), stride=c.get("stride"),
                           padding=c.get("padding"), norm="bn" if norm else "none",
                           act=act.lower() if act else "none")


def _fbkd(c: Mapping[str, Any]) -> Dict[str, Any]:
    renamed = {"spatial_T": "spatial_tau", "channel_T": "channel_tau"}
    return {renamed.get(k, k): c.get(k) for k in ("in_channels", "reduction", "mode", "sub_sample",
                                                   "maxpool_stride", "zeros_init", "spatial_T",
                                                   "channel_T")}


# MMRazor connector type -> its kdsl connector and options
CONNECTORS: Dict[str, Callable[[Mapping[str, Any]], Tuple[str, Dict[str, Any]]]] = {
    "ConvModuleConnector": _conv_module,
    "Translator": lambda c: ("translator", dict(in_channels=c.get("in_channel"),
                                                factor_channels=c.get("out_channel"))),
    "Paraphraser": lambda c: ("paraphraser", dict(in_channels=c.get("in_channel"),
                                                  factor_channels=c.get("out_channel"),
                                                  use_bn=c.get("use_bn"))),
    "MGDConnector": lambda c: ("mgd_generator", dict(student_channels=c.get("student_channels"),
                                                     teacher_channels=c.get("teacher_channels"),
                                                     lambda_mgd=c.get("lambda_mgd"))),
    "CRDConnector": lambda c: ("crd_embed", dict(in_features=c.get("dim_in"),
                                                 feat_dim=c.get("dim_out"))),
    "TorchFunctionalConnector": lambda c: (c.get("function_name", "interpolate"),
                                           dict(values.mapping(c, "func_args"))),
    "TorchNNConnector": lambda c: ("torch_nn", dict(type=c.get("module_name"),
                                                    **values.mapping(c, "module_args"))),
    "FBKDStudentConnector": lambda c: ("fbkd_student", _fbkd(c)),
    "FBKDTeacherConnector": lambda c: ("fbkd_teacher", _fbkd(c)),
}
CONNECTORS["ConvModuleConncetor"] = _conv_module  # the name MMRazor registers it under
_EXACT_KEYS = {kind: {"in_channel", "out_channel", "kernel_size", "stride", "padding", "norm_cfg",
                      "act_cfg"} for kind in ("ConvModuleConnector", "ConvModuleConncetor")}
# OFD's teacher-side margin: built when its use names the teacher BatchNorm it reads
OFD_MARGIN = "OFDTeacherConnector"


def connector_decl(name: str, entry: Any, writer: SpecWriter, report: ConversionReport,
                   key: str, where: Where) -> Tuple[Optional[ir.ConnectorDecl], Any]:
    entry = entry if isinstance(entry, dict) else {}
    kind = str(entry.get("type", "")).split(".")[-1]
    if kind == OFD_MARGIN:
        return None, None
    build = CONNECTORS.get(kind)
    if build is None:
        return None, report.add(key, "dropped", f"connector '{kind}' has no kdsl equivalent",
                                where)
    func, options = build(entry)
    decl = ir.ConnectorDecl(name=writer.unique(identifier(name)), call=call(func, **options))
    known = _EXACT_KEYS.get(kind)
    left = sorted(set(entry) - {"type"} - known) if known is not None else []
    if known is None:
        return decl, report.add(key, "approximated", f"{kind} becomes kdsl's {func} (its "
                                "layers' initialisation may differ)", where)
    finding = report.add(key, "approximated", f"options {', '.join(left)} of {kind} left out",
                         where) if left else None
    return decl, finding


def ofd_margin(name: str, bn: ir.ModulePath, writer: SpecWriter) -> ir.ConnectorDecl:
    """MMRazor's OFDTeacherConnector (whose margins OFDDistiller takes from the recorded
    teacher BatchNorm) as kdsl's ofd_margin on that BatchNorm."""
    module: ir.Node = ir.Name(name=bn.model)
    for part in bn.path:
        module = ir.Attr(value=module, attr=part)
    return ir.ConnectorDecl(name=writer.unique(identifier(name)),
                            call=ir.Call(func="ofd_margin", kwargs=(ir.Keyword(name="bn", value=module),)))
