"""The training loop: epochs of steps through a compiled distiller, evaluation after each epoch,
a checkpoint at the end of each, and a resumed run that continues bit for bit.

Each step: teacher passes (frozen teachers under no_grad, inside the distiller), the student's
pass, the loss graph, backward, optimizer and lr-schedule step. Progress goes to a
:class:`~kdsl.training.report.Reporter`; files go through :class:`~kdsl.training.rundir.RunDir`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.training import distributed
from kdsl.training.data import Data
from kdsl.training.distributed import Dist, all_reduce_sum, autocast, barrier, broadcast_buffers
from kdsl.training.evaluate import evaluate, evaluate_teachers, param_count, result_rows
from kdsl.training.report import Reporter, RunResult, RunStart
from kdsl.training.rng import rng_state, set_rng_state
from kdsl.training.rundir import RunDir, spec_fingerprint

REPORT_EVERY = 10  # steps between progress events (and loss finiteness checks)


@dataclass
class Optimization:
    """What updates the weights: optimizer, lr schedule, grad scaler (fp16), the parameters."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[Any]
    params: List[nn.Parameter]


def _grad_scaler():
    # torch.amp.GradScaler arrived in torch 2.3; pyproject.toml claims 2.2, which has the CUDA one.
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class Trainer:
    """One run of the loop over a compiled distiller: ``fit()`` trains, ``evaluate_run()`` only
    evaluates the run's saved student and the teachers."""

    def __init__(self, spec: ir.Spec, cfg, distiller, data: Data, run_dir: RunDir, device: torch.device,
                 dist: Dist, reporter: Reporter) -> None:
        self.spec, self.cfg, self.distiller, self.data = spec, cfg, distiller, data
        self.run_dir, self.device, self.dist, self.reporter = run_dir, device, dist, reporter
        self.steps_per_epoch = len(data.train)
        self.history: List[Dict[str, Any]] = []
        self.global_step = 0
        self.teachers: Optional[Dict[str, Dict[str, float]]] = None
        self.fingerprint = spec_fingerprint(spec)
        self.runner: nn.Module = distiller.student
        self.extra: List[nn.Parameter] = []

    # ---------------------------------------------------------------- set-up
    def build_optimization(self) -> Optimization:
        cfg = self.cfg
        name, options = cfg.optimizer
        options = dict(options)
        if cfg.lr is not None:
            options["lr"] = cfg.lr
        params = [p for p in self.distiller.parameters() if p.requires_grad]
        optimizer = REGISTRY.get("optimizer", name).load()(params, **options)
        sched_name, sched_options = cfg.lr_schedule
        scheduler = REGISTRY.get("lr_schedule", sched_name).load()(
            optimizer, epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch, **sched_options)
        scaler = _grad_scaler() if cfg.amp == "fp16" else None
        return Optimization(optimizer, scheduler, scaler, params)

    def resume(self, opt: Optimization) -> int:
        """Restore the run from its checkpoint; the number of epochs already done."""
        state = self.run_dir.read_checkpoint(self.fingerprint, self.device)
        RunDir.restore(state, self.distiller, opt.optimizer, opt.scheduler, opt.scaler)
        set_rng_state(state["rng"], self.device)
        self.global_step = state["step"]
        self.teachers = state.get("teachers")
        self.history = list(state["history"])
        return state["epoch"]

    def run_start(self, start_epoch: int, resumed: bool) -> RunStart:
        cfg = self.cfg
        opt, opt_options = cfg.optimizer
        lr = cfg.lr if cfg.lr is not None else opt_options.get("lr", REGISTRY.get("optimizer", opt).option("lr").default)
        return RunStart(
            spec_file=self.spec.file, student=self.distiller.student_name,
            student_params=param_count(self.distiller.student), teachers=dict(self.teachers or {}),
            data=cfg.data[0], train_size=self.data.train_size, val_size=self.data.val_size,
            epochs=cfg.epochs, steps_per_epoch=self.steps_per_epoch, batch_size=cfg.batch_size,
            optimizer=opt, lr=lr, lr_schedule=cfg.lr_schedule[0], seed=cfg.seed, device=self.device.type,
            amp=cfg.amp, world=self.dist.world, out=self.run_dir.path, start_epoch=start_epoch, resumed=resumed)

    # ---------------------------------------------------------------- the run
    def fit(self, resume: bool = False) -> RunResult:
        cfg = self.cfg
        t_start = time.time()
        opt = self.build_optimization()
        start_epoch = self.resume(opt) if resume else 0
        self.runner, self.extra = distributed.wrap_student(self.distiller.student, opt.params, self.dist,
                                                           self.device)
        if self.teachers is None:
            self.teachers = self.evaluate_teachers()
        self.reporter.run_start(self.run_start(start_epoch, resume))
        for epoch in range(start_epoch, cfg.epochs):
            self.run_epoch(epoch, opt)
        if self.dist.enabled:
            distributed.check_ranks_agree(self.distiller.student, self.dist, self.device)
        return self.finish(time.time() - t_start)

    def evaluate_teachers(self) -> Dict[str, Dict[str, float]]:
        if not self.cfg.eval_teachers:
            return {}
        return evaluate_teachers(self.distiller, self.data.val, self.device, self.cfg.amp, self.dist)

    def run_epoch(self, epoch: int, opt: Optimization) -> None:
        cfg = self.cfg
        t0 = time.time()
        self.data.start_epoch(epoch)
        self.distiller.train()
        self.reporter.epoch_start(epoch, cfg.epochs, self.steps_per_epoch)
        sums, total, steps = self.train_epoch(epoch, opt)
        if self.dist.enabled:
            broadcast_buffers(self.distiller.student)
        keys = list(sums)
        reduced = all_reduce_sum([total.item()] + [sums[k].item() for k in keys] + [float(steps)],
                                 self.dist, self.device)
        n = max(reduced[-1], 1.0)
        val = evaluate(self.distiller.student, self.data.val, self.device, cfg.amp, self.dist)
        row: Dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step,
                               "lr": opt.optimizer.param_groups[0]["lr"], "train_loss": reduced[0] / n}
        row.update({f"train/{k}": reduced[1 + j] / n for j, k in enumerate(keys)})
        row.update({"val_top1": val["top1"], "val_top5": val["top5"], "val_loss": val["loss"],
                    "time_s": time.time() - t0})
        self.history.append(row)
        self.run_dir.write_metrics(self.history)
        self.reporter.epoch_end(row, cfg.epochs)
        if self.dist.main:
            self.save(epoch + 1, opt)
            note = self.run_dir.write_curves(self.history, self.teachers)
            if note and epoch + 1 == cfg.epochs:
                self.reporter.warning(note)
        barrier(self.dist)

    def train_epoch(self, epoch: int, opt: Optimization) -> Tuple[Dict[str, torch.Tensor], torch.Tensor, int]:
        """The steps of one epoch: (sum of each weighted term, sum of the total loss, steps)."""
        sums: Dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        steps = 0
        for i, (x, y, idx) in enumerate(self.data.train):
            result = self.step(epoch, i, x, y, idx, opt)
            steps += 1
            total += result.loss.detach().double()
            for k, v in result.losses.items():
                sums[k] = sums[k] + v.detach().double() if k in sums else v.detach().double()
            if steps % REPORT_EVERY == 0 or i + 1 == self.steps_per_epoch:
                self.check_finite(result, epoch, i)
                self.reporter.step(epoch, steps, self.steps_per_epoch, {k: (v / steps).item() for k, v in sums.items()})
        return sums, total, steps

    def step(self, epoch: int, i: int, x, y, idx, opt: Optimization):
        """One training step: forward passes and the loss graph, then the update."""
        d, distiller = self.device, self.distiller
        x, y, idx = x.to(d, non_blocking=True), y.to(d, non_blocking=True), idx.to(d, non_blocking=True)
        distiller.set_progress(epoch=epoch + i / self.steps_per_epoch, step=self.global_step,
                               total_epochs=self.cfg.epochs)
        with autocast(d, self.cfg.amp):
            for name in distiller.used_teachers:
                with distiller.teacher_pass(name) as teacher:
                    teacher(x)
            with distiller.student_pass():
                self.runner(x)
            result = distiller.compute_losses(batch={"index": idx}, target=y)
        self.update(result.loss, opt)
        return result

    def update(self, loss: torch.Tensor, opt: Optimization) -> None:
        optimizer, scaler = opt.optimizer, opt.scaler
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.extra:
            distributed.average_grads(self.extra, self.dist)
        if self.cfg.grad_clip:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(opt.params, self.cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        opt.scheduler.step()
        self.global_step += 1

    def check_finite(self, result, epoch: int, i: int) -> None:
        if bool(torch.isfinite(result.loss.detach()).all()):
            return
        bad = [k for k, v in result.losses.items() if not bool(torch.isfinite(v.detach()).all())]
        term = self.spec.losses[[l.name for l in self.spec.losses].index(bad[0])] if bad else None
        raise error("KD707", f"loss {'term ' + repr(bad[0]) + ' ' if bad else ''}became "
                    f"{'nan' if torch.isnan(result.loss).any() else 'infinite'} at epoch {epoch + 1}, "
                    f"step {i + 1}", term.span if term else None,
                    hint=f"lower the learning rate or the term's weight; the last good checkpoint is in "
                    f"{self.run_dir.path}")

    # ---------------------------------------------------------------- files, the end
    def save(self, epochs_done: int, opt: Optimization) -> None:
        config = self.cfg.describe()
        self.run_dir.write_checkpoint(
            fingerprint=self.fingerprint, epoch=epochs_done, step=self.global_step, distiller=self.distiller,
            optimizer=opt.optimizer, scheduler=opt.scheduler, scaler=opt.scaler, rng=rng_state(self.device),
            teachers=self.teachers, history=self.history, config=config)
        self.run_dir.write_summary({"spec": self.spec.file, "epochs_done": epochs_done, "teachers": self.teachers,
                                    "history": self.history, "config": config})

    def finish(self, seconds: float) -> RunResult:
        history, teachers = self.history, self.teachers or {}
        last = history[-1] if history else None
        student = {"top1": last["val_top1"], "top5": last["val_top5"], "loss": last["val_loss"]} if last else \
            evaluate(self.distiller.student, self.data.val, self.device, self.cfg.amp, self.dist)
        best = max(history, key=lambda r: r["val_top1"]) if history else None
        summary = {"spec": self.spec.file, "epochs_done": last["epoch"] if last else 0,
                   "teachers": teachers, "student": student,
                   "best": {"epoch": best["epoch"], "top1": best["val_top1"]} if best else None,
                   "history": history, "config": self.cfg.describe(), "seconds": seconds}
        self.run_dir.write_summary(summary)
        result = RunResult(final=student, history=list(history), teachers=teachers, best=summary["best"],
                           summary=summary, rows=result_rows(self.distiller, teachers, student),
                           files=self.run_dir.files(), seconds=seconds, config=summary["config"])
        self.reporter.run_end(result)
        return result

    def evaluate_run(self) -> RunResult:
        """``eval_only``: the run's student.pt and the teachers on the validation set; writes nothing."""
        t_start = time.time()
        self.run_dir.read_student_into(self.distiller.student)
        teachers = self.evaluate_teachers()
        student = evaluate(self.distiller.student, self.data.val, self.device, self.cfg.amp, self.dist)
        result = RunResult(final=student, history=[], teachers=teachers, best=None,
                           summary={"teachers": teachers, "student": student},
                           rows=result_rows(self.distiller, teachers, student), files=self.run_dir.files(),
                           seconds=time.time() - t_start, eval_only=True, config=self.cfg.describe())
        self.reporter.run_end(result)
        return result
