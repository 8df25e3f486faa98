"""The training loop: the run's stages in order, epochs of steps through the compiled distiller,
evaluation after each epoch, a checkpoint at the end of each, and a resumed run that continues
bit for bit, in the right stage and phase.

Each step runs the stage's phases in order, each ``repeat`` times, each repeat a complete forward,
backward and optimizer step with the phase's own optimizer (:mod:`kdsl.training.stages`). A spec
without stages, phases or ``input`` is one stage of one phase, run exactly as before: frozen
teachers under no_grad, the student's pass (through DistributedDataParallel under torchrun), the
loss graph, the update. With ``input`` (a generator) there is no training batch: an epoch is
``steps_per_epoch`` steps and the training data, if any, is never read (it evaluates only).
Progress goes to a :class:`~kdsl.training.report.Reporter`; files go through
:class:`~kdsl.training.rundir.RunDir`.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.training.optim import setup_warnings
from kdsl.training import dist_checkpoint, distributed, sharding
from kdsl.training.curves import CurvesPacer
from kdsl.training.data import Data, epoch_steps, stage_steps
from kdsl.training.distributed import Dist, autocast, barrier, broadcast_buffers
from kdsl.training.batches import model_call, run_task
from kdsl.training.config import optimizers_text
from kdsl.training.evaluate import evaluate, evaluate_models, param_count, result_rows, row_metrics, val_row
from kdsl.training.environment import record_start
from kdsl.training.interrupts import interrupts_held
from kdsl.training.loggers import RunLog, check_loggers, logger_folders
from kdsl.training.metrics import EpochSums, early_stop
from kdsl.training.report import TOKENS_PER_S, Reporter, RunResult, RunStart, StageInfo
from kdsl.training.rng import rng_state, set_rng_state
from kdsl.training.resume import (check_same_run, check_state_fits, nan_hint, progress_summary, repair,
                                  run_best, write_best)
from kdsl.training.rundir import RunDir, spec_fingerprint
from kdsl.training.stages import (PhaseRun, StageRun, build_stage, input_text,
                                  restore_optimization)

REPORT_EVERY = 10  # steps between progress events (and loss finiteness checks)


class Trainer:
    """One run of the loop over a compiled distiller: ``fit()`` trains, ``evaluate_run()`` only
    evaluates the run's saved models and the teachers."""

    def __init__(self, spec: ir.Spec, cfg, distiller, data: Optional[Data], run_dir: RunDir,
                 device: torch.device, dist: Dist, reporter: Reporter) -> None:
        self.spec, self.cfg, self.distiller, self.data = spec, cfg, distiller, data
        self.run_dir, self.device, self.dist, self.reporter = run_dir, device, dist, reporter
        self.generated = spec.input is not None  # the models' input comes from `input`, not data
        if distiller.rollout is not None:  # the generate statement draws from (run seed, step)
            distiller.rollout.seed = cfg.seed
        self.steps_per_epoch = epoch_steps(spec, cfg, data)
        self.history: List[Dict[str, Any]] = []
        self.validations: List[Dict[str, Any]] = []  # val_every's rows (validation.jsonl)
        self.told_stop = False  # early stopping was reported
        self.global_step = 0
        self.committed = 0  # epochs in the run directory's checkpoint (what an interrupted run keeps)
        self.committed_steps = 0  # and steps of the epoch after them (a checkpoint within it)
        self.log = RunLog([])  # --tensorboard's writers, opened by fit()
        self.teachers: Optional[Dict[str, Dict[str, float]]] = None
        self.fingerprint = spec_fingerprint(spec)
        # what runs the student's forward in a plain step (DistributedDataParallel under torchrun)
        self.runner: Optional[nn.Module] = None
        self.sharding: Optional[sharding.Sharding] = None  # the FSDP2 placements under strategy fsdp
        self.shards: Optional[Dict[str, Any]] = None  # the epoch's DCP shards (fsdp over processes)
        self.stage: Optional[StageRun] = None
        distiller.share_input = cfg.share_input  # DAFL: one generated batch a step
        self.peers = [t.name for t in spec.teachers if t.trainable]  # trained, so evaluated per epoch
        self.teacher_store = None  # a teacher-output store serving the frozen teachers (--teacher-cache)
        self.transform = self.visualizer = None  # batch_transform, --visualize: set by kdsl.train
        self.task = run_task(cfg, data)  # which metrics evaluation reports (top-1, or perplexity)
        self.within: Optional[Dict[str, Any]] = None  # {"steps", "sums"} of a checkpoint within an epoch
        self.curves = CurvesPacer()  # curves.png at the end, and now and then on the way
        self.start_lr: Optional[float] = None  # the first step's learning rate (curves.png's lr at epoch 0)
        self.tokens = 0  # real tokens trained this epoch (the progress line's tokens/s)

    # ---------------------------------------------------------------- set-up
    def resume(self) -> Dict[str, Any]:
        """Restore the run from its checkpoint (models, RNG, history); the checkpoint's content."""
        state = self.run_dir.read_checkpoint(self.fingerprint, self.device)
        path = self.run_dir.file("checkpoint.pt")
        check_same_run(state["config"], self.cfg.describe(), path, (state.get("world"), self.dist.world))
        self.restore_models(state)
        try:
            set_rng_state(state["rng"], self.device)
        except Exception as exc:  # noqa: BLE001 - a hand-edited generator state
            raise error("KD703", f"{path} is damaged: its 'rng' cannot be restored ({type(exc).__name__}: {exc})",
                        hint="start a new run with --out or --overwrite") from None
        self.global_step, self.committed = state["step"], state["epoch"]
        self.within = state.get("within")  # a checkpoint written within the epoch after them
        self.committed_steps = self.within["steps"] if self.within else 0
        self.teachers = state.get("teachers")
        self.history = list(state["history"])
        self.validations = list(state.get("validations") or [])
        return state

    def restore_models(self, state: Dict[str, Any]) -> None:
        """The checkpoint's models, connectors and learning losses into the distiller (KD703 when
        they do not fit it)."""
        path = self.run_dir.file("checkpoint.pt")
        check_state_fits(state["distiller"], self.distiller.state_dict(), path)
        try:
            self.distiller.load_state_dict(state["distiller"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise error("KD703", f"{path} does not fit this run's models: {str(exc).splitlines()[0]}",
                        hint="resume with the models (--student, --model) that started the run") from None

    def start_stage(self, plan, first: int, end: int, state: Optional[Dict[str, Any]]) -> StageRun:
        """Begin a stage: its freezes, fresh optimizers and schedules for its phases, restored from
        ``state`` when the run resumes inside this stage."""
        self.steps_per_epoch = self.enter_batch_size(plan)
        stage = build_stage(self.distiller, self.cfg, plan, first, end, self.steps_per_epoch)
        if state is not None:
            if state["stage"] != plan.name:
                raise error("KD703", f"the checkpoint ends in stage '{state['stage']}', but epoch "
                            f"{state['epoch'] + 1} of this run is in stage '{plan.name}'",
                            hint="resume with the epochs that started the run")
            restore_optimization(stage, state["optimization"], self.run_dir.file("checkpoint.pt"))
        self.runner = None
        if self.plain(plan):
            phase = stage.phases[0]
            self.runner, phase.reduce = distributed.wrap_student(self.distiller.student, phase.params,
                                                                 self.dist, self.device, self.sharding,
                                                                 unused=bool(self.distiller.deliveries))
        elif self.dist.enabled:  # no DDP wrapper: the loop averages every gradient itself
            for phase in stage.phases:
                phase.reduce = sharding.replicated_params(phase.params)
        self.stage = stage
        self.reporter.stage_start(self.stage_info(stage))
        return stage

    def enter_batch_size(self, plan) -> int:
        """Batch the training data as stage ``plan`` does; the steps of its epochs."""
        return self.steps_per_epoch if self.generated else stage_steps(self.spec, self.cfg, self.data, plan)

    def plain(self, plan) -> bool:
        """Whether a stage is today's single step (a spec without stages, phases or ``input``):
        every used teacher, then the student through the DDP wrapper, then every loss."""
        return not self.distiller.procedure.declared and len(plan.phases) == 1 and plan.phases[0].repeat == 1

    def stage_info(self, stage: StageRun) -> StageInfo:
        return StageInfo(stage.name, stage.first, stage.end, tuple((p.name, p.repeat) for p in stage.phases),
                         declared=stage.declared, phased=stage.phased, batch_size=stage.batch_size)

    def run_start(self, start_epoch: int, resumed: bool, ranges) -> RunStart:
        cfg = self.cfg
        opt = optimizers_text(cfg, ranges[0][0].phases if ranges else [])
        stages = tuple(StageInfo(p.name, a, b, tuple((ph.name, ph.repeat) for ph in p.phases),
                                 declared=p.decl is not None, phased=p.phased, batch_size=p.batch_size)
                       for p, a, b in ranges)
        data = self.data
        return RunStart(
            spec_file=self.spec.file, student=self.distiller.student_name,
            student_params=param_count(self.distiller.student), teachers=dict(self.teachers or {}),
            data=cfg.data[0] if cfg.data else "none", train_size=data.train_size if data else 0,
            val_size=data.val_size if data else 0, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch,
            batch_size=cfg.batch_size, optimizer=opt, lr_schedule=cfg.lr_schedule[0], seed=cfg.seed,
            device=self.device.type, amp=cfg.amp, world=self.dist.world, out=self.run_dir.path,
            start_epoch=start_epoch, resumed=resumed, stages=stages, input=input_text(self.spec),
            progress_every=cfg.progress_every)

    # ---------------------------------------------------------------- the run
    def fit(self, resume: bool = False) -> RunResult:
        t_start = time.time()
        ranges = self.distiller.stage_ranges(self.cfg.epochs)
        steps = {plan.name: self.enter_batch_size(plan) for plan, _, _ in reversed(ranges)}  # the first last
        warnings = setup_warnings(self.spec, self.cfg, self.distiller, ranges, steps)
        self.steps_per_epoch = steps[ranges[0][0].name]
        state = self.resume() if resume else None
        start_epoch = state["epoch"] if state else 0
        if self.dist.main:  # before the teachers' evaluation: a missing tensorboard stops the run at once
            check_loggers(self.cfg)  # before begin(): a run refused here leaves an old run as it was
            self.run_dir.begin(fresh=state is None)
            for folder in logger_folders(self.cfg):
                self.run_dir.claim(folder)
            record_start(self.run_dir, self.spec, self.cfg, self.device, resume)
            self.log = RunLog.open(self.cfg, self.run_dir.path, self.global_step, self.spec, state is not None)
        if state is None:
            self.distiller.apply_inits()  # `init` copies, once, when the run starts (not on resume)
        if self.teachers is None:
            self.teachers = self.evaluate_teachers()
        self.reporter.run_start(self.run_start(start_epoch, resume, ranges))
        for warning in warnings:
            self.reporter.warning(warning)
        if state is not None and self.dist.main:
            repair(self, state, ranges)
        self.sharding = sharding.for_run(self.spec, self.distiller, self.cfg, self.device, self.dist,
                                         self.reporter.warning)
        for plan, first, end in ranges:
            if end <= start_epoch or end == first or self.stopped_early():
                continue
            restore = first < start_epoch or (self.within is not None and first == start_epoch)
            self.start_stage(plan, first, end, state if restore else None)
            for epoch in range(max(first, start_epoch), end):
                if self.stopped_early():
                    break
                self.run_epoch(epoch)
        if self.dist.enabled:
            distributed.check_ranks_agree(self.distiller.student, self.dist, self.device)
        return self.finish(time.time() - t_start)

    def evaluate_teachers(self) -> Dict[str, Dict[str, float]]:
        """The frozen teachers, once a run (the trained ones are evaluated with the student)."""
        if not self.cfg.eval_teachers or self.data is None:
            return {}
        frozen = [n for n in self.distiller.teacher_names if n not in self.peers]
        return evaluate_models(self.distiller, frozen, *self.eval_args())

    def eval_args(self) -> Tuple[Any, ...]:
        """What :func:`evaluate` takes after the model: the validation data, device, precision,
        ranks, task and the batch fields models are called with."""
        return self.data.val, self.device, self.cfg.amp, self.dist, self.task, self.cfg.inputs

    def run_epoch(self, epoch: int) -> None:
        cfg, stage = self.cfg, self.stage
        t0 = time.time()
        first_step, sums = self.resumed_steps()
        if self.data is not None:
            self.data.start_epoch(epoch, skip_batches=first_step)
        self.distiller.train()
        self.distiller.zero_grad(set_to_none=True)  # an epoch carries no gradient in (zero_grad = "after_step")
        if epoch == 0 and first_step == 0:
            self.start_lr = stage.phases[0].optimizer.param_groups[0]["lr"]
        self.reporter.epoch_start(epoch, cfg.epochs, self.steps_per_epoch)
        self.train_epoch(epoch, sums, first_step)
        if self.dist.enabled:
            for model in self.distiller.trainable_models().values():
                broadcast_buffers(model)
        row: Dict[str, Any] = {"epoch": epoch + 1, "stage": stage.name, "step": self.global_step,
                               "lr": stage.phases[0].optimizer.param_groups[0]["lr"]}
        if stage.phased:
            row.update({f"lr/{p.name}": p.optimizer.param_groups[0]["lr"] for p in stage.phases})
        row.update(sums.row(self.dist, self.device))
        row.update(self.validate())
        if self.visualizer is not None and self.dist.main:  # --visualize: the epoch's feature maps
            self.visualizer.draw(self.distiller, epoch + 1)
        row["time_s"] = time.time() - t0
        self.history.append(row)
        self.log.epoch(self.global_step, row)
        self.reporter.epoch_end(row, cfg.epochs)
        run_best(self)  # on every rank (the rows agree): KD725 stops them all, before any file
        self.shards = dist_checkpoint.save(self, epoch + 1)  # every rank its shards; rank 0 their record
        whole = [] if dist_checkpoint.sharded(self) else [p.optimizer for p in stage.phases]
        with sharding.gathered(self.sharding, whole):  # every rank: the models for rank 0's weights files
            self.write_epoch(epoch)
        barrier(self.dist)

    def write_epoch(self, epoch: int) -> None:
        """Rank 0's files at an epoch's end: metrics, curves, then the checkpoint."""
        if self.dist.main:
            self.run_dir.write_metrics(self.history)
            final = epoch + 1 == self.cfg.epochs
            note = self.curves.draw(lambda: self.run_dir.write_curves(self.history, self.teachers, self.start_lr),
                                    final)
            if note and final:
                self.reporter.warning(note)
            self.save(epoch + 1)  # the checkpoint last: the epoch's commit point

    def resumed_steps(self) -> Tuple[int, EpochSums]:
        """(the steps of this epoch already done, their sums): those of a checkpoint written
        within the epoch, once; else (0, empty sums)."""
        sums = EpochSums(self.device)
        within, self.within = self.within, None
        if within is None:
            return 0, sums
        sums.load_state_dict(within["sums"])
        return within["steps"], sums

    def stopped_early(self) -> bool:
        """Early stopping (``patience``): whether the last ``patience`` epochs brought no better
        ``best_metric`` than the best before them (decided from the history alone, so a resumed
        run decides the same)."""
        why = early_stop(self.history, run_best(self), self.cfg.patience)
        if why and not self.told_stop:
            self.told_stop = True
            self.reporter.warning(why)
        return why is not None

    def validate_within(self, epoch: int, steps: int) -> None:
        """``val_every``: the student's validation ``steps`` into an epoch, to validation.jsonl,
        TensorBoard and the reporter (evaluation draws no randomness: training goes on unchanged)."""
        metrics = self.validate()
        if not metrics:
            return
        row = {"epoch": round(epoch + steps / self.steps_per_epoch, 6), "step": self.global_step, **metrics}
        self.validations.append(row)
        self.reporter.validation(row)
        self.log.validation(self.global_step, row)
        if self.dist.main:
            self.run_dir.write_validations(self.validations)

    def validate(self) -> Dict[str, float]:
        """The student's (and each trained peer's) validation metrics; none without data."""
        if self.data is None:
            return {}
        args = self.eval_args()
        out: Dict[str, float] = val_row(evaluate(self.distiller.student, *args))
        for name in self.peers:
            out.update(val_row(evaluate(self.distiller.model(name), *args), f"/{name}"))
        return out

    def batches(self, first: int = 0) -> Iterator[Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """The epoch's training batches from step ``first`` on (the loader's sampler skips the
        ones before); None for each step of a run whose input is generated (the training loader
        is then never touched)."""
        if self.generated:
            for _ in range(first, self.steps_per_epoch):
                yield None
            return
        for i, batch in enumerate(self.data.train, start=first):
            if i == self.steps_per_epoch:
                break
            yield batch

    def train_epoch(self, epoch: int, sums: EpochSums, first: int = 0) -> EpochSums:
        """The steps of one epoch from step ``first`` on, added to ``sums``; a checkpoint every
        ``checkpoint_every`` steps within it."""
        self.tokens, started = 0, time.monotonic()
        for i, batch in enumerate(self.batches(first), start=first):
            results = self.step(epoch, i, batch)
            steps = i + 1
            for phase, result in results:
                sums.add(phase, result, self.stage)
            if steps % REPORT_EVERY == 0 or steps == self.steps_per_epoch:
                for _, result in results:
                    self.check_finite(result, epoch, i)
                terms = sums.means()
                if self.task == "lm":  # this process's real tokens trained per second, this epoch
                    terms[TOKENS_PER_S] = float(self.tokens) / max(time.monotonic() - started, 1e-9)
                self.reporter.step(epoch, steps, self.steps_per_epoch, terms)
                self.log.step(self.global_step, results, self.stage)
            if self.cfg.val_every and self.global_step % self.cfg.val_every == 0 and steps < self.steps_per_epoch:
                self.validate_within(epoch, steps)
            every = self.cfg.checkpoint_every
            if every and self.global_step % every == 0 and steps < self.steps_per_epoch and not self.dist.enabled:
                for _, result in results:  # never a checkpoint of a diverged model
                    self.check_finite(result, epoch, i)
                self.save(epoch, within={"steps": steps, "sums": sums.state_dict()})
        return sums

    def step(self, epoch: int, i: int, batch) -> List[Tuple[str, Any]]:
        """One training step: every phase of the stage, each ``repeat`` times; (phase, result)s."""
        d, distiller, stage = self.device, self.distiller, self.stage
        distiller.set_progress(epoch=epoch + i / self.steps_per_epoch, step=self.global_step,
                               total_epochs=self.cfg.epochs)
        args: Tuple[Any, ...] = ()
        kwargs: Dict[str, Any] = {}
        target = fields = None
        if batch is not None:  # (x, y, index), or named fields some of which the models take
            batch = self.transform(batch, epoch, i) if self.transform is not None else batch
            call = model_call(batch, self.cfg.inputs, d)
            made = distiller.generated_batch(call.fields, self.global_step)
            if made is not call.fields:  # the prompts completed by the generate statement's model
                call, batch = model_call(made, self.cfg.inputs, d), None
            args, kwargs, target, fields = call.args, call.kwargs, call.target, call.fields
            if self.task == "lm" and "attention_mask" in fields:
                self.tokens = self.tokens + fields["attention_mask"].sum()  # no sync: read when reported
        results = []
        if self.runner is not None:  # today's step, exactly
            phase = stage.phases[0]
            with autocast(d, self.cfg.amp):
                for name in distiller.used_teachers:
                    if self.teacher_store is not None and batch is not None and \
                            self.teacher_store.serve(distiller, name, epoch, batch):
                        continue
                    with distiller.teacher_pass(name) as teacher:
                        teacher(*args, **kwargs)
                with distiller.student_pass():
                    self.runner(*args, **kwargs)
                result = distiller.compute_losses(batch=fields, target=target)
            self.update(result.loss, phase, last=i + 1 == self.steps_per_epoch)
            results.append((phase.name, result))
        else:
            for phase in stage.phases:
                for r in range(phase.repeat):
                    with autocast(d, self.cfg.amp):
                        result = distiller.step(*args, target=target, batch=fields, stage=stage.name,
                                                phase=phase.name, **kwargs)
                    self.update(result.loss, phase, last=i + 1 == self.steps_per_epoch and r + 1 == phase.repeat)
                    results.append((phase.name, result))
        self.global_step += 1
        return results

    def update(self, loss: torch.Tensor, phase: PhaseRun, last: bool = True) -> None:
        """Backward, then (every ``accumulate`` updates, or at the epoch's ``last``) the step."""
        optimizer, scaler = phase.optimizer, phase.scaler
        if phase.pending == 0 and self.cfg.zero_grad == "before_backward":
            optimizer.zero_grad(set_to_none=True)
        if phase.accumulate > 1:
            loss = loss / phase.accumulate
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        phase.pending += 1
        if phase.pending < phase.accumulate and not last:
            return
        phase.pending = 0
        if phase.reduce:
            distributed.average_grads(phase.reduce, self.dist)
        if self.cfg.grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer)
            clip = sharding.clip_grad_norm if self.sharding else torch.nn.utils.clip_grad_norm_
            clip(phase.params, self.cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        phase.scheduler.step()
        if self.cfg.zero_grad == "after_step":  # mmengine's order: what other phases leave carries over
            optimizer.zero_grad(set_to_none=True)

    def check_finite(self, result, epoch: int, i: int) -> None:
        if bool(torch.isfinite(result.loss.detach()).all()):
            return
        bad = [k for k, v in result.losses.items() if not bool(torch.isfinite(v.detach()).all())]
        term = next((l for l in self.spec.all_losses if bad and l.name == bad[0]), None)
        raise error("KD707", f"loss {'term ' + repr(bad[0]) + ' ' if bad else ''}became "
                    f"{'nan' if torch.isnan(result.loss).any() else 'infinite'} at epoch {epoch + 1}, "
                    f"step {i + 1}", term.span if term else None,
                    hint=nan_hint(self.run_dir))

    # ---------------------------------------------------------------- files, the end
    def save(self, epochs_done: int, within: Optional[Dict[str, Any]] = None) -> None:
        """The epoch's files: connectors at a stage's end, the summary, the weights, and last the
        checkpoint, the commit point (a kill before it redoes the epoch, see :mod:`.resume`); then
        best.pt if this epoch is the best (rebuilt from the checkpoint if a kill comes between).
        ``within`` (``{"steps", "sums"}``): a checkpoint alone, ``steps`` into the epoch after
        ``epochs_done``, which a resumed run continues from (the other files stay the last epoch's)."""
        if within is not None:
            with interrupts_held():  # the checkpoint and what an interrupted run reports of it agree
                if self.dist.main:
                    self.run_dir.write_checkpoint(
                        fingerprint=self.fingerprint, epoch=epochs_done, step=self.global_step,
                        distiller=self.distiller, stage=self.stage.name,
                        optimization={self.stage.name: self.stage.state_dict()}, rng=rng_state(self.device),
                        teachers=self.teachers, history=self.history, config=self.cfg.describe(), models={},
                        within=within, validations=self.validations)
                self.committed_steps = within["steps"]
            return
        stage, best = self.stage, run_best(self)
        if epochs_done == stage.end and len(self.distiller.connectors):
            self.run_dir.write_connectors(stage.name, self.distiller.connectors)
        self.run_dir.write_summary(progress_summary(self, epochs_done))
        with interrupts_held():
            self.run_dir.write_checkpoint(
                fingerprint=self.fingerprint, epoch=epochs_done, step=self.global_step, distiller=self.distiller,
                stage=stage.name, optimization={stage.name: stage.state_dict()}, rng=rng_state(self.device),
                teachers=self.teachers, history=self.history, config=self.cfg.describe(),
                models=self.distiller.trainable_models(), validations=self.validations,
                world=self.dist.world, shards=self.shards)
            self.committed, self.committed_steps = epochs_done, 0
        dist_checkpoint.prune(self.run_dir, self.shards)  # the shards the checkpoint no longer names
        write_best(self, epochs_done, best)

    def finish(self, seconds: float) -> RunResult:
        history, teachers = self.history, self.teachers or {}
        last = history[-1] if history else None
        student, peers = self.final_metrics(last)
        best = run_best(self)
        summary = {"spec": self.spec.file, "epochs_done": last["epoch"] if last else 0, "task": self.task,
                   "teachers": teachers, "peers": peers, "student": student, "best": best,
                   "history": history, "config": self.cfg.describe(), "seconds": seconds,
                   "ranks": sharding.rank_memory(self.sharding, self.distiller, self.dist, self.device)}
        self.run_dir.write_summary(summary)
        result = RunResult(final=student or {}, history=list(history), teachers=teachers, best=summary["best"],
                           summary=summary, rows=result_rows(self.distiller, teachers, peers, student),
                           files=self.run_dir.files(), seconds=seconds, config=summary["config"], peers=peers)
        self.reporter.run_end(result)
        return result

    def final_metrics(self, last: Optional[Dict[str, Any]]):
        """(the student's metrics, each trained peer's) after the last epoch: from its metrics row,
        or evaluated now when no epoch ran in this process."""
        if self.data is None:
            return None, {}
        args = self.eval_args()
        if last is None:
            return evaluate(self.distiller.student, *args), \
                evaluate_models(self.distiller, self.peers, *args)
        student = row_metrics(last, self.task)
        peers = {n: dict(m, params=param_count(self.distiller.model(n)))
                 for n in self.peers for m in [row_metrics(last, self.task, f"/{n}")] if m is not None}
        return student, peers
