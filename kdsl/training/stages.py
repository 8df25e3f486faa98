"""A run's stages and phases as the loop drives them: each (stage, phase) with its own optimizer,
lr schedule and grad scaler, built when its stage starts, saved and restored with the run.

The procedure comes from the compiled distiller (``distiller.procedure``, ``stage_ranges``,
``trainable_parameters``). A spec without stages or phases is one stage ("main") of one phase
("step") over the whole run, with the train block's optimizer over what the distiller trains:
exactly today's single optimizer and schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.lang.procedure import StageEpochsError, stage_epochs
from kdsl.training.accumulate import optimizer_steps
from kdsl.training.optim import build_lr_schedule, phase_schedule, spec_named_parameters


@dataclass
class PhaseRun:
    """One phase of the running stage: what it updates and how."""

    name: str
    repeat: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[Any]
    params: List[nn.Parameter]
    # parameters whose gradients the loop averages over the ranks itself (those DDP does not wrap)
    reduce: List[nn.Parameter] = field(default_factory=list)
    accumulate: int = 1  # updates summed into each optimizer step
    pending: int = 0  # updates accumulated since the last optimizer step

    def state_dict(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


@dataclass
class StageRun:
    """The running stage: its epochs ``[first, end)`` and its phases in the order they run."""

    name: str
    first: int
    end: int
    phases: List[PhaseRun]
    declared: bool  # a ``stage`` of the spec (not the implicit "main" of a spec without stages)
    phased: bool  # the stage has declared phases: its loss terms are reported as "phase/loss"

    def state_dict(self) -> Dict[str, Dict[str, Any]]:
        """Every phase's optimizer, lr schedule and grad scaler state, by phase name."""
        return {p.name: p.state_dict() for p in self.phases}

    def load_state_dict(self, state: Dict[str, Dict[str, Any]]) -> None:
        missing = [p.name for p in self.phases if p.name not in state]
        if missing:
            raise error("KD703", f"the checkpoint holds no optimizer state for phase '{missing[0]}' "
                        f"of stage '{self.name}'", hint="resume with the spec that started the run")
        for p in self.phases:
            p.load_state_dict(state[p.name])

    def key(self, phase: str, term: str) -> str:
        """How metrics name a loss term of ``phase``."""
        return f"{phase}/{term}" if self.phased else term


def _grad_scaler():
    # torch.amp.GradScaler arrived in torch 2.3; pyproject.toml claims 2.2, which has the CUDA one.
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def declared_phases(spec: ir.Spec, stage: str) -> bool:
    """Whether phases were declared for ``stage`` (at the top level, or inside the stage)."""
    if spec.phases:
        return True
    decl = next((s for s in spec.stages if s.name == stage), None)
    return decl is not None and any(isinstance(s, ir.PhaseDecl) for s in decl.statements)


def stage_ranges(spec: ir.Spec, distiller, epochs: int) -> List[Tuple[Any, int, int]]:
    """``(StagePlan, first epoch, end epoch)`` of every stage. The stages' epochs are checked
    against the run's again here, by the verifier's rule (:func:`kdsl.lang.procedure.stage_epochs`):
    a flag may have changed the run's epochs since ``kdsl check`` saw the train block."""
    if spec.stages:
        try:
            stage_epochs([s.epochs for s in spec.stages], epochs)
        except StageEpochsError as exc:
            # located where the verifier locates it: the stage that runs the rest, else the last
            open_stages = [s for s in spec.stages if s.epochs is None]
            at = open_stages[0] if open_stages else spec.stages[-1]
            raise error("KD220", f"{exc} (the run has {epochs} epochs)", at.epochs_span or at.name_span,
                        hint="give the run other epochs (--epochs, or epochs in the train block), "
                        "or its stages other ones") from None
    return list(distiller.stage_ranges(epochs))


def build_stage(spec: ir.Spec, distiller, cfg, plan, first: int, end: int, steps_per_epoch: int) -> StageRun:
    """Start a stage: its freezes applied, then a fresh optimizer and lr schedule per phase."""
    distiller.begin_stage(plan.name)
    phases = []
    for phase in plan.phases:
        params = list(distiller.trainable_parameters(plan.name, phase.name))
        if not params:
            freeze = _first_freeze(spec, plan.name)
            raise error("KD219", f"phase '{phase.name}' of stage '{plan.name}' has nothing to train: every "
                        "parameter it would update is frozen", freeze.span if freeze else None,
                        hint="optimize something its losses reach, or freeze less")
        own, schedule = phase_schedule(phase.optimizer, cfg.lr_schedule)
        optimizer = _optimizer(cfg, own, named(distiller, params))
        # the schedule runs over the stage's epochs; the phase's optimizer steps `repeat` times a step
        scheduler = build_lr_schedule(optimizer, schedule, epochs=end - first,
                                      steps_per_epoch=optimizer_steps(steps_per_epoch, cfg.accumulate)
                                      * phase.repeat)
        scaler = _grad_scaler() if cfg.amp == "fp16" else None
        phases.append(PhaseRun(phase.name, phase.repeat, optimizer, scheduler, scaler, params,
                               accumulate=cfg.accumulate))
    declared = any(s.name == plan.name for s in spec.stages)
    return StageRun(plan.name, first, end, phases, declared, declared_phases(spec, plan.name))


def named(distiller, params: List[nn.Parameter]) -> List[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs, names as the distiller knows them (``student.fc.bias``), for
    the optimizers' parameter groups by role."""
    names = {id(p): n for n, p in spec_named_parameters(distiller)}
    return [(names.get(id(p), ""), p) for p in params]


def _first_freeze(spec: ir.Spec, stage: str) -> Optional[ir.FreezeDecl]:
    """The first ``freeze`` that holds in ``stage`` (where a phase that trains nothing is shown)."""
    decl = next((s for s in spec.stages if s.name == stage), None)
    scopes = list(spec.statements) + list(decl.statements if decl else ())
    return next((s for s in scopes if isinstance(s, ir.FreezeDecl)), None)


def _optimizer(cfg, own: Optional[Tuple[str, Dict[str, Any]]], params: List[nn.Parameter]):
    """The phase's own optimizer (``optimize ... with``), else the train block's; ``--lr`` replaces
    the train block's learning rate only (an ``optimize ... with`` names its own)."""
    if own is not None:
        name, options = own
        options = dict(options)
    else:
        name, options = cfg.optimizer
        options = dict(options)
        if cfg.lr is not None:
            options["lr"] = cfg.lr
    component = REGISTRY.get("optimizer", name)
    if component.option("bias_lr_mult") is None:  # a plugin: the parameters, as before
        params = [p for _, p in params]
    return component.load()(params, **options)
