"""torchdistill YAML (read by the safe loader) to a kdsl spec.

``models`` give the student and teacher (``key``, ``kwargs.num_classes``, ``src_ckpt``); each
``train`` stage (``stage1``, ``stage2``, ... or the ``train`` mapping itself) gives a kdsl stage
with its epochs, losses (a ``WeightedSumLoss``'s ``sub_terms``, or the older
``GeneralizedCustomLoss``), ``frozen_modules``, and optimizer. Records are the layers the losses
read (the ``forward_hook`` entries); the first stage's optimizer, scheduler and the data loader's
batch size go to the train block.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from kdsl.convert.losses import TORCHDISTILL
from kdsl.convert.torchdistill_losses import EXPANDED
from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport, Where, config_error
from kdsl.convert.spec import SpecWriter, call, expr, identifier, module_path
from kdsl.convert.training import model_decl, optimizer_call, schedule_call, setting
from kdsl.lang import ir

_BATCH_TARGET = ir.Attr(value=ir.Name(name="batch"), attr="target")


def _get(d: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present (torchdistill 1.x ``key``/``kwargs``, 0.x ``type``/``params``)."""
    return next((d[k] for k in keys if isinstance(d, dict) and k in d), None)


def convert_torchdistill(cfg: Located, report: ConversionReport, title: str) -> str:
    models, train = cfg.get("models"), cfg.get("train")
    if not isinstance(models, dict) or not isinstance(train, dict):
        raise config_error("KD765", "the YAML has no `models` and `train` mappings: not a "
                           "torchdistill config", cfg.where)
    writer = SpecWriter(title)
    converter = _Converter(writer, report)
    converter.models(models)
    stages = [(k, v) for k, v in train.items() if k.startswith("stage") and isinstance(v, dict)]
    if not stages:
        converter.stage_terms(train, "train", train.where)
        for decl, findings in converter.pending:
            writer.add("losses", decl, findings)
    else:
        for name, stage in stages:
            converter.pending = []
            converter.stage_terms(stage, f"train.{name}", train.at(name))
            extras, findings = converter.stage_extras(stage, name, later=name != stages[0][0])
            body = [d for d, _ in converter.pending] + extras
            findings += [f for _, found in converter.pending for f in found]
            epochs = stage.get("num_epochs")
            writer.add("procedure", ir.StageDecl(name=identifier(name), epochs=epochs,
                                                 statements=tuple(body)), findings)
    converter.train_block(train, stages)
    if "datasets" in cfg:
        writer.note(report.add("datasets", "dropped", "datasets are not converted: set "
                               "`data = dataset(...)` or --data", cfg.at("datasets")))
    return writer.text()


