"""A run's stages and phases as the loop drives them: each (stage, phase) with its own optimizer,
lr schedule and grad scaler, built when its stage starts, saved and restored with the run.

The procedure comes from the compiled distiller (``distiller.procedure``; ``stage_ranges``, by the
one epoch rule of :mod:`kdsl.lang.procedure`; ``trainable_parameters``). A spec without stages or
phases is one stage ("main") of one phase ("step") over the whole run, with the train block's
optimizer over what the distiller trains: exactly today's single optimizer and schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import KdslError, error
from kdsl.lang import ir
from kdsl.lang.procedure import Stage
from kdsl.training.config import optimizer_of
from kdsl.training.accumulate import optimizer_steps
from kdsl.training.sharding import local_optimizer_state
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
        self.optimizer.load_state_dict(local_optimizer_state(self.optimizer, state["optimizer"]))
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
    batch_size: Optional[int] = None  # its own (`stage NAME batch_size B`); None: the run's

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


def build_stage(distiller, cfg, plan: Stage, first: int, end: int, steps_per_epoch: int) -> StageRun:
    """Start a stage: its freezes applied, then a fresh optimizer and lr schedule per phase."""
    distiller.begin_stage(plan.name)
    phases = []
    for phase in plan.phases:
        params = list(distiller.trainable_parameters(plan.name, phase.name))
        if not params:
            # shown at the first freeze that holds in the phase
            freeze = phase.freezes[0] if phase.freezes else None
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
    return StageRun(plan.name, first, end, phases, plan.decl is not None, plan.phased, plan.batch_size)


def named(distiller, params: List[nn.Parameter]) -> List[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs, names as the distiller knows them (``student.fc.bias``), for
    the optimizers' parameter groups by role."""
    names = {id(p): n for n, p in spec_named_parameters(distiller)}
    return [(names.get(id(p), ""), p) for p in params]


def _optimizer(cfg, own: Optional[Tuple[str, Dict[str, Any]]], params: List[Tuple[str, nn.Parameter]]):
    """The phase's optimizer (:func:`~kdsl.training.config.optimizer_of`), built on named
    parameters (its groups go by their names and roles)."""
    name, options = optimizer_of(cfg, own)
    component = REGISTRY.get("optimizer", name)
    if component.option("bias_lr_mult") is None:  # a plugin: the parameters, as before
        params = [p for _, p in params]
    return component.load()(params, **options)


def restore_optimization(stage: StageRun, optimization: Dict[str, Any], path: str) -> None:
    """The checkpoint's optimizer, schedule and scaler states of ``stage`` (KD703 when they do not
    fit this run's optimizers: another optimizer, other parameters, a hand-edited state)."""
    if stage.name not in optimization:
        raise error("KD703", f"{path} holds no optimizer state for stage '{stage.name}'",
                    hint="resume with the spec that started the run")
    try:
        stage.load_state_dict(optimization[stage.name])
        for phase in stage.phases:  # torch loads buffers of any shape; a step would then fail
            for param, buffers in phase.optimizer.state.items():
                wrong = [k for k, v in buffers.items() if isinstance(v, torch.Tensor) and v.dim()
                         and v.shape != param.shape]
                if wrong:
                    raise ValueError(f"its '{wrong[0]}' is {list(buffers[wrong[0]].shape)} for a "
                                     f"parameter of {list(param.shape)}")
            for group in phase.optimizer.param_groups:  # a hand-edited lr 'x' fails only at the step
                bad = next((k for k, v in group.items() if isinstance(phase.optimizer.defaults.get(k), float)
                            and not _finite_number(v)), None)
                if bad is not None:
                    raise ValueError(f"its '{bad}' is {group[bad]!r}, not a finite number")
    except KdslError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch's own checks of a foreign optimizer state
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise error("KD703", f"{path}: the optimizer state of stage '{stage.name}' does not fit this run's "
                    f"optimizer ({type(exc).__name__}{': ' + detail if detail else ''})",
                    hint="resume with the optimizer that started the run") from None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def input_text(spec: ir.Spec) -> Optional[str]:
    if spec.input is None:
        return None
    from kdsl.lang.printer import expr_text

    return expr_text(spec.input.value)
