"""The parts of an MMRazor config: models and the ConfigurableDistiller (recorders, connectors,
losses and their forward mappings, deliveries)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from kdsl.convert.losses import MMRAZOR
from kdsl.convert.mmrazor_connectors import OFD_MARGIN, connector_decl, ofd_margin
from kdsl.convert.pyconfig import Located
from kdsl.convert import values
from kdsl.convert.report import ConversionReport, Where, config_error
from kdsl.convert.spec import SpecWriter, call, identifier, module_path
from kdsl.convert.training import ZOO, model_decl
from kdsl.lang import ir

# MMRazor recorder type -> (what is recorded, what kind of target)
RECORDERS = {
    "ModuleOutputs": ("output", "module"), "ModuleInputs": ("input", "module"),
    "MethodOutputs": ("output", "method"), "MethodInputs": ("input", "method"),
    "FunctionOutputs": ("output", "function"), "FunctionInputs": ("input", "function"),
    "Parameter": ("param", "module"),
}


def model_from(config: Any, role: str, name: str, checkpoint: Optional[str],
               report: ConversionReport, key: str, where: Where):
    """A model declaration for an MMRazor model dict (``cfg_path=...`` or a built config)."""
    config = config if isinstance(config, dict) else {}
    arch = None
    if isinstance(config.get("cfg_path"), str):
        arch = _architecture_of(config["cfg_path"])
    elif isinstance(config.get("backbone"), dict):
        backbone = config["backbone"]
        arch = f"{backbone.get('type', '')}{backbone.get('depth', '')}".lower().replace("_cifar", "")
    elif isinstance(config.get("type"), str):
        arch = config["type"]
    head = config.get("head") if isinstance(config.get("head"), dict) else {}
    options = {"num_classes": head["num_classes"]} if "num_classes" in head else {}
    return model_decl(role, name, arch, options, checkpoint, report, key, where)


def _architecture_of(cfg_path: str) -> str:
    """The architecture a model config's file name starts with, the longest the table knows:
    'mmcls::resnet/resnet18_8xb32_in1k.py' -> 'resnet18', '.../wrn16_2_b16x8_cifar10.py' ->
    'wrn16_2'."""
    parts = os.path.splitext(os.path.basename(cfg_path.split("::")[-1]))[0].split("_")
    prefixes = ["_".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return next((p for p in prefixes if p.lower() in ZOO), parts[0])


def _dotted_ref(source: str, kind: str) -> str:
    """'pkg.mod.Class.method' -> 'pkg.mod:Class.method'; 'pkg.mod.func' -> 'pkg.mod:func'."""
    parts = source.split(".")
    cut = len(parts) - (2 if kind == "method" else 1)
    return ".".join(parts[:cut]) + ":" + ".".join(parts[cut:]) if cut > 0 else source


class Distiller:
    """Converts ConfigurableDistiller dicts; records are shared between distillers (a data-free
    algorithm's two distillers read the same layers)."""

    def __init__(self, writer: SpecWriter, report: ConversionReport, teachers: Dict[str, str]):
        self.writer, self.report, self.teachers = writer, report, teachers
        self.records: Dict[Tuple, str] = {}
        self.connectors: Dict[str, Optional[str]] = {}
        self.key = "model.distiller"  # the distiller being converted (for messages)
        self.ofd_margins: set = set()  # OFDTeacherConnector names, declared at their use
        self._targets: Dict[str, ir.ModulePath] = {}  # module output records by name

    # ---------------------------------------------------------------- records
    def record_of(self, model: str, what: str, path: str, kind: str = "module",
                  invocation: int = 0, data_idx: Optional[int] = None, label: str = "") -> str:
        key = (model, what, path, kind, invocation, data_idx if what == "input" else None)
        if key in self.records:
            return self.records[key]
        prefix = {"student": "s_"}.get(model, "t_" if model == "teacher" else model + "_")
        prefix = "" if (label or "").startswith(prefix) else prefix
        name = self.writer.unique(identifier(label or path.split(".")[-1] or "logits", prefix))
        if kind == "module":
            target = module_path(model, path)
        else:
            ref = _dotted_ref(path, kind)
            target = (ir.MethodRef if kind == "method" else ir.FunctionRef)(ref=ref, model=model)
        selector = (data_idx or 0) if what == "input" else None
        self.writer.add("records", ir.RecordDecl(name=name, what=what, target=target,
                                                 input=selector, invocation=invocation))
        self.records[key] = name
        if kind == "module" and what == "output":
            self._targets[name] = target
        return name

    def _recorded(self, mapping: Mapping[str, Any], recorders: Mapping[str, Any], from_student: bool,
                  key: str, where: Where) -> Optional[ir.Node]:
        """The expression a loss_forward_mapping entry reads, or None (reported)."""
        name = values.string(mapping, "recorder", f"{key}.recorder")
        side = "student_recorders" if from_student else "teacher_recorders"
        recorder = values.mapping(recorders, name, f"{self.key}.{side}.{name}") if name else None
        kind = RECORDERS.get(str((recorder or {}).get("type", "")).replace("Recorder", ""))
        if not recorder or kind is None:
            self.report.add(key, "dropped", f"recorder '{name}' is not declared or of an "
                            f"unknown type", where)
            return None
        what, target = kind
        source = values.string(recorder, "source", f"recorder {name}.source") or ""
        model, path = self._model_and_path(source, from_student, target)
        data_idx = values.integer(mapping, "data_idx", None, f"{key}.data_idx")
        invocation = values.integer(mapping, "record_idx", 0, f"{key}.record_idx") or 0
        record = self.record_of(model, what, path, target, invocation, data_idx, label=name)
        if what == "input" and data_idx is None:
            self.report.add(key, "approximated", "MMRazor passes the tuple of all inputs when "
                            "data_idx is not given; kdsl's record reads the first", where)
        value: ir.Node = ir.Name(name=record)
        if data_idx is not None and what == "output":
            value = ir.Item(value=value, key=data_idx)
        return value

    def _model_and_path(self, source: str, from_student: bool, target: str) -> Tuple[str, str]:
        if from_student:
            return "student", source
        if not self.teachers:
            return ("teacher", source) if "teacher" in self.writer.names else ("student", source)
        head, _, rest = source.partition(".")
        if target == "module" and head in self.teachers:
            return self.teachers[head], rest
        return next(iter(self.teachers.values())), source

    # ---------------------------------------------------------------- connectors, losses
    def convert(self, config: Located, key: str) -> List[Tuple[ir.LossDecl, list]]:
        """The distiller's loss terms, each with its findings (records, connectors and
        deliveries are written as they are met)."""
        self.key = key
        for name, entry, where in values.items(config, "connectors", f"{key}.connectors"):
            decl, finding = connector_decl(name, entry, self.writer, self.report,
                                           f"{key}.connectors.{name}", where)
            self.connectors[name] = decl.name if decl is not None else None
            if str(entry.get("type", "")).endswith(OFD_MARGIN):
                self.ofd_margins.add(name)
            elif decl is not None:
                self.writer.add("connectors", decl, [finding])
            else:
                self.writer.note(finding)
        self._deliveries(config, key)
        losses = []
        mappings = values.mapping(config, "loss_forward_mappings", f"{key}.loss_forward_mappings")
        for name, entry, where in values.items(config, "distill_losses", f"{key}.distill_losses"):
            start = len(self.report.findings)
            mapping = values.mapping(mappings, name, f"{key}.loss_forward_mappings.{name}")
            decl = self._loss(name, entry, mapping, config, f"{key}.distill_losses.{name}", where)
            found = self.report.findings[start:]  # the term's, its records' and connectors'
            if decl is not None:
                losses.append((decl, found))
            else:
                for finding in found:
                    self.writer.note(finding)
        return losses

    def _loss(self, name: str, entry: Mapping[str, Any], mapping: Mapping[str, Any],
              config: Located, key: str, where: Where) -> Optional[ir.LossDecl]:
        kind = str(entry.get("type", "")).split(".")[-1]
        form = MMRAZOR.get(kind)
        if form is None:
            self.report.add(key, "dropped", f"loss '{kind}' has no kdsl form in the converter's "
                            "table", where)
            return None
        options, unknown = form.options(entry)
        if unknown:
            self.report.add(key, "approximated", f"options {', '.join(unknown)} of {kind} have no "
                            "kdsl equivalent", where)
        if form.note:
            self.report.add(key, "approximated", form.note, where)
        args = [self._argument(arg, mapping, config, f"{key}.{arg}", where) for arg in form.inputs]
        weight = entry.get("loss_weight", form.default_weight)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise config_error("KD760", f"'{key}.loss_weight' must be a number", where)
        weight = weight * form.scale if form.scale != 1 else weight
        decl = ir.LossDecl(name=self.writer.unique(identifier(name)),
                           call=call(form.loss, [a for a in args if a is not None], **options),
                           weight=None if weight == 1 else ir.Const(value=weight))
        return decl if all(a is not None for a in args) else None

    def _argument(self, arg: str, mapping: Mapping[str, Any], config: Located, key: str,
                  where: Where) -> Optional[ir.Node]:
        if mapping.get(arg) is None:
            if arg in ("gt_labels", "label"):
                return ir.Attr(value=ir.Name(name="batch"), attr="target")
            self.report.add(key, "dropped", f"no loss_forward_mapping for '{arg}'", where)
            return None
        entry = values.mapping(mapping, arg, key)
        from_student = entry.get("from_student", True) is not False
        side = "student_recorders" if from_student else "teacher_recorders"
        value = self._recorded(entry, values.mapping(config, side, f"{self.key}.{side}"),
                               from_student, key, where)
        connector = values.string(entry, "connector", f"{key}.connector")
        if value is not None and connector in self.ofd_margins:
            applied = self._ofd_margin(connector, value, from_student, key, where)
            value = value if applied is None else ir.Call(func=applied, args=(value,))
        elif value is not None and connector:
            applied = self.connectors.get(connector)
            if applied is None:
                self.report.add(key, "dropped", f"connector '{connector}' was not converted; "
                                "the record is used as it is", where)
            else:
                value = ir.Call(func=applied, args=(value,))
        return value

    def _ofd_margin(self, name: str, value: ir.Node, from_student: bool, key: str,
                    where: Where) -> Optional[str]:
        """The OFD margin connector ``name``, on the teacher BatchNorm whose output ``value``
        records (declared at its first use)."""
        if self.connectors.get(name):
            return self.connectors[name]
        target = self._targets.get(value.name) if isinstance(value, ir.Name) else None
        if from_student or target is None:
            self.report.add(key, "dropped", f"OFD margin '{name}' needs a recorded teacher "
                            "BatchNorm's output", where)
            return None
        decl = ofd_margin(name, target, self.writer)
        self.writer.add("connectors", decl)
        self.connectors[name] = decl.name
        return decl.name

    def _deliveries(self, config: Located, key: str) -> None:
        entries = config.get("distill_deliveries")
        if isinstance(entries, dict) and "type" not in entries:  # a dict of named deliveries
            entries = list(entries.values())
        entries = values.as_list(entries, f"{key}.distill_deliveries",
                                 config.at("distill_deliveries"))
        for entry in entries:
            where = getattr(entry, "where", None) or config.at("distill_deliveries")
            entry = entry if isinstance(entry, dict) else {}
            kind = str(entry.get("type", "")).replace("Delivery", "")
            path = entry.get("method_path") or entry.get("func_path") or ""
            keep = values.integer(entry, "max_keep_data", None, f"{key}.distill_deliveries")
            if kind not in ("MethodOutputs", "FunctionOutputs") or not isinstance(path, str) or not path:
                self.writer.note(self.report.add(f"{key}.distill_deliveries", "dropped",
                                                 f"delivery '{entry.get('type')}' has no kdsl "
                                                 "equivalent", where))
                continue
            target_kind = "method" if kind == "MethodOutputs" else "function"
            ref = _dotted_ref(path, target_kind)
            target = (ir.MethodRef if target_kind == "method" else ir.FunctionRef)(ref=ref)
            teacher = "teacher" if "teacher" in self.writer.names else "student"
            self.writer.add("deliveries", ir.DeliverDecl(target=target, source=teacher,
                                                         dest="student",
                                                         keep=keep))
