"""PyTorch Lightning running a kdsl spec: ``pip install 'kdsl[lightning]'``.

::

    from kdsl.integrations.lightning import DistillationModule
    module = DistillationModule("specs/digits/kd.kd", epochs=2)
    L.Trainer(max_epochs=2, accelerator="cpu").fit(module)

``training_step`` is the spec's step (:class:`kdsl.integrations.spec_step.SpecStep`), compiled in
``setup`` (on every rank, before Lightning wraps the module in DistributedDataParallel). The
distiller is the submodule ``distiller``: the student, connectors and learning losses are in the
module's ``state_dict`` and so in Lightning's checkpoints; frozen teachers are not (they are
loaded from the spec). kdsl's terms go through ``self.log`` (``loss/TERM``, ``loss_unweighted/TERM``,
``weight/TERM``, per step and per epoch; averaged over ranks at the epoch's end).

Defaults come from the spec and kdsl's settings (``**settings``, as ``kdsl.train`` takes them):
``configure_optimizers`` builds the spec's optimizer and lr schedule (stepped per optimizer step)
over the Trainer's epochs and steps; ``train_dataloader`` is kdsl's loader of the spec's data
(its order depends only on the seed and the epoch; under DDP each rank reads its shard, so pass
``use_distributed_sampler=False``). A ``datamodule`` or dataloaders given to ``fit`` replace it;
``example`` is then one batch for the dry run.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from kdsl.core.diagnostics import error
from kdsl.integrations.spec_step import SpecArg, SpecStep, built_when_asked, framework, load_spec


def _lightning():
    return framework("lightning.pytorch", "lightning", "lightning", "kdsl.integrations.lightning")


def _module_class():
    pl = _lightning()

    class DistillationModule(_ModuleMethods, pl.LightningModule):
        __doc__ = _ModuleMethods.__doc__

    return DistillationModule


__getattr__ = built_when_asked(globals(), "DistillationModule", _module_class)


class _ModuleMethods:
    """A LightningModule whose step is ``spec``'s (a path or a loaded spec). ``student``: the
    student module (default: built from the spec); ``models``: the spec's other models by name;
    ``example``: a batch for the dry run when the data is not the spec's; ``settings``: kdsl's
    training settings (``data=``, ``batch_size=``, ``optimizer=``, ``seed=``, ...)."""

    def __init__(self, spec: SpecArg, student=None, *, models: Optional[Mapping[str, Any]] = None,
                 example: Any = None, inputs: Optional[Sequence[str]] = None, **settings: Any) -> None:
        from kdsl.training.config import resolve_config

        super().__init__()
        self.spec = load_spec(spec)
        self.cfg = resolve_config(self.spec, settings)
        self._given = (student, dict(models or {}), example, inputs)
        self.kdsl: Optional[SpecStep] = None
        self.data = None

    def setup(self, stage: str) -> None:
        if self.kdsl is not None:
            return
        from kdsl.training.data import load_data
        from kdsl.training.rng import seed_everything

        trainer = self.trainer
        if trainer.world_size > 1 and trainer._accelerator_connector.use_distributed_sampler \
                and self.cfg.data is not None:
            raise error("KD794", "kdsl's loader already gives each rank its shard of the spec's data; "
                        "Lightning would shard it again", hint="pass use_distributed_sampler=False to L.Trainer")
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            self.cfg.epochs = trainer.max_epochs
        seed_everything(self.cfg.seed)  # as kdsl train: connectors start from the run's seed
        student, models, example, inputs = self._given
        if self.cfg.data is not None:
            self.data = load_data(self.cfg, trainer.global_rank, trainer.world_size)
            if example is None:
                example = next(iter(self.data.val))
        if example is None:
            raise error("KD793", "DistillationModule needs a batch to check the spec on: the spec gives no "
                        "data", hint="pass example=BATCH (one batch of the training data), or data=...")
        self.kdsl = SpecStep(self.spec, student, example, models, inputs if inputs is not None else self.cfg.inputs,
                             device=self.device, where="kdsl.integrations.lightning.DistillationModule")
        self.distiller = self.kdsl.distiller  # a submodule: checkpointed, and under DDP

    def forward(self, *args: Any, **kwargs: Any):
        return self.kdsl.student(*args, **kwargs)

    def train_dataloader(self):
        if self.data is None:
            raise error("KD793", "the spec gives no data: pass dataloaders or a datamodule to fit()")
        return self.data.train

    def on_train_epoch_start(self) -> None:
        if self.data is not None:  # kdsl's order for this epoch
            self.data.start_epoch(self.current_epoch)

    def on_train_epoch_end(self) -> None:
        if self.trainer.world_size > 1:  # as kdsl's loop: rank 0's BatchNorm statistics for all
            from kdsl.training.distributed import broadcast_buffers

            for model in self.distiller.trainable_models().values():
                broadcast_buffers(model)

    def training_step(self, batch: Any, batch_idx: int):
        trainer = self.trainer
        per_epoch = trainer.num_training_batches or 1
        result = self.kdsl.loss(batch, epoch=self.current_epoch + batch_idx / per_epoch, step=self.global_step,
                                total_epochs=trainer.max_epochs)
        terms = SpecStep.terms(result)
        self.log_dict(terms, on_step=True, on_epoch=True, sync_dist=trainer.world_size > 1,
                      batch_size=_rows(batch))
        return result.loss

    def configure_optimizers(self) -> Dict[str, Any]:
        from kdsl.training.stages import build_stage

        trainer = self.trainer
        epochs = self.cfg.epochs
        steps = max(1, int(trainer.estimated_stepping_batches) // max(1, epochs))
        plan = self.distiller.stage_ranges(epochs)[0][0]
        phase = build_stage(self.distiller, self.cfg, plan, 0, epochs, steps).phases[0]
        return {"optimizer": phase.optimizer,
                "lr_scheduler": {"scheduler": phase.scheduler, "interval": "step"}}


def _rows(batch: Any) -> int:
    """The batch's number of examples (Lightning's epoch means weigh by it)."""
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return int(first.shape[0])
