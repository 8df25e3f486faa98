"""MMRazor configs (already read, bases merged) to a kdsl spec.

``model.type`` names the algorithm: SingleTeacherDistill, FpnTeacherDistill and
OverhaulFeatureDistillation become plain loss terms; SelfDistill reads its "teacher" recorders from
the student; DAFLDataFreeDistillation and DataFreeDistillation become a generator, ``input =``,
and two phases (the generator's and the student's, ``student_iter`` times). The
ConfigurableDistiller's recorders become records, its connectors connectors, its distill_losses
and loss_forward_mappings loss terms, its distill_deliveries deliveries.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from kdsl.convert.mmrazor_parts import Distiller, model_from
from kdsl.convert.mmrazor_train import convert_train
from kdsl.convert.pyconfig import Located
from kdsl.convert import values
from kdsl.convert.report import ConversionReport, Finding, Where, config_error
from kdsl.convert.spec import SpecWriter, call, identifier
from kdsl.lang import ir

SINGLE_TEACHER = ("SingleTeacherDistill", "FpnTeacherDistill", "OverhaulFeatureDistillation")
DATA_FREE = ("DAFLDataFreeDistillation", "DataFreeDistillation")
ALGORITHMS = SINGLE_TEACHER + DATA_FREE + ("SelfDistill",)
# top-level keys of runtime and evaluation that have no effect on what is distilled
RUNTIME_KEYS = ("default_scope", "default_hooks", "env_cfg", "log_processor", "log_level",
                "visualizer", "vis_backends", "val_cfg", "test_cfg", "val_dataloader",
                "test_dataloader", "val_evaluator", "test_evaluator", "find_unused_parameters",
                "resume", "auto_scale_lr", "custom_hooks", "launcher", "work_dir",
                "model_wrapper_cfg", "load_from")
# OFDDistiller is a ConfigurableDistiller whose OFD margins come from the teacher's BatchNorms
DISTILLERS = ("ConfigurableDistiller", "OFDDistiller")
# what the converter reads of the algorithm's and the distiller's dicts
ALGORITHM_KEYS = ("type", "_scope_", "architecture", "teacher", "teachers", "teacher_ckpt",
                  "teacher_trainable", "student_trainable", "calculate_student_loss",
                  "distiller", "generator",
                  "generator_distiller", "student_iter", "student_train_first")
DISTILLER_KEYS = ("type", "student_recorders", "teacher_recorders", "distill_losses",
                  "loss_forward_mappings", "connectors", "distill_deliveries")


def convert_mmrazor(cfg: Located, report: ConversionReport, title: str) -> str:
    model = cfg.get("model")
    if not isinstance(model, dict):
        raise config_error("KD765", "the config has no `model` dict: not an MMRazor "
                           "distillation config", cfg.where)
    algorithm = str(model.get("type", "")).split(".")[-1]
    if algorithm not in ALGORITHMS:
        raise config_error("KD764", f"unknown algorithm '{model.get('type')}'",
                           model.at("type"), hint="the converter knows " + ", ".join(ALGORITHMS))
    writer = SpecWriter(title)
    for finding in report.findings:  # reading the files' (bases of other packages, statements)
        writer.note(finding)
    _unread_keys(model, ALGORITHM_KEYS, "model", writer, report)
    teachers = _models(model, algorithm, writer, report)
    distiller = Distiller(writer, report, teachers)
    if algorithm in DATA_FREE:
        _data_free(model, algorithm, distiller, cfg, writer, report)
    else:
        for decl, findings in _distiller_terms(model, "model.distiller", distiller):
            writer.add("losses", decl, findings)
        _task_term(model, distiller, writer, report)
        if model.get("student_trainable") is False:  # only the connectors learn
            writer.add("procedure", ir.FreezeDecl(target=ir.ParamScope(name="student")))
        convert_train(cfg, writer, report, phase_optimizers=False)
    _runtime_keys(cfg, writer, report)
    return writer.text()


def _models(model: Located, algorithm: str, writer: SpecWriter,
            report: ConversionReport) -> Dict[str, str]:
    """Declares the student and the teachers; returns {name a source may start with: model}."""
    decl, finding = model_from(model.get("architecture"), "student", "student",
                               None, report, "model.architecture", model.at("architecture"))
    writer.add("models", decl, [finding])
    writer.unique("student")
    if algorithm == "SelfDistill":
        return {}
    if algorithm in DATA_FREE and model.get("teachers") is not None:
        found = {}
        for name, entry, where in values.items(model, "teachers", "model.teachers"):
            ident = writer.unique(identifier(name))
            decl, finding = model_from(entry.get("build_cfg"), "teacher", ident,
                                       values.string(entry, "ckpt_path"), report,
                                       f"model.teachers.{name}", where)
            writer.add("models", decl, [finding])
            found[name] = ident
        return found
    decl, finding = model_from(model.get("teacher"), "teacher", "teacher",
                               values.string(model, "teacher_ckpt", "model.teacher_ckpt"), report,
                               "model.teacher", model.at("teacher"))
    if model.get("teacher_trainable") is True:
        decl = decl.model_copy(update={"trainable": True})
    writer.add("models", decl, [finding])
    writer.unique("teacher")
    return {}


def _distiller_terms(model: Located, key: str, distiller: Distiller,
                     name: str = "distiller") -> List[Tuple[ir.LossDecl, list]]:
    if model.get(name) is None:
        raise config_error("KD765", f"the algorithm has no `{name}` dict", model.at("type"))
    config = values.mapping(model, name, key)
    kind = str(config.get("type", "ConfigurableDistiller")).split(".")[-1]
    if kind not in DISTILLERS:
        raise config_error("KD764", f"unknown distiller '{kind}'", config.at("type"),
                           hint="the converter knows " + ", ".join(DISTILLERS))
    _unread_keys(config, DISTILLER_KEYS, key, distiller.writer, distiller.report)
    return distiller.convert(config, key)


def _task_term(model: Located, distiller: Distiller, writer: SpecWriter,
               report: ConversionReport) -> None:
    """MMRazor adds the student's own losses (its head's loss config) unless
    ``calculate_student_loss=False``; kdsl writes them as cross-entropy on the student's output."""
    if model.get("calculate_student_loss", True) is False:
        return
    logits = distiller.record_of("student", "output", "")
    finding = report.add("model.calculate_student_loss", "approximated", "MMRazor adds the "
                         "student architecture's own loss; written as cross-entropy of the "
                         "student's output with the labels", model.where)
    loss = ir.LossDecl(name=writer.unique("task"), call=call(
        "cross_entropy", (ir.Name(name=logits), ir.Attr(value=ir.Name(name="batch"), attr="target"))))
    writer.add("losses", loss, [finding])


