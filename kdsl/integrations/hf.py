"""Hugging Face ``Trainer`` running a kdsl spec: ``pip install 'kdsl[hf]'``.

::

    from kdsl.integrations.hf import DistillationTrainer
    trainer = DistillationTrainer("specs/lm/kd.kd", model=student, models={"teacher": teacher},
                                  args=TrainingArguments("out", max_steps=100, remove_unused_columns=False),
                                  train_dataset=train, data_collator=collate)
    trainer.train()

``compute_loss`` is the spec's step (:class:`kdsl.integrations.spec_step.SpecStep`): the student
is the Trainer's model; the spec's other models are given by name (``models=``) or built from the
spec (their ``from`` weights loaded), placed on the Trainer's device, frozen as kdsl freezes them.
The connectors', learning losses' and trainable teachers' parameters join the Trainer's optimizer
(one more parameter group, with ``args.weight_decay``); weight schedules follow the Trainer's
progress (``state.epoch``, ``state.global_step``); each term's mean since the last log goes
through the Trainer's logging as ``loss/TERM``, ``loss_unweighted/TERM`` and ``weight/TERM``
(every ``report_to`` sees them); every checkpoint holds the kdsl state (connectors, learning
losses) in ``kdsl_state.pt`` beside the model, and ``train(resume_from_checkpoint=...)`` restores it.

The batches' fields must reach the losses, so the Trainer keeps every column
(``remove_unused_columns`` is set to False).
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence

import torch

from kdsl.core.diagnostics import error
from kdsl.integrations.spec_step import SpecArg, SpecStep, built_when_asked, framework

KDSL_STATE = "kdsl_state.pt"


def _transformers():
    return framework("transformers", "transformers", "hf", "kdsl.integrations.hf")


def _trainer_class():
    transformers = _transformers()

    class DistillationTrainer(_TrainerMethods, transformers.Trainer):
        __doc__ = _TrainerMethods.__doc__

    return DistillationTrainer


__getattr__ = built_when_asked(globals(), "DistillationTrainer", _trainer_class)


def _zero_grads(params):
    """A callback that clears ``params``' gradients after each optimizer step, as the Trainer's
    ``model.zero_grad()`` does for the model's (otherwise they would add up across steps)."""
    transformers = _transformers()

    class ZeroGrads(transformers.TrainerCallback):
        def on_optimizer_step(self, args, state, control, **kwargs):
            for p in params:
                p.grad = None

    return ZeroGrads()


class _TrainerMethods:
    """A ``transformers.Trainer`` whose loss is ``spec``'s (a path or a loaded spec).
    ``models``: the spec's other models by name; ``inputs``: the batch fields the models
    take by keyword (default: the spec's train block's). The rest is the Trainer's."""

    def __init__(self, spec: SpecArg, model=None, *, models: Optional[Mapping[str, Any]] = None,
                 inputs: Optional[Sequence[str]] = None, **kwargs: Any) -> None:
        args = kwargs.get("args")
        if args is not None:
            args.remove_unused_columns = False  # the losses read fields the forward does not take
        super().__init__(model=model, **kwargs)
        if self.args.remove_unused_columns:
            self.args.remove_unused_columns = False
        example = self._example_batch()
        self.kdsl = SpecStep(spec, self.model, example, models, inputs, device=self.args.device,
                             where="kdsl.integrations.hf.DistillationTrainer")
        self._sums: Dict[str, float] = {}
        self._count = 0
        # the spec's loss is a mean over the batch: the Trainer divides it by the accumulation steps
        self.model_accepts_loss_kwargs = False
        # the Trainer zeroes the model's gradients after a step; the connectors' are not the model's
        self.add_callback(_zero_grads(self.kdsl.extra_parameters()))

    def _example_batch(self):
        """One collated training example, drawn without touching any random generator (so
        that the Trainer's data order is the one it would be without kdsl)."""
        if self.train_dataset is None:
            raise error("KD793", "DistillationTrainer needs train_dataset: the spec is checked on one "
                        "of its examples before training", hint="pass train_dataset=...")
        return self.data_collator([self.train_dataset[0]])

    def create_optimizer(self, *args: Any, **kwargs: Any):
        optimizer = super().create_optimizer(*args, **kwargs)
        extra = self.kdsl.extra_parameters()
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        extra = [p for p in extra if id(p) not in held]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": self.args.weight_decay})
        return optimizer

    def _clip_grad_norm(self, model):
        """``max_grad_norm`` over the model's and kdsl's parameters together (one norm, as ``kdsl
        train`` clips a phase's parameters): the Trainer's own clip sees the model's only. The
        Trainer's special cases (SageMaker fp16, gradients on several device meshes) stay its own."""
        from transformers.utils import is_sagemaker_mp_enabled

        mixed_meshes = getattr(self, "_has_mixed_mesh_grads", None)
        if (is_sagemaker_mp_enabled() and self.args.fp16) or (mixed_meshes and mixed_meshes(model)):
            return super()._clip_grad_norm(model)
        params = [*model.parameters(), *self.kdsl.extra_parameters()]
        return self.accelerator.clip_grad_norm_(params, self.args.max_grad_norm)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        state = self.state
        total = math.ceil(state.num_train_epochs) if state.num_train_epochs else None
        result = self.kdsl.loss(inputs, model, epoch=float(state.epoch or 0.0), step=state.global_step,
                                total_epochs=total)
        if model.training:
            for key, value in SpecStep.terms(result).items():
                self._sums[key] = self._sums.get(key, 0.0) + value
            self._count += 1
        return (result.loss, result.student_output) if return_outputs else result.loss

    def log(self, logs: Dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs and self._count:  # a training log: the terms' means since the last
            logs = dict(logs, **{k: v / self._count for k, v in self._sums.items()})
            self._sums, self._count = {}, 0
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: Optional[str] = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict=state_dict)
        folder = output_dir if output_dir is not None else self.args.output_dir
        torch.save(self.kdsl.extra_state(), os.path.join(folder, KDSL_STATE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model=model)
        path = os.path.join(resume_from_checkpoint, KDSL_STATE)
        if os.path.isfile(path):
            self.kdsl.load_extra_state(torch.load(path, map_location=self.args.device, weights_only=True))
        elif self.kdsl.extra_state():
            raise error("KD791", f"{resume_from_checkpoint} has no {KDSL_STATE}: it was not written by "
                        "kdsl's DistillationTrainer", hint="resume from a checkpoint of this trainer")

