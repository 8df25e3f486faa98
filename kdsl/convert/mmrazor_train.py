"""An MMRazor config's training schedule as the spec's train block: ``train_cfg`` (epochs, or
``max_iters`` for a generated input), ``optim_wrapper`` (one optimizer, or an OptimWrapperDict's
per phase), ``param_scheduler`` (a LinearLR warmup joins the main schedule), the training data
loader's batch size and ``randomness.seed``. Every finding is a comment above the block."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport
from kdsl.convert.spec import SpecWriter, expr
from kdsl.convert.training import optimizer_call, schedule_call, setting
from kdsl.lang import ir


class TrainBlock:
    def __init__(self, cfg: Located, report: ConversionReport) -> None:
        self.cfg, self.report = cfg, report
        self.settings: List[ir.TrainSetting] = []
        self.findings: List[Any] = []

    def set(self, key: str, value: ir.Node) -> None:
        self.settings.append(setting(key, value))

    def note(self, finding: Any) -> None:
        if finding is not None:
            self.findings.append(finding)

    def epochs(self, generated_input: bool) -> Optional[int]:
        loop = self.cfg.get("train_cfg") if isinstance(self.cfg.get("train_cfg"), dict) else Located()
        if "max_epochs" in loop:
            self.set("epochs", expr(int(loop["max_epochs"])))
            return int(loop["max_epochs"])
        if "max_iters" in loop and generated_input:
            # a generated input has no data to count epochs by: one epoch of max_iters steps
            self.set("epochs", expr(1))
            self.set("steps_per_epoch", expr(int(loop["max_iters"])))
            return 1
        if "max_iters" in loop:
            self.note(self.report.add("train_cfg.max_iters", "dropped", "an iteration-based "
                                      "loop: kdsl counts epochs (set epochs and steps_per_epoch)",
                                      loop.at("max_iters")))
        elif generated_input:
            self.note(self.report.add("train_cfg", "approximated", "no max_iters: "
                                      "steps_per_epoch = 100 is assumed for the generated input",
                                      loop.where or self.cfg.where))
            self.set("steps_per_epoch", expr(100))
        return None

    def optimizer(self) -> None:
        wrapper = self.cfg.get("optim_wrapper")
        if not isinstance(wrapper, dict):
            return
        optimizer = wrapper.get("optimizer")
        if isinstance(optimizer, dict):
            made, finding = optimizer_call(str(optimizer.get("type")), optimizer, self.report,
                                           "optim_wrapper.optimizer", wrapper.at("optimizer"))
            self.note(finding)
            if made is not None:
                self.set("optimizer", made)
        clip = wrapper.get("clip_grad")
        if isinstance(clip, dict) and "max_norm" in clip:
            self.set("grad_clip", expr(float(clip["max_norm"])))
        if "paramwise_cfg" in wrapper:
            self.note(self.report.add("optim_wrapper.paramwise_cfg", "dropped", "per-parameter "
                                      "options: kdsl has decay_norm_and_bias on the optimizer",
                                      wrapper.at("paramwise_cfg")))

    def phase_optimizers(self) -> Dict[str, ir.Call]:
        """An OptimWrapperDict's optimizers by name (``architecture``, ``generator``)."""
        wrapper = self.cfg.get("optim_wrapper")
        found: Dict[str, ir.Call] = {}
        for name, sub in (wrapper.items() if isinstance(wrapper, dict) else ()):
            if isinstance(sub, dict) and isinstance(sub.get("optimizer"), dict):
                optimizer = sub["optimizer"]
                made, finding = optimizer_call(str(optimizer.get("type")), optimizer, self.report,
                                               f"optim_wrapper.{name}.optimizer",
                                               sub.at("optimizer"))
                self.note(finding)
                if made is not None:
                    found[name] = made
        return found

    def schedule(self, epochs: Optional[int]) -> None:
        schedulers = self.cfg.get("param_scheduler")
        schedulers = [schedulers] if isinstance(schedulers, dict) else list(schedulers or [])
        warmup = 0
        for entry in [e for e in schedulers if isinstance(e, dict)]:
            kind = str(entry.get("type", "")).split(".")[-1]
            where = getattr(entry, "where", None)
            if kind == "LinearLR" and entry.get("by_epoch", True) and len(schedulers) > 1:
                warmup = entry.get("end", 0)  # a warmup before the main schedule
                continue
            if not entry.get("by_epoch", True):
                self.note(self.report.add("param_scheduler", "approximated", f"{kind} steps per "
                                          "iteration in MMRazor; kdsl's schedules step per "
                                          "epoch", where))
            made, finding = schedule_call(kind, entry, epochs, self.report, "param_scheduler",
                                          where)
            self.note(finding)
            if made is not None and warmup:
                made = made.model_copy(update={"kwargs": made.kwargs + (
                    ir.Keyword(name="warmup_epochs", value=expr(warmup)),)})
            if made is not None:
                self.set("lr_schedule", made)

    def data(self) -> None:
        loader = self.cfg.get("train_dataloader")
        if isinstance(loader, dict) and "batch_size" in loader:
            self.set("batch_size", expr(loader["batch_size"]))
        if isinstance(loader, dict) and "dataset" in loader:
            self.note(self.report.add("train_dataloader.dataset", "dropped", "datasets are not "
                                      "converted: set `data = dataset(...)` or --data",
                                      loader.at("dataset")))
        randomness = self.cfg.get("randomness")
        if isinstance(randomness, dict) and randomness.get("seed") is not None:
            self.set("seed", expr(randomness["seed"]))


def convert_train(cfg: Located, writer: SpecWriter, report: ConversionReport, *,
                  phase_optimizers: bool) -> Dict[str, ir.Call]:
    """Writes the train block; with ``phase_optimizers`` (a data-free algorithm) returns the
    OptimWrapperDict's optimizers by name, for its phases, instead of a run optimizer."""
    block = TrainBlock(cfg, report)
    epochs = block.epochs(generated_input=phase_optimizers)
    per_phase = block.phase_optimizers() if phase_optimizers else {}
    if not phase_optimizers:
        block.optimizer()
    block.schedule(epochs)
    block.data()
    if block.settings:
        writer.add("train", ir.TrainDecl(settings=tuple(block.settings)), block.findings)
    else:
        for finding in block.findings:
            writer.note(finding)
    return per_phase
