"""The training procedure of a spec: its stages, and the phases each training step of a stage runs.

Plain data, built by the compiler (:mod:`kdsl.compiler.procedure`) and read by the distiller (which
step to run), the trainer (epochs per stage, one optimizer per phase) and ``kdsl explain`` /
``kdsl graph``. A spec that declares no stage has one implicit stage, ``main``; the losses and
``optimize`` of a stage outside any phase form an implicit phase, ``step``, run after the declared
phases (or alone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from kdsl.core.diagnostics import error

IMPLICIT_STAGE = "main"
IMPLICIT_PHASE = "step"


@dataclass
class PhasePlan:
    """One phase of a stage: repeated ``repeat`` times per step, each repeat one complete
    forward / backward / optimizer step over ``losses``.

    ``optimize`` lists the parameter scopes it trains as written (``student.layer1``, ``regressor``;
    empty: the default, the student, the connectors its losses use and trainable teachers);
    ``optimizer`` is ``(name, options)`` of its own ``with``, else the stage's or the top level's,
    else ``None`` (the train block's). ``models_run`` are the models its step calls, in order
    (a generator first); ``needs_input``: the models' input is the spec's ``input`` expression.
    ``trains_input``: a generator of that input is trained here, so gradients flow back through
    the frozen teachers (not run under ``no_grad`` in this phase)."""

    name: str
    repeat: int = 1
    losses: List[str] = field(default_factory=list)
    optimize: List[str] = field(default_factory=list)
    optimizer: Optional[Tuple[str, Dict[str, Any]]] = None
    models_run: List[str] = field(default_factory=list)
    needs_input: bool = False
    trains_input: bool = False
    freeze: List[str] = field(default_factory=list)  # scopes frozen in this phase only


@dataclass
class StagePlan:
    """One stage: ``epochs`` (``None``: the rest of the run), its phases in order, and the scopes
    frozen while it runs (top-level ``freeze`` and ``frozen`` connectors included)."""

    name: str
    epochs: Optional[int] = None
    phases: List[PhasePlan] = field(default_factory=list)
    freeze: List[str] = field(default_factory=list)

    def phase(self, name: str) -> PhasePlan:
        found = next((p for p in self.phases if p.name == name), None)
        if found is None:
            from kdsl.core.suggest import did_you_mean

            raise error("KD514", f"stage '{self.name}' has no phase '{name}'",
                        hint=did_you_mean(name, [p.name for p in self.phases]) or
                        "its phases: " + ", ".join(p.name for p in self.phases))
        return found


@dataclass
class Procedure:
    """The stages of a run, in order. ``declared``: the spec declares stages, phases or an
    ``input`` (otherwise the one implicit stage and phase behave exactly as a plain step)."""

    stages: List[StagePlan] = field(default_factory=list)
    declared: bool = False

    def stage(self, name: str) -> StagePlan:
        found = next((s for s in self.stages if s.name == name), None)
        if found is None:
            from kdsl.core.suggest import did_you_mean

            raise error("KD514", f"the spec has no stage '{name}'",
                        hint=did_you_mean(name, [s.name for s in self.stages]) or
                        "its stages: " + ", ".join(s.name for s in self.stages))
        return found

    def ranges(self, total_epochs: int) -> List[Tuple[StagePlan, int, int]]:
        """``(stage, first epoch, end epoch)`` (end exclusive) for a run of ``total_epochs``.

        A stage without ``epochs`` takes what the others leave (the last such one, if the spec has
        several: earlier ones get none); when every stage has ``epochs`` and they leave epochs over,
        the last stage runs on to the end. KD214 when the stages need more epochs than the run has.
        """
        fixed = sum(s.epochs for s in self.stages if s.epochs is not None)
        if fixed > total_epochs:
            parts = ", ".join(f"{s.name} {s.epochs}" for s in self.stages if s.epochs is not None)
            raise error("KD214", f"the stages need {fixed} epochs ({parts}) but the run has "
                        f"{total_epochs}", hint="give the run more epochs, or its stages fewer")
        open_stages = [s for s in self.stages if s.epochs is None]
        rest = open_stages[-1] if open_stages else self.stages[-1]
        out: List[Tuple[StagePlan, int, int]] = []
        start = 0
        for s in self.stages:
            if s is rest:
                n = total_epochs - fixed + (s.epochs or 0)
            else:
                n = s.epochs or 0
            out.append((s, start, start + n))
            start += n
        return out