def _data_free(model: Located, algorithm: str, distiller: Distiller, cfg: Located,
               writer: SpecWriter, report: ConversionReport) -> None:
    """A generator, ``input = gen(noise(latent_dim))``, and the generator's and the student's
    phases (MMRazor's DataFreeDistillation trains the generator once, then the student
    ``student_iter`` times, unless ``student_train_first``)."""
    generator = values.mapping(model, "generator", "model.generator")
    latent = values.integer(generator, "latent_dim", 100, "model.generator.latent_dim")
    decl, finding = _generator(generator, writer, report, model.at("generator"))
    writer.add("models", decl, [finding])
    noise = call("noise", (ir.Const(value=latent),))
    writer.add("input", ir.InputDecl(value=ir.Call(func=decl.name, args=(noise,))))
    optimizers = convert_train(cfg, writer, report, phase_optimizers=True)
    student_losses = _distiller_terms(model, "model.distiller", distiller)
    generator_losses = _distiller_terms(model, "model.generator_distiller", distiller,
                                        name="generator_distiller")
    repeat = values.integer(model, "student_iter", 1, "model.student_iter")
    if algorithm == "DAFLDataFreeDistillation":
        # DAFL's step ignores student_iter: one generated batch, both updates at its end
        repeat = 1
        writer.note(report.add("model.type", "approximated", "DAFL computes the generator's and "
                               "the student's losses on one generated batch and updates both "
                               "at the end of the step; kdsl runs the two phases in turn",
                               model.at("type")))
    phases = [_phase("generate", 1, generator_losses, decl.name, optimizers.get("generator")),
              _phase("learn", repeat, student_losses, "student", optimizers.get("architecture"))]
    if model.get("student_train_first") and algorithm != "DAFLDataFreeDistillation":
        phases.reverse()
    for phase, findings in phases:
        writer.add("procedure", phase, findings)


def _generator(generator: Located, writer: SpecWriter, report: ConversionReport,
               where: Where) -> Tuple[ir.ModelDecl, Optional[Finding]]:
    """kdsl.zoo:dafl_generator for MMRazor's DAFLGenerator (its default 128 hidden channels);
    another generator type, or other options, are reported."""
    options = {k: generator[k] for k in ("latent_dim", "img_size") if k in generator}
    decl = ir.ModelDecl(role="generator", name=writer.unique("gen"), factory=ir.Factory(
        ref="kdsl.zoo:dafl_generator", kwargs=tuple(ir.Keyword(name=k, value=ir.Const(value=v))
                                                    for k, v in options.items())))
    kind = str(generator.get("type", "DAFLGenerator")).split(".")[-1]
    left = sorted(k for k in set(generator) - {"type", "latent_dim", "img_size"}
                  if not (k == "hidden_channels" and generator[k] == 128))
    finding = None
    if kind != "DAFLGenerator" or left:
        extra = f"; options {', '.join(left)} left out" if left else ""
        finding = report.add("model.generator", "approximated", f"{kind} becomes "
                             f"kdsl.zoo:dafl_generator (DAFL's architecture){extra}", where)
    return decl, finding


def _phase(name: str, repeat: int, losses: List[Tuple[ir.LossDecl, list]], target: str,
           optimizer: Optional[ir.Call]) -> Tuple[ir.PhaseDecl, list]:
    optimize = ir.OptimizeDecl(targets=(ir.ParamScope(name=target),), optimizer=optimizer)
    statements = tuple(decl for decl, _ in losses) + (optimize,)
    findings = [f for _, found in losses for f in found]
    return ir.PhaseDecl(name=name, repeat=max(1, repeat), statements=statements), findings


def _unread_keys(config: Located, known: Tuple[str, ...], key: str, writer: SpecWriter,
                 report: ConversionReport) -> None:
    """Keys of the algorithm's or distiller's dict the converter does not translate (a
    teacher_norm_eval left at its default changes nothing: kdsl's frozen teacher is in eval)."""
    for name in config:
        if name in known or (name == "teacher_norm_eval" and config[name] is True):
            continue
        reason = {"data_preprocessor": "input normalisation belongs to the data in kdsl",
                  "teacher_norm_eval": "kdsl keeps a frozen teacher in eval mode, its norms' "
                                       "statistics fixed"}.get(
                      name, "the converter does not translate it")
        writer.note(report.add(f"{key}.{name}", "dropped", reason, config.at(name)))


def _runtime_keys(cfg: Located, writer: SpecWriter, report: ConversionReport) -> None:
    present = [k for k in RUNTIME_KEYS if k in cfg]
    if present:
        writer.note(report.add(", ".join(present), "dropped", "runtime and evaluation settings "
                               "kdsl sets itself (kdsl train's flags and defaults)",
                               cfg.at(present[0])))

