"""A compiled spec driven by another framework's loop: the one step the integrations share.

:class:`SpecStep` compiles a spec around the framework's student (dry-run on one example batch:
shapes checked, connector widths inferred), and runs the step exactly as kdsl's own loop runs a
plain step (:meth:`kdsl.training.loop.Trainer.step`): every used teacher's pass (frozen ones under
``no_grad``, in eval mode), the student's pass through whatever the framework calls (its
DistributedDataParallel wrapper), then the loss graph. Batches are what kdsl's loaders give:
``(input, target, index)`` tuples, ``(input, target)`` pairs or dicts of named fields, whose
``inputs`` fields (the spec's train block, or every field but labels, target and index) are the
models' keyword arguments.

The framework owns the optimizer, the schedule of the learning rate and the checkpoints; the
integration adds :meth:`SpecStep.extra_parameters` (connectors, learning losses, trainable
teachers) to its optimizer and :meth:`SpecStep.extra_state` to its checkpoints. A spec with
stages, phases or a generated ``input`` has its own optimizers per phase: KD790, run it with
``kdsl train``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.lang import ir

SpecArg = Union[str, "ir.Spec"]


def load_spec(spec: SpecArg) -> ir.Spec:
    from kdsl.lang.loader import load

    return spec if isinstance(spec, ir.Spec) else load(str(spec))


def as_fields(batch: Any) -> Any:
    """A batch as :func:`kdsl.training.batches.model_call` takes it: ``(x, y)`` pairs (no index)
    get an index of -1s, which no loss of a plain spec reads."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
        return x, y, torch.full((len(y),), -1, dtype=torch.long, device=y.device)
    return batch



def framework(module: str, package: str, extra: str, where: str) -> Any:
    """``import module`` for the integration ``where``; KD792 with the install line when its
    package is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise error("KD792", f"{where} needs the {package} package, which is not installed",
                    hint=f"pip install {package} (or pip install 'kdsl[{extra}]')") from None


def built_when_asked(namespace: Dict[str, Any], name: str, build: Callable[[], type]) -> Callable[[str], Any]:
    """A module ``__getattr__`` giving ``name``, built by ``build`` when first asked for: the class
    derives from the framework's, so importing the module (or a framework that is not installed)
    costs nothing until it is used."""
    def __getattr__(attr: str) -> Any:
        if attr != name:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {attr!r}")
        namespace[name] = built = build()
        return built

    return __getattr__


class SpecStep:
    """``spec`` bound to ``student`` (None: the spec's) and ``models`` (other spec models by name,
    e.g. a teacher; the rest are built from the spec, their ``from`` weights loaded), dry-run on
    ``example``."""

    def __init__(self, spec: SpecArg, student: Optional[nn.Module], example: Any,
                 models: Optional[Mapping[str, nn.Module]] = None,
                 inputs: Optional[Sequence[str]] = None, device: Any = None, where: str = "this integration") -> None:
        from kdsl.compiler.compiler import compile as compile_spec
        from kdsl.training.batches import model_call
        from kdsl.training.config import resolve_config

        self.spec = load_spec(spec)
        self.inputs = list(inputs) if inputs is not None else resolve_config(self.spec, {}).inputs
        device = torch.device(device) if device is not None else \
            _device_of(student) if student is not None else torch.device("cpu")
        given = dict(models or {})
        if student is not None:  # else built from the spec's reference
            given[self.spec.student.name] = student
        call = model_call(as_fields(example), self.inputs, device)
        fields = dict(call.fields, target=call.target) if call.target is not None else call.fields
        for m in given.values():
            m.to(device)
        self.distiller = compile_spec(self.spec, example_input=call.kwargs if call.kwargs else call.args[0],
                                      example_batch=fields, device=device, **given)
        _refuse_procedures(self.spec, self.distiller.procedure.declared, where)
        self.distiller.to(device)
        self.distiller.apply_inits()

    @property
    def student(self) -> nn.Module:
        return self.distiller.student

    def loss(self, batch: Any, runner: Optional[nn.Module] = None, *, epoch: float = 0.0, step: int = 0,
             total_epochs: Optional[int] = None):
        """One step's :class:`~kdsl.runtime.distiller.StepResult` on ``batch`` (its ``loss`` is
        what to backpropagate); ``runner`` runs the student's forward (the framework's wrapper of
        it; default the student); ``epoch`` (fractional), ``step`` and ``total_epochs`` drive the
        weight schedules."""
        from kdsl.training.batches import model_call

        d = self.distiller
        d.set_progress(epoch=epoch, step=step, total_epochs=total_epochs)
        if d.training != self.student.training:  # the framework switched the student's mode
            d.train(self.student.training)
        call = model_call(as_fields(batch), self.inputs, _device_of(self.student))
        for name in d.used_teachers:
            with d.teacher_pass(name) as teacher:
                teacher(*call.args, **call.kwargs)
        with d.student_pass():
            output = (runner or self.student)(*call.args, **call.kwargs)
        result = d.compute_losses(batch=call.fields, target=call.target)
        if result.student_output is None:
            result.student_output = output
        return result

    def extra_parameters(self) -> List[nn.Parameter]:
        """What the step trains besides the student: connectors, learning losses, trainable
        teachers (they join the framework's optimizer)."""
        own = {id(p) for p in self.student.parameters()}
        return [p for p in self.distiller.parameters() if p.requires_grad and id(p) not in own]

    def extra_state(self) -> Dict[str, torch.Tensor]:
        """The distiller's state without the student's (which the framework saves itself)."""
        prefix = f"models.{self.distiller.student_name}."
        return {k: v for k, v in self.distiller.state_dict().items() if not k.startswith(prefix)}

    def load_extra_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing, unexpected = self.distiller.load_state_dict(dict(state), strict=False)
        prefix = f"models.{self.distiller.student_name}."
        missing = [k for k in missing if not k.startswith(prefix)]
        if missing or unexpected:
            raise error("KD791", "the checkpoint's kdsl state does not fit this spec's connectors and losses "
                        f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})",
                        hint="resume with the spec that started the run")

    @staticmethod
    def terms(result) -> Dict[str, float]:
        """The step's weighted terms, their unweighted values and weights, as the loggers name
        them (``loss/TERM``, ``loss_unweighted/TERM``, ``weight/TERM``)."""
        out = {"loss/total": float(result.loss.detach())}
        for name, value in result.losses.items():
            out[f"loss/{name}"] = float(value.detach())
            if name in result.unweighted:
                out[f"loss_unweighted/{name}"] = float(result.unweighted[name].detach())
            if name in result.weights:
                out[f"weight/{name}"] = float(result.weights[name])
        return out


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _refuse_procedures(spec: ir.Spec, declared: bool, where: str) -> None:
    """KD790: stages, phases and generated inputs need kdsl's own loop (an optimizer per phase)."""
    if declared:
        raise error("KD790", f"{where} runs specs of one step (no stages, phases or input); "
                    f"{spec.file} declares {'an input' if spec.input is not None else 'stages or phases'}",
                    hint=f"run it with `kdsl train {spec.file}`, whose loop gives each phase its optimizer")
