"""torchdistill's ``auxiliary_model_wrapper`` entries as kdsl connectors.

A wrapper adds modules around a model, and the losses read them by their path in the wrapper
(``paraphraser``, ``translator``, ``connector_dict.KEY``, ``normalizer``). Each wrapper kdsl has
an exact connector for becomes that connector, and its path an alias for the connector applied
to the record the wrapper feeds it (``input_module_path``, or a connector's ``path``/``io``).
The other wrappers stay in the report, dropped with the reason.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from kdsl.convert import values
from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport, Where
from kdsl.convert.spec import call, identifier
from kdsl.convert.torchdistill_train import get as _get
from kdsl.convert.torchdistill_train import options as _options
from kdsl.lang import ir

# kdsl's Factor Transfer layers are torchdistill's at its defaults: 3x3, stride 1, padding 1
_FT_GEOMETRY = {"kernel_size": 3, "stride": 1, "padding": 1}


class Wrapped(NamedTuple):
    """One module a wrapper adds: the path losses read it by, its connector, and its input."""
    alias: str
    connector: ir.ConnectorDecl
    source: str
    io: str


class Made(NamedTuple):
    modules: List[Wrapped]
    approximations: List[str]


def _ft_geometry(kwargs: Dict[str, Any], what: str) -> List[str]:
    differ = [f"{k}={kwargs[k]}" for k, v in _FT_GEOMETRY.items() if k in kwargs and kwargs[k] != v]
    return [f"the {what}'s {', '.join(differ)}: kdsl's {what} uses 3x3 convolutions at stride 1, "
            "padding 1"] if differ else []


def _paraphraser(name: str, kwargs: Located, key: str) -> Made:
    options = values.mapping(kwargs, "paraphraser_kwargs", f"{key}.paraphraser_kwargs")
    checkpoint = values.string(kwargs, "paraphraser_ckpt", f"{key}.paraphraser_ckpt")
    pretraining = bool(kwargs.get("uses_decoder"))
    # distilling (no decoder), the pretrained paraphraser is loaded and stays fixed
    decl = ir.ConnectorDecl(name=name, call=call(
        "paraphraser", in_channels=options.get("num_input_channels"), rate=options.get("k"),
        use_bn=bool(options.get("uses_bn", True))), checkpoint=checkpoint,
        frozen=bool(checkpoint) and not pretraining)
    notes = _ft_geometry(options, "paraphraser")
    if kwargs.get("minimal"):
        notes.append("minimal (a redesigned, smaller teacher) is not converted: the full teacher "
                     "runs")
    if pretraining:
        notes.append("uses_decoder: the paraphraser's pretraining reads decoder(encoder(x)); "
                     "kdsl's paraphraser connector returns the factor: write its "
                     "`reconstruction_loss` by hand")
    source = str(kwargs.get("input_module_path", ""))
    return Made([Wrapped("paraphraser", decl, source, "output")], notes)


def _translator(name: str, kwargs: Located, key: str) -> Made:
    options = values.mapping(kwargs, "translator_kwargs", f"{key}.translator_kwargs")
    decl = ir.ConnectorDecl(name=name, call=call(
        "translator", in_channels=options.get("num_input_channels"),
        factor_channels=options.get("num_output_channels"),
        use_bn=bool(options.get("uses_bn", True))))
    source = str(kwargs.get("input_module_path", ""))
    return Made([Wrapped("translator", decl, source, "output")],
                _ft_geometry(options, "translator"))


def _dab_connectors(name: str, kwargs: Located, key: str) -> Made:
    """Connector4DAB: per key, a Conv2d and (with ``bn2d_kwargs``) a BatchNorm2d."""
    made: List[Wrapped] = []
    for connector, entry, _ in values.items(kwargs, "connectors", f"{key}.connectors"):
        conv = values.mapping(entry, "conv2d_kwargs", f"{key}.connectors.{connector}.conv2d_kwargs")
        bn = values.mapping(entry, "bn2d_kwargs", f"{key}.connectors.{connector}.bn2d_kwargs")
        decl = ir.ConnectorDecl(name=identifier(connector), call=call(
            "conv_bn", in_channels=conv.get("in_channels"), out_channels=conv.get("out_channels"),
            kernel_size=conv.get("kernel_size"), stride=conv.get("stride"),
            padding=conv.get("padding", 0), norm="bn" if bn else "none",
            bias=bool(conv.get("bias", True))))
        made.append(Wrapped(f"connector_dict.{connector}", decl, str(entry.get("path", "")),
                            str(entry.get("io", "output"))))
    return Made(made, [])


def _crd_embed(name: str, kwargs: Located, key: str) -> Made:
    """Linear4CRD at ``power=2``: flatten, linear, L2-normalise, which is kdsl's crd_embed."""
    linear = values.mapping(kwargs, "linear_kwargs", f"{key}.linear_kwargs")
    decl = ir.ConnectorDecl(name=name, call=call(
        "crd_embed", in_features=linear.get("in_features"), feat_dim=linear.get("out_features")))
    notes = [] if kwargs.get("power", 2) == 2 else [
        f"power={kwargs.get('power')}: kdsl's crd_embed normalises with the L2 norm"]
    return Made([Wrapped("normalizer", decl, str(kwargs.get("input_module_path", "")), "output")],
                notes)


WRAPPERS: Dict[str, Tuple[str, Callable[[str, Located, str], Made]]] = {
    "Teacher4FactorTransfer": ("paraphraser", _paraphraser),
    "Student4FactorTransfer": ("translator", _translator),
    "Connector4DAB": ("connector", _dab_connectors),
    "Linear4CRD": ("embed", _crd_embed),
}
# Known wrappers kept in the report, and why kdsl has no exact connector for them.
UNCONVERTED = {
    "VariationalDistributor4VID": "VID's regressors also learn a per-channel variance",
    "Linear4CCKD": "a flatten then a linear map: declare `flatten` and `linear` connectors",
    "SSWrapper4SSKD": "SSKD's self-supervision head on rotated inputs",
    "VarianceBranch4PAD": "PAD's variance estimator",
    "HeadRCNN": "an R-CNN head rebuilt from the model",
}


def wrapper_modules(entry: Located, key: str, where: Where, unique: Callable[[str], str],
                    report: ConversionReport) -> Tuple[List[Wrapped], List[Any]]:
    """The connectors ``entry`` (an ``auxiliary_model_wrapper``) adds, and its findings."""
    kind = _get(entry, "key", "type")
    if kind not in WRAPPERS:
        why = UNCONVERTED.get(kind, "kdsl has no connector for it") if isinstance(kind, str) \
            else "it names no wrapper"
        return [], [report.add(key, "dropped", f"auxiliary model wrapper '{kind}' is not "
                               f"converted ({why}): losses that read its modules read nothing",
                               where)]
    base, build = WRAPPERS[kind]
    made = build(base, _options(entry, key), key)
    modules = [m._replace(connector=m.connector.model_copy(update={"name": unique(
        m.connector.name)})) for m in made.modules]
    findings = [report.add(key, "approximated", note, where) for note in made.approximations]
    return modules, findings


def alias(modules: List[Wrapped], path: str) -> Optional[Wrapped]:
    return next((m for m in modules if m.alias == path), None)
