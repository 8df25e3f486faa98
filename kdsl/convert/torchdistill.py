"""torchdistill YAML (read by the safe loader) to a kdsl spec.

``models`` give the student and teacher (``key``, ``kwargs.num_classes``, ``src_ckpt``); each
``train`` stage (``stage1``, ``stage2``, ... or the ``train`` mapping itself) gives a kdsl stage
with its epochs, losses (a ``WeightedSumLoss``'s ``sub_terms``, or the older
``GeneralizedCustomLoss``), ``frozen_modules``, and optimizer. Records are the layers the losses
read (the ``forward_hook`` entries); the first stage's optimizer, scheduler and the data loader's
batch size go to the train block. The models' ``auxiliary_model_wrapper`` modules are
connectors (``torchdistill_wrappers``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from kdsl.convert import values
from kdsl.convert.losses import TD_PATH_OPTIONS, TORCHDISTILL
from kdsl.convert.torchdistill_losses import EXPANDED, TARGETS
from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport, Where, config_error
from kdsl.convert.spec import SpecWriter, call, identifier, module_path
from kdsl.convert.torchdistill_train import get as _get
from kdsl.convert.torchdistill_train import options as _options
from kdsl.convert.torchdistill_train import stage_optimizer, train_block
from kdsl.convert.torchdistill_wrappers import Wrapped, alias, wrapper_modules
from kdsl.convert.training import model_decl
from kdsl.lang import ir

# evaluation and logging: kdsl train has its own
RUNTIME_KEYS = ("test",)
TRAIN_RUNTIME_KEYS = ("log_freq", "val_data_loader", "eval_metrics")
_BATCH_TARGET = ir.Attr(value=ir.Name(name="batch"), attr="target")


def _architecture(entry: Located, options: Located) -> Optional[str]:
    """The model's name in the table: its ``key``, or for torchdistill's generic
    ``wide_resnet`` the name its depth and width give (``wide_resnet40_2``)."""
    arch = _get(entry, "key", "name")
    if arch == "wide_resnet" and "depth" in options and "k" in options:
        return f"wide_resnet{options['depth']}_{options['k']}"
    return arch if isinstance(arch, str) else None


def _runtime_keys(cfg: Located, train: Located, writer: SpecWriter,
                  report: ConversionReport) -> None:
    present = [k for k in RUNTIME_KEYS if k in cfg] + [f"train.{k}" for k in TRAIN_RUNTIME_KEYS
                                                       if k in train]
    if present:
        writer.note(report.add(", ".join(present), "dropped", "evaluation and logging settings "
                               "kdsl sets itself (kdsl train's flags and defaults)",
                               cfg.at(present[0]) if present[0] in cfg else train.at(present[0][6:])))


def convert_torchdistill(cfg: Located, report: ConversionReport, title: str) -> str:
    models, train = cfg.get("models"), cfg.get("train")
    if not isinstance(models, dict) or not isinstance(train, dict):
        raise config_error("KD765", "the YAML has no `models` and `train` mappings: not a "
                           "torchdistill config", cfg.where)
    writer = SpecWriter(title)
    converter = _Converter(writer, report)
    converter.models(models)
    stages = [(k, v) for k, v in train.items() if k.startswith("stage") and isinstance(v, dict)]
    if stages:
        _staged(converter, stages, train)
    else:
        _single(converter, train)
    train_block(train, stages, writer, report)
    _runtime_keys(cfg, train, writer, report)
    if "datasets" in cfg:
        writer.note(report.add("datasets", "dropped", "datasets are not converted: set "
                               "`data = dataset(...)` or --data", cfg.at("datasets")))
    return writer.text()


def _single(converter: "_Converter", train: Located) -> None:
    """A config without stages: its terms at the top level, freeze/optimize beside them."""
    writer = converter.writer
    converter.adaptations(train, "train")
    converter.stage_terms(train, "train", train.where)
    for decl, findings in converter.pending:
        writer.add("losses", decl, findings)
    extras, findings = converter.stage_extras(train, "train", later=False)
    for extra in extras:
        writer.add("procedure", extra, findings)
        findings = []
    for finding in findings:
        writer.note(finding)


def _staged(converter: "_Converter", stages: List[Tuple[str, Located]], train: Located) -> None:
    """``stage1``, ``stage2``, ...: one kdsl stage each, with its epochs."""
    for name, stage in stages:
        converter.pending = []
        converter.adaptations(stage, f"train.{name}")
        converter.stage_terms(stage, f"train.{name}", train.at(name))
        extras, findings = converter.stage_extras(stage, name, later=name != stages[0][0])
        body = [d for d, _ in converter.pending] + extras
        findings += [f for _, found in converter.pending for f in found]
        epochs = values.integer(stage, "num_epochs", None, f"train.{name}.num_epochs")
        converter.writer.add("procedure", ir.StageDecl(name=identifier(name), epochs=epochs,
                                                       statements=tuple(body)), findings)


def _factor_paths(kwargs: Dict[str, Any]) -> None:
    """FTLoss reads the translator's and the paraphraser's outputs by paths of its own, and
    for ``p=2`` the p-norm of each sample's difference (kdsl's ``distance="norm"``)."""
    kwargs["student_module_path"] = kwargs.pop("translator_path", "translator")
    kwargs["teacher_module_path"] = kwargs.pop("paraphraser_path", "paraphraser")
    if kwargs.get("p") == 2:
        kwargs["distance"] = "norm"


class _Converter:
    def __init__(self, writer: SpecWriter, report: ConversionReport) -> None:
        self.writer, self.report = writer, report
        self.records: Dict[Tuple[str, str, str], str] = {}
        self.pending: List[Tuple[ir.LossDecl, list]] = []
        self.sequential: List[str] = []
        self.adapted: Dict[str, Optional[str]] = {}
        self.wrapped: Dict[str, List[Wrapped]] = {}

    def models(self, models: Located) -> None:
        for role in ("student", "teacher"):
            key = f"{role}_model" if f"{role}_model" in models else role
            entry = values.mapping(models, key, f"models.{key}")
            if not entry:
                if role == "student":
                    raise config_error("KD765", "models has no student_model", models.where)
                continue
            options = _options(entry, f"models.{key}")
            # torchdistill 0.x: one `ckpt` to load (the teacher's) and to save (the student's)
            checkpoint = values.string(entry, "src_ckpt", f"models.{key}.src_ckpt") or (
                values.string(entry, "ckpt", f"models.{key}.ckpt") if role == "teacher" else None)
            decl, finding = model_decl(role, role, _architecture(entry, options), options,
                                       checkpoint, self.report, f"models.{key}", models.at(key))
            self.writer.add("models", decl, [finding])
            self.writer.unique(role)

    # ---------------------------------------------------------------- records
    # ---------------------------------------------------------------- student adaptations
    def adaptations(self, stage: Located, key: str) -> None:
        """The student's ``adaptations`` (modules torchdistill adds, named ``+NAME`` in
        ``sequential`` and in module paths) as connectors, and its ``sequential`` (the modules
        this stage runs and trains)."""
        student = values.mapping(stage, "student", f"{key}.student")
        self.sequential = [str(m) for m in values.sequence(student, "sequential",
                                                           f"{key}.student.sequential")]
        self.adapted: Dict[str, Optional[str]] = {}
        for name, entry, where in values.items(student, "adaptations", f"{key}.student.adaptations"):
            kind = _get(entry, "key", "type")
            options = _options(entry, f"{key}.student.adaptations.{name}")
            if kind != "ConvReg":
                self.writer.note(self.report.add(f"{key}.student.adaptations.{name}", "dropped",
                                                 f"adaptation '{kind}' has no kdsl connector",
                                                 where))
                self.adapted[name] = None
                continue
            decl = ir.ConnectorDecl(name=self.writer.unique(identifier(name)), call=call(
                "conv_bn", in_channels=options.get("num_input_channels"),
                out_channels=options.get("num_output_channels"),
                kernel_size=options.get("kernel_size"), stride=options.get("stride"),
                padding=options.get("padding"), bias=True,
                act="relu" if options.get("uses_relu", True) else "none"))
            self.writer.add("connectors", decl)
            self.adapted[name] = decl.name
        self.wrappers(stage, key)

    def wrappers(self, stage: Located, key: str) -> None:
        """Each model's ``auxiliary_model_wrapper`` as connectors its module paths name."""
        self.wrapped = {}
        for role in ("student", "teacher"):
            model = values.mapping(stage, role, f"{key}.{role}")
            entry = values.mapping(model, "auxiliary_model_wrapper",
                                   f"{key}.{role}.auxiliary_model_wrapper")
            if not entry:
                continue
            modules, findings = wrapper_modules(entry, f"{key}.{role}.auxiliary_model_wrapper",
                                                model.at("auxiliary_model_wrapper"),
                                                self.writer.unique, self.report)
            self.wrapped[role] = modules
            for module in modules:
                self.writer.add("connectors", module.connector, findings)
                findings = []
            for finding in findings:
                self.writer.note(finding)

    def _adapted(self, path: str, io: Any) -> ir.Node:
        """``+NAME``: the adaptation applied to the output of the module before it in
        ``sequential``."""
        name = path[1:]
        position = self.sequential.index(path) if path in self.sequential else len(self.sequential)
        before = [m for m in self.sequential[:position] if not m.startswith("+")]
        source = self.record("student", before[-1] if before else ".", "output")
        connector = self.adapted.get(name)
        if connector is None:
            self.report.add(f"student.{path}", "dropped", f"adaptation '{name}' is not converted: "
                            "its input is used as it is", None)
            return source
        return ir.Call(func=connector, args=(source,))

    def record(self, model: str, path: Any, io: Any) -> ir.Node:
        """The record of ``path``'s ``io`` (``output``/``input``) in ``model`` ('.' or ''
        is the model's own output); ``+NAME`` is an adaptation's output."""
        path = "" if path in (".", None) else str(path)
        if model == "student" and path.startswith("+"):
            return self._adapted(path, io)
        for prefix in (f"{model}_model.", "model."):
            path = path[len(prefix):] if path.startswith(prefix) else path
        module = alias(self.wrapped.get(model, []), path)
        if module is not None:  # a wrapper's module: its connector on the record it reads
            return ir.Call(func=module.connector.name,
                           args=(self.record(model, module.source, module.io),))
        key = (model, path, str(io))
        if key not in self.records:
            label = path.split(".")[-1] if path else "logits"
            name = self.writer.unique(identifier(label, "s_" if model == "student" else "t_"))
            what = "input" if io == "input" else "output"
            self.writer.add("records", ir.RecordDecl(name=name, what=what,
                                                     target=module_path(model, path)))
            self.records[key] = name
        return ir.Name(name=self.records[key])

    # ---------------------------------------------------------------- losses
    def stage_terms(self, stage: Located, key: str, where: Where) -> None:
        """The stage's criterion as loss terms in ``pending``; a term that is dropped has its
        findings in the spec's header."""
        criterion = values.mapping(stage, "criterion", f"{key}.criterion")
        if not criterion:
            self.writer.note(self.report.add(f"{key}.criterion", "dropped", "no criterion", where))
            return
        kind = _get(criterion, "key", "type")
        options = _options(criterion, f"{key}.criterion")
        container = options if "sub_terms" in options else criterion
        if kind not in ("WeightedSumLoss", "GeneralizedCustomLoss") or "sub_terms" not in container:
            self.writer.note(self.report.add(
                f"{key}.criterion", "dropped", f"criterion '{kind}' has no kdsl equivalent (the "
                "converter reads WeightedSumLoss's sub_terms)", stage.at("criterion")))
            return
        terms = list(values.items(container, "sub_terms", f"{key}.criterion.sub_terms"))
        org = values.mapping(criterion, "org_term", f"{key}.criterion.org_term")
        if org.get("criterion") is not None:  # GeneralizedCustomLoss: the student's task loss
            terms.insert(0, ("task", Located(org, where=org.where), criterion.at("org_term")))
        for name, term, term_where in terms:
            start, before = len(self.report.findings), len(self.pending)
            self.term(name, term, f"{key}.criterion.sub_terms.{name}", term_where)
            found = self.report.findings[start:]
            if len(self.pending) == before:
                for finding in found:
                    self.writer.note(finding)
            else:
                decl, _ = self.pending[before]
                self.pending[before] = (decl, found)

    def term(self, name: str, term: Located, key: str, where: Where) -> None:
        criterion = values.mapping(term, "criterion", f"{key}.criterion")
        kind = _get(criterion, "key", "type")
        weight = _get(term, "weight", "factor")
        weight = 1 if weight is None else weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise config_error("KD760", f"'{key}.weight' must be a number", where)
        kwargs = dict(_options(criterion, f"{key}.criterion"))
        if kind in EXPANDED:
            self._expanded(name, kind, kwargs, weight, key, where)
            return
        form = TORCHDISTILL.get(kind) if isinstance(kind, str) else None
        if form is None:
            self.report.add(key, "dropped", f"loss '{kind}' has no kdsl form in the converter's "
                            "table", where)
            return
        if kind == "FTLoss":
            _factor_paths(kwargs)
        wrapper = values.mapping(term, "criterion_wrapper", f"{key}.criterion_wrapper")
        args = self._wrapped_args(wrapper, key) if wrapper else self._path_args(kwargs)
        for option in TD_PATH_OPTIONS:
            kwargs.pop(option, None)
        options, unknown = form.options(kwargs)
        if unknown:
            self.report.add(key, "approximated", f"options {', '.join(unknown)} of {kind} have no "
                            "kdsl equivalent", where)
        decl = ir.LossDecl(name=self.writer.unique(identifier(name)),
                           call=call(form.loss, args[:len(form.inputs)], **options),
                           weight=None if weight == 1 else ir.Const(value=weight))
        self.pending.append((decl, []))

    def _expanded(self, name: str, kind: str, kwargs: Mapping[str, Any], weight: float, key: str,
                  where: Where) -> None:
        """A loss that is several kdsl terms (layer pairs, RKD's two factors)."""
        expand, known = EXPANDED[kind]
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            self.report.add(key, "approximated", f"options {', '.join(unknown)} of {kind} have no "
                            "kdsl equivalent", where)
        for pairs in ("at_pairs", "feature_pairs"):  # each pair and side must be a mapping
            for name, pair, _ in values.items(Located(kwargs, where=where), pairs, f"{key}.{pairs}"):
                for side in ("student", "teacher"):
                    values.mapping(pair, side, f"{key}.{pairs}.{name}.{side}")
        for suffix, loss, arguments, options, factor in expand(kwargs):
            args = [_BATCH_TARGET if a == TARGETS else self.record(*a) for a in arguments]
            total = weight * factor
            decl = ir.LossDecl(name=self.writer.unique(identifier(name + suffix)),
                               call=call(loss, args, **options),
                               weight=None if total == 1 else ir.Const(value=total))
            self.pending.append((decl, []))

    def _path_args(self, kwargs: Mapping[str, Any]) -> List[ir.Node]:
        student = self.record("student", kwargs.get("student_module_path", "."),
                              kwargs.get("student_module_io", "output"))
        teacher = self.record("teacher", kwargs.get("teacher_module_path", "."),
                              kwargs.get("teacher_module_io", "output"))
        return [student, teacher, _BATCH_TARGET]

    def _wrapped_args(self, wrapper: Located, key: str) -> List[ir.Node]:
        """SimpleLossWrapper's ``input`` and ``target`` entries."""
        kwargs = _options(wrapper, f"{key}.criterion_wrapper")
        return [self._wrapped(values.mapping(kwargs, part, f"{key}.criterion_wrapper.{part}"))
                for part in ("input", "target")]

    def _wrapped(self, entry: Mapping[str, Any]) -> ir.Node:
        if entry.get("uses_label"):
            return _BATCH_TARGET
        model = "teacher" if entry.get("is_from_teacher") else "student"
        return self.record(model, entry.get("module_path", "."), entry.get("io", "output"))

    def stage_extras(self, stage: Located, name: str, later: bool) -> Tuple[List[ir.Node], list]:
        """``freeze`` for the student's frozen_modules; ``optimize`` for the modules its
        ``sequential`` runs (with the adaptations), and for a stage after the first ``with`` its
        own optimizer (the first stage's is the run's)."""
        out: List[ir.Node] = []
        findings: List[Any] = []
        student = values.mapping(stage, "student", f"train.{name}.student")
        frozen = values.sequence(student, "frozen_modules", f"train.{name}.student.frozen_modules")
        for path in frozen:
            out.append(ir.FreezeDecl(target=ir.ParamScope(name="student", path=tuple(
                p for p in str(path).split(".") if p))))
        made = stage_optimizer(stage, f"train.{name}.optimizer", self.report, findings) if later \
            else None
        targets = [self._scope(m) for m in self.sequential
                   if not (m.startswith("+") and self.adapted.get(m[1:]) is None)]
        if made is not None or targets:
            out.append(ir.OptimizeDecl(targets=tuple(targets) or (ir.ParamScope(name="student"),),
                                       optimizer=made))
        if later and values.mapping(stage, "scheduler", f"train.{name}.scheduler"):
            findings.append(self.report.add(f"train.{name}.scheduler", "approximated", "kdsl has "
                                            "one lr schedule per run: the first stage's",
                                            stage.at("scheduler")))
        return out, findings

    def _scope(self, module: str) -> ir.ParamScope:
        if module.startswith("+"):
            return ir.ParamScope(name=self.adapted[module[1:]])
        return ir.ParamScope(name="student", path=tuple(p for p in module.split(".") if p))
