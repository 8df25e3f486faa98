"""An MMRazor config's training schedule as the spec's train block: ``train_cfg`` (epochs, or
``max_iters`` for a generated input), ``optim_wrapper`` (one optimizer, or an OptimWrapperDict's
per phase), ``param_scheduler`` (a LinearLR warmup joins the main schedule), the training data
loader's batch size and ``randomness.seed``. Every finding is a comment above the block."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from kdsl.convert import values
from kdsl.convert.pyconfig import Located
from kdsl.convert.report import ConversionReport, config_error
from kdsl.convert.spec import SpecWriter, expr
from kdsl.convert.training import optimizer_call, schedule_call, setting
from kdsl.lang import ir


class TrainBlock:
    def __init__(self, cfg: Located, report: ConversionReport) -> None:
        self.cfg, self.report = cfg, report
        self.settings: List[ir.TrainSetting] = []
        self.findings: List[Any] = []
        self.steps_per_epoch: Optional[int] = None  # known when the loop counts iterations

    def set(self, key: str, value: ir.Node) -> None:
        self.settings.append(setting(key, value))

    def note(self, finding: Any) -> None:
        if finding is not None:
            self.findings.append(finding)

    def epochs(self, generated_input: bool) -> Optional[int]:
        loop = values.mapping(self.cfg, "train_cfg")
        epochs = values.integer(loop, "max_epochs", None, "train_cfg.max_epochs")
        iterations = values.integer(loop, "max_iters", None, "train_cfg.max_iters")
        if epochs is not None:
            self.set("epochs", expr(epochs))
            return epochs
        if iterations is not None and generated_input:
            # a generated input has no data to count epochs by: an epoch is the validation
            # interval (when it divides the run), else the whole run is one epoch
            interval = values.integer(loop, "val_interval", None, "train_cfg.val_interval")
            steps = interval if interval and iterations % interval == 0 else iterations
            self.steps_per_epoch = steps
            self.set("epochs", expr(iterations // steps))
            self.set("steps_per_epoch", expr(steps))
            return iterations // steps
        if iterations is not None:
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
        wrapper = values.mapping(self.cfg, "optim_wrapper")
        optimizer = values.mapping(wrapper, "optimizer", "optim_wrapper.optimizer")
        if optimizer:
            made, finding = optimizer_call(str(optimizer.get("type")), optimizer, self.report,
                                           "optim_wrapper.optimizer", wrapper.at("optimizer"))
            self.note(finding)
            if made is not None:
                self.set("optimizer", made)
        clip = values.mapping(wrapper, "clip_grad", "optim_wrapper.clip_grad")
        if isinstance(clip.get("max_norm"), (int, float)):
            self.set("grad_clip", expr(float(clip["max_norm"])))
        if "paramwise_cfg" in wrapper:
            self.note(self.report.add("optim_wrapper.paramwise_cfg", "dropped", "per-parameter "
                                      "options: kdsl has decay_norm_and_bias on the optimizer",
                                      wrapper.at("paramwise_cfg")))

    def phase_optimizers(self) -> Dict[str, ir.Call]:
        """An OptimWrapperDict's optimizers by name (``architecture``, ``generator``)."""
        found: Dict[str, ir.Call] = {}
        wrapper = values.mapping(self.cfg, "optim_wrapper")
        for name, sub in wrapper.items():
            if not isinstance(sub, dict):
                continue  # constructor='mmrazor.SeparateOptimWrapperConstructor' and the like
            optimizer = values.mapping(wrapper[name], "optimizer", f"optim_wrapper.{name}.optimizer")
            if optimizer:
                made, finding = optimizer_call(str(optimizer.get("type")), optimizer, self.report,
                                               f"optim_wrapper.{name}.optimizer",
                                               sub.at("optimizer"))
                self.note(finding)
                if made is not None:
                    found[name] = made
        return found

    def schedule(self, epochs: Optional[int]) -> None:
        """``param_scheduler``: a list (a LinearLR warmup, then the main schedule), or with an
        OptimWrapperDict one per optimizer, of which the student's (``architecture``) is the
        run's: kdsl has one learning-rate schedule."""
        schedulers = self.cfg.get("param_scheduler")
        if isinstance(schedulers, dict) and "type" not in schedulers:
            for name in schedulers:
                if name != "architecture":
                    self.note(self.report.add(f"param_scheduler.{name}", "dropped", "kdsl has "
                                              "one lr schedule per run: the student's",
                                              schedulers.at(name)))
            schedulers = schedulers.get("architecture")
        entries = values.as_list(schedulers, "param_scheduler", self.cfg.at("param_scheduler"))
        warmup = 0
        for entry in entries:
            if not isinstance(entry, dict):
                raise config_error("KD760", "'param_scheduler' must hold mappings",
                                   self.cfg.at("param_scheduler"))
            entry = self._in_epochs(entry)
            kind = str(entry.get("type", "")).split(".")[-1]
            where = getattr(entry, "where", None)
            if kind == "LinearLR" and len(entries) > 1:
                warmup = entry.get("end", 0)  # a warmup before the main schedule
                continue
            made, finding = schedule_call(kind, entry, epochs, self.report, "param_scheduler",
                                          where)
            self.note(finding)
            if made is not None and warmup:
                made = made.model_copy(update={"kwargs": made.kwargs + (
                    ir.Keyword(name="warmup_epochs", value=expr(warmup)),)})
            if made is not None:
                self.set("lr_schedule", made)

    def _in_epochs(self, entry: Located) -> Located:
        """A scheduler stepped per iteration, its iteration counts (milestones, T_max, end) in
        epochs of ``steps_per_epoch`` iterations; reported when they do not divide evenly."""
        if entry.get("by_epoch", True) is not False:
            return entry
        where = getattr(entry, "where", None)
        kind = entry.get("type")
        steps = self.steps_per_epoch
        if steps is None:
            self.note(self.report.add("param_scheduler", "approximated", f"{kind} steps per "
                                      "iteration in MMRazor; kdsl's schedules step per epoch",
                                      where))
            return entry
        out = Located(entry, where=where)
        counts = {k: entry[k] for k in ("milestones", "T_max", "end") if k in entry}
        exact = True
        for key, value in counts.items():
            numbers = value if isinstance(value, list) else [value]
            exact &= all(isinstance(n, int) and n % steps == 0 for n in numbers)
            scaled = [n / steps if isinstance(n, (int, float)) else n for n in numbers]
            scaled = [int(n) if isinstance(n, float) and n.is_integer() else n for n in scaled]
            out[key] = scaled if isinstance(value, list) else scaled[0]
        if not exact:
            self.note(self.report.add("param_scheduler", "approximated", f"{kind}'s iteration "
                                      f"counts are not whole epochs of {steps} steps", where))
        return out

    def data(self) -> None:
        loader = values.mapping(self.cfg, "train_dataloader")
        size = values.integer(loader, "batch_size", None, "train_dataloader.batch_size")
        if size is not None:
            self.set("batch_size", expr(size))
        if "dataset" in loader:
            self.note(self.report.add("train_dataloader.dataset", "dropped", "datasets are not "
                                      "converted: set `data = dataset(...)` or --data",
                                      loader.at("dataset")))
        seed = values.integer(values.mapping(self.cfg, "randomness"), "seed", None,
                              "randomness.seed")
        if seed is not None:
            self.set("seed", expr(seed))


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