class _Converter:
    def __init__(self, writer: SpecWriter, report: ConversionReport) -> None:
        self.writer, self.report = writer, report
        self.records: Dict[Tuple[str, str, str], str] = {}
        self.pending: List[Tuple[ir.LossDecl, list]] = []

    def models(self, models: Located) -> None:
        for role in ("student", "teacher"):
            entry = _get(models, f"{role}_model", role)
            if not isinstance(entry, dict):
                if role == "student":
                    raise config_error("KD765", "models has no student_model", models.where)
                continue
            kwargs = _get(entry, "kwargs", "params") or {}
            arch = _get(entry, "key", "name")
            checkpoint = entry.get("src_ckpt") if isinstance(entry.get("src_ckpt"), str) else None
            decl, finding = model_decl(role, role, arch if isinstance(arch, str) else None,
                                       kwargs, checkpoint, self.report, f"models.{role}_model",
                                       models.at(f"{role}_model"))
            self.writer.add("models", decl, [finding])
            self.writer.unique(role)

    # ---------------------------------------------------------------- records
    def record(self, model: str, path: str, io: str) -> ir.Node:
        """The record of ``path``'s ``io`` (``output``/``input``) in ``model`` ('.' or ''
        is the model's own output)."""
        path = "" if path in (".", None) else str(path)
        for prefix in (f"{model}_model.", "model."):
            path = path[len(prefix):] if path.startswith(prefix) else path
        key = (model, path, io)
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
        criterion = stage.get("criterion")
        if not isinstance(criterion, dict):
            self.report.add(f"{key}.criterion", "dropped", "no criterion", where)
            return
        kind = _get(criterion, "key", "type")
        sub_terms = _get(_get(criterion, "kwargs", "params") or {}, "sub_terms") or \
            criterion.get("sub_terms")
        if kind not in ("WeightedSumLoss", "GeneralizedCustomLoss") or not isinstance(sub_terms, dict):
            self.report.add(f"{key}.criterion", "dropped", f"criterion '{kind}' has no kdsl "
                            "equivalent (the converter reads WeightedSumLoss sub_terms)",
                            stage.at("criterion"))
            return
        for name, term in sub_terms.items():
            self.term(name, term, f"{key}.criterion.sub_terms.{name}", sub_terms.at(name))

    def term(self, name: str, term: Any, key: str, where: Where) -> None:
        criterion = term.get("criterion") if isinstance(term, dict) else None
        kind = _get(criterion or {}, "key", "type")
        weight = _get(term, "weight", "factor") if isinstance(term, dict) else None
        weight = 1 if weight is None else weight
        if kind in EXPANDED:
            self._expanded(name, kind, dict(_get(criterion, "kwargs", "params") or {}), weight,
                           key, where)
            return
        form = TORCHDISTILL.get(kind) if isinstance(kind, str) else None
        if form is None:
            self.report.add(key, "dropped", f"loss '{kind}' has no kdsl form in the converter's "
                            "table", where)
            return
        kwargs = dict(_get(criterion, "kwargs", "params") or {})
        wrapper = term.get("criterion_wrapper")
        args = self._wrapped_args(wrapper) if isinstance(wrapper, dict) else self._path_args(kwargs)
        for option in ("student_module_path", "student_module_io", "teacher_module_path",
                       "teacher_module_io"):
            kwargs.pop(option, None)
        options, unknown = form.options(kwargs)
        findings = [self.report.add(key, "approximated", f"options {', '.join(unknown)} of "
                                    f"{kind} have no kdsl equivalent", where) if unknown else None]
        decl = ir.LossDecl(name=self.writer.unique(identifier(name)),
                           call=call(form.loss, args[:len(form.inputs)], **options),
                           weight=None if weight == 1 else ir.Const(value=weight))
        self.pending.append((decl, findings))

    def _expanded(self, name: str, kind: str, kwargs: Mapping[str, Any], weight: float, key: str,
                  where: Where) -> None:
        """A loss that is several kdsl terms (layer pairs, RKD's two factors)."""
        expand, known = EXPANDED[kind]
        unknown = sorted(set(kwargs) - set(known))
        finding = self.report.add(key, "approximated", f"options {', '.join(unknown)} of {kind} "
                                  "have no kdsl equivalent", where) if unknown else None
        for suffix, loss, student, teacher, options, factor in expand(kwargs):
            args = [self.record("student", *student), self.record("teacher", *teacher)]
            total = weight * factor
            decl = ir.LossDecl(name=self.writer.unique(identifier(name + suffix)),
                               call=call(loss, args, **options),
                               weight=None if total == 1 else ir.Const(value=total))
            self.pending.append((decl, [finding]))
            finding = None

    def _path_args(self, kwargs: Mapping[str, Any]) -> List[ir.Node]:
        student = self.record("student", kwargs.get("student_module_path", "."),
                              kwargs.get("student_module_io", "output"))
        teacher = self.record("teacher", kwargs.get("teacher_module_path", "."),
                              kwargs.get("teacher_module_io", "output"))
        return [student, teacher, _BATCH_TARGET]

    def _wrapped_args(self, wrapper: Mapping[str, Any]) -> List[ir.Node]:
        """SimpleLossWrapper's ``input`` and ``target`` entries."""
        kwargs = _get(wrapper, "kwargs", "params") or {}
        return [self._wrapped(kwargs.get("input") or {}), self._wrapped(kwargs.get("target") or {})]

    def _wrapped(self, entry: Mapping[str, Any]) -> ir.Node:
        if entry.get("uses_label"):
            return _BATCH_TARGET
        model = "teacher" if entry.get("is_from_teacher") else "student"
        return self.record(model, entry.get("module_path", "."), entry.get("io", "output"))

    def stage_extras(self, stage: Located, name: str, later: bool) -> Tuple[List[ir.Node], list]:
        """``freeze`` for the student's frozen_modules, and for a stage after the first
        ``optimize student with ...`` for its own optimizer (the first stage's is the run's)."""
        out: List[ir.Node] = []
        findings: List[Any] = []
        student = stage.get("student") if isinstance(stage.get("student"), dict) else Located()
        for path in student.get("frozen_modules") or []:
            out.append(ir.FreezeDecl(target=ir.ParamScope(name="student", path=tuple(
                p for p in str(path).split(".") if p))))
        for part in ("sequential", "auxiliary_model_wrapper", "adaptations"):
            if student.get(part):
                findings.append(self.report.add(
                    f"train.{name}.student.{part}", "dropped", "student-side modules "
                    "(connectors, paraphrasers, regressors) change the student's module paths: "
                    "declare them as kdsl connectors by hand", student.at(part)))
        made = self.optimizer(stage, f"train.{name}.optimizer", findings) if later else None
        if made is not None:
            out.append(ir.OptimizeDecl(targets=(ir.ParamScope(name="student"),), optimizer=made))
        if later and isinstance(stage.get("scheduler"), dict):
            findings.append(self.report.add(f"train.{name}.scheduler", "approximated", "kdsl has "
                                            "one lr schedule per run: the first stage's",
                                            stage.at("scheduler")))
        return out, findings

    # ---------------------------------------------------------------- train block
    def train_block(self, train: Located, stages: List[Tuple[str, Located]]) -> None:
        """The run's settings from the first stage (or ``train`` itself); the run's epochs are
        the stages' sum."""
        first = stages[0][1] if stages else train
        settings: List[ir.TrainSetting] = []
        findings: List[Any] = []
        counts = [stage.get("num_epochs") for _, stage in stages]
        epochs = sum(counts) if stages and all(isinstance(n, int) for n in counts) else \
            train.get("num_epochs")
        if isinstance(epochs, int):
            settings.append(setting("epochs", expr(epochs)))
        made = self.optimizer(first, "train.optimizer" if first is train else
                              f"train.{stages[0][0]}.optimizer", findings)
        if made is not None:
            settings.append(setting("optimizer", made))
        if isinstance(first.get("scheduler"), dict):
            schedule = self._scheduler(first["scheduler"], epochs, first.at("scheduler"), findings)
            if schedule is not None:
                settings.append(setting("lr_schedule", schedule))
        if first.get("max_grad_norm") is not None:
            settings.append(setting("grad_clip", expr(float(first["max_grad_norm"]))))
        loader = first.get("train_data_loader") if isinstance(first.get("train_data_loader"), dict) else {}
        size = (_get(loader, "kwargs", "params") or {}).get("batch_size", loader.get("batch_size"))
        if size is not None:
            settings.append(setting("batch_size", expr(size)))
        if settings:
            self.writer.add("train", ir.TrainDecl(settings=tuple(settings)), findings)

    def optimizer(self, stage: Located, key: str, findings: List[Any]) -> Optional[ir.Call]:
        optimizer = stage.get("optimizer")
        if not isinstance(optimizer, dict):
            return None
        made, finding = optimizer_call(str(_get(optimizer, "key", "type")),
                                       _get(optimizer, "kwargs", "params") or {}, self.report,
                                       key, stage.at("optimizer"))
        findings.append(finding)
        return made

    def _scheduler(self, scheduler: Located, epochs: Optional[int], where: Where,
                   findings: List[Any]) -> Optional[ir.Call]:
        kind = str(_get(scheduler, "key", "type"))
        if scheduler.get("scheduling_step", 0) not in (0, 1, None):
            findings.append(self.report.add("train.scheduler.scheduling_step", "approximated",
                                            "torchdistill steps this scheduler every few "
                                            "iterations; kdsl per epoch", where))
        made, finding = schedule_call(kind, _get(scheduler, "kwargs", "params") or {}, epochs,
                                      self.report, "train.scheduler", where)
        findings.append(finding)
        return made


