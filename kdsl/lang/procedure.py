"""What a verified spec runs, stage by stage and phase by phase: the one reading of the scoping
rules of ``stage`` and ``phase`` blocks, for the verifier, the compiler and the trainer.

- A run is a sequence of stages (one unnamed stage when the spec declares none). A stage without
  ``epochs`` takes the rest of the run (:func:`stage_epochs`).
- A step of a stage runs its phases in order, each ``repeat`` times: the top-level phases first,
  then the stage's own, then one unnamed phase (the runtime calls it ``step``) computing the
  losses outside any phase (the top level's, then the stage's) when there are any, or when no
  phase is declared.
- A top-level ``freeze`` holds in every stage and phase, a stage's in every phase of that stage
  (freezes accumulate: top level, stage, phase); the innermost ``optimize`` wins (a phase's
  replaces its stage's, which replaces the top level's). Without any ``optimize`` a phase trains
  what a spec always trained: the student, the connectors its losses use that are not frozen,
  and the trainable teachers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from kdsl.lang import ir


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a stage's step, with everything that holds in it."""

    name: Optional[str]  # None: the stage has no phases
    repeat: int
    losses: Tuple[ir.LossDecl, ...]
    optimize: Optional[ir.OptimizeDecl]  # None: the default set (see the module's doc)
    freezes: Tuple[ir.FreezeDecl, ...]
    decl: Optional[ir.PhaseDecl] = None


@dataclass(frozen=True)
class StagePlan:
    """One stage of the run."""

    name: Optional[str]  # None: the spec has no stages
    epochs: Optional[int]  # as declared; None: the rest of the run
    phases: Tuple[PhasePlan, ...]
    decl: Optional[ir.StageDecl] = None


def _split(statements) -> Tuple[List[ir.LossDecl], Optional[ir.OptimizeDecl], List[ir.FreezeDecl]]:
    losses = [s for s in statements if isinstance(s, ir.LossDecl)]
    optimize = next((s for s in statements if isinstance(s, ir.OptimizeDecl)), None)
    freezes = [s for s in statements if isinstance(s, ir.FreezeDecl)]
    return losses, optimize, freezes


def _phases(outer: Sequence[ir.Node], stage: Optional[ir.StageDecl]) -> Tuple[PhasePlan, ...]:
    top_losses, top_opt, top_freezes = _split(outer)
    inner = stage.statements if stage is not None else ()
    st_losses, st_opt, st_freezes = _split(inner)
    loose, freezes = top_losses + st_losses, top_freezes + st_freezes
    optimize = st_opt or top_opt
    declared = [p for p in outer if isinstance(p, ir.PhaseDecl)] + \
        [p for p in inner if isinstance(p, ir.PhaseDecl)]
    out = []
    for phase in declared:
        ph_losses, ph_opt, ph_freezes = _split(phase.statements)
        out.append(PhasePlan(phase.name, phase.repeat, tuple(ph_losses), ph_opt or optimize,
                             tuple(freezes + ph_freezes), phase))
    if loose or not declared:
        out.append(PhasePlan(None, 1, tuple(loose), optimize, tuple(freezes)))
    return tuple(out)


def plan(statements: Sequence[ir.Node]) -> Tuple[StagePlan, ...]:
    """The stages of a verified program (``spec.statements``), each with its phases."""
    stages = [s for s in statements if isinstance(s, ir.StageDecl)]
    if not stages:
        return (StagePlan(None, None, _phases(statements, None)),)
    return tuple(StagePlan(s.name, s.epochs, _phases(statements, s), s) for s in stages)


class StageEpochsError(ValueError):
    """The stages' epochs do not fit the run's (the message says how)."""


def stage_epochs(declared: Sequence[Optional[int]], total: Optional[int]) -> Tuple[int, ...]:
    """Each stage's number of epochs, from the declared ones (None: the rest of the run) and the
    run's ``total`` (None when nothing sets it: then every stage must declare its epochs, and the
    run is their sum). At most one stage may leave its epochs out, and it gets at least one."""
    fixed = sum(e for e in declared if e is not None)
    open_stages = [i for i, e in enumerate(declared) if e is None]
    if any(e is not None and e < 1 for e in declared):
        raise StageEpochsError("a stage runs at least 1 epoch")
    if len(open_stages) > 1:
        raise StageEpochsError("only one stage may leave out its epochs (it runs the rest)")
    if total is None:
        if open_stages:
            raise StageEpochsError("a stage without epochs needs the run's epochs")
        return tuple(declared)  # type: ignore[arg-type]
    if open_stages:
        if fixed >= total:
            raise StageEpochsError(f"the stages with epochs take {fixed} of the run's {total} "
                                   "epochs, leaving none for the stage without")
        return tuple(total - fixed if e is None else e for e in declared)
    if fixed != total:
        raise StageEpochsError(f"the stages run {fixed} epochs, the run {total}")
    return tuple(declared)  # type: ignore[arg-type]


def stage_at(epochs: Sequence[int], epoch: int) -> Tuple[int, int]:
    """(stage index, epoch within that stage) of the run's 0-based ``epoch``."""
    start = 0
    for index, n in enumerate(epochs):
        if epoch < start + n:
            return index, epoch - start
        start += n
    raise IndexError(f"epoch {epoch} is past the run's {start} epochs")
