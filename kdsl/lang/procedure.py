"""The training procedure of a spec: its stages, the phases each step of a stage runs, and the
epochs each stage takes. The one reading of the scoping rules of ``stage`` and ``phase`` blocks
(:func:`read_procedure`) and the one epoch rule (:func:`check_stage_epochs`), for the verifier,
the compiler (:mod:`kdsl.compiler.procedure` adds what each phase runs), the runtime
(``distiller.procedure``, ``Distiller.stage_ranges``) and the trainer.

- A run is a sequence of stages; a spec that declares none has one, ``main``.
- A stage without ``epochs`` takes the rest of the run. At most one stage may leave its epochs
  out, and the rest must hold at least one epoch; when every stage has ``epochs`` they add up to
  the run's. Anything else is KD220, located at the stage where it shows.
- A step of a stage runs its phases in order, each ``repeat`` times: the top-level phases first,
  then the stage's own, then one unnamed phase, ``step``, computing the losses outside any phase
  (the top level's, then the stage's) when there are any, or when no phase is declared.
- A top-level ``freeze`` holds in every stage and phase, a stage's in every phase of that stage
  (freezes accumulate: top level, stage, phase); the innermost ``optimize`` wins (a phase's
  replaces its stage's, which replaces the top level's). Without any ``optimize`` a phase trains
  what a spec always trained: the student, the connectors its losses use that are not frozen,
  and the trainable teachers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import Diagnostic, KdslError, Note, error, make
from kdsl.core.span import Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.lr_schedule import OWN_SCHEDULE, schedule_value, split_own_schedule
from kdsl.lang.param_groups import GROUPS, groups_value, split_groups

IMPLICIT_STAGE = "main"
IMPLICIT_PHASE = "step"


@dataclass
class Phase:
    """One phase of a stage: repeated ``repeat`` times per step, each repeat one complete
    forward / backward / optimizer step over its losses.

    From the spec: ``loss_decls``; ``optimize_decl``, the innermost ``optimize`` (None: the
    default set, see the module's doc); ``freezes``, every ``freeze`` that holds here (top level,
    stage, phase); ``optimizer_call``, the first ``optimize ... with`` of the phase, its stage or
    the top level (None: the train block's optimizer); ``freeze``, the scopes frozen in this
    phase only. From the compiler (:mod:`kdsl.compiler.procedure`): ``models_run``, the models
    its step calls in order (a generator first); ``needs_input``: the models' input is the spec's
    ``input`` expression; ``trains_input``: a generator of that input is trained here, so
    gradients flow back through the frozen teachers (not run under ``no_grad`` in this phase)."""

    name: str
    repeat: int = 1
    decl: Optional[ir.PhaseDecl] = None  # None: the implicit phase
    loss_decls: Tuple[ir.LossDecl, ...] = ()
    optimize_decl: Optional[ir.OptimizeDecl] = None
    freezes: Tuple[ir.FreezeDecl, ...] = ()
    optimizer_call: Optional[ir.Call] = None
    freeze: List[str] = field(default_factory=list)
    models_run: List[str] = field(default_factory=list)
    needs_input: bool = False
    trains_input: bool = False

    @property
    def losses(self) -> List[str]:
        """The names of the losses it computes, in spec order."""
        return [loss.name for loss in self.loss_decls]

    @property
    def optimize(self) -> List[str]:
        """The parameter scopes it trains as written (``student.layer1``); empty: the default."""
        return [str(t) for t in self.optimize_decl.targets] if self.optimize_decl is not None else []

    @property
    def optimizer(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(name, options)`` of its optimizer; None: the train block's."""
        return optimizer_setting(self.optimizer_call) if self.optimizer_call is not None else None


@dataclass
class Stage:
    """One stage: ``epochs`` as declared (None: the rest of the run), its phases in order, and
    ``freeze``, the scopes frozen while it runs (top-level ``freeze`` and ``frozen`` connectors
    included)."""

    name: str
    epochs: Optional[int] = None
    phases: List[Phase] = field(default_factory=list)
    freeze: List[str] = field(default_factory=list)
    decl: Optional[ir.StageDecl] = None  # None: the implicit stage of a spec without stages

    @property
    def batch_size(self) -> Optional[int]:
        """Its own ``batch_size`` (``stage NAME batch_size B``); None: the run's."""
        return self.decl.batch_size if self.decl is not None else None

    @property
    def phased(self) -> bool:
        """Whether phases are declared for it (at the top level, or inside it)."""
        return any(p.decl is not None for p in self.phases)

    def phase(self, name: str) -> Phase:
        return _by_name(self.phases, name, f"stage '{self.name}' has no phase", "its phases")


def _by_name(items, name: str, missing: str, listing: str):
    """The stage or phase called ``name``; KD514 (``missing 'name'``, with the names there are)."""
    found = next((item for item in items if item.name == name), None)
    if found is None:
        names = [item.name for item in items]
        raise error("KD514", f"{missing} '{name}'", hint=did_you_mean(name, names) or f"{listing}: " + ", ".join(names))
    return found


@dataclass
class Procedure:
    """The stages of a run, in order. ``declared``: the spec declares stages, phases or an
    ``input`` (otherwise the one implicit stage and phase behave exactly as a plain step)."""

    stages: List[Stage] = field(default_factory=list)
    declared: bool = False

    def stage(self, name: str) -> Stage:
        return _by_name(self.stages, name, "the spec has no stage", "its stages")

    def ranges(self, total_epochs: int) -> List[Tuple[Stage, int, int]]:
        """``(stage, first epoch, end epoch)`` (end exclusive) for a run of ``total_epochs``, by
        the one epoch rule (KD220 where the stages contradict it: :func:`check_stage_epochs`)."""
        decls = [s.decl for s in self.stages if s.decl is not None]
        problems = check_stage_epochs(decls, total_epochs)
        if problems:
            raise KdslError(problems)
        fixed = sum(s.epochs for s in self.stages if s.epochs is not None)
        out: List[Tuple[Stage, int, int]] = []
        start = 0
        for s in self.stages:
            n = s.epochs if s.epochs is not None else total_epochs - fixed
            out.append((s, start, start + n))
            start += n
        return out


# ------------------------------------------------------------------------------ the epoch rule
def check_stage_epochs(stages: Sequence[ir.StageDecl], total: Optional[int],
                       total_span: Optional[Span] = None) -> List[Diagnostic]:
    """KD220 for each way the stages' declared epochs break the rule (see the module's doc),
    against the run's ``total`` when it is known (None: only what the stages say alone).
    ``total_span``: where the run's epochs are set, shown as a note."""
    found = [make("KD220", f"stage '{s.name}' runs {s.epochs} epochs", s.epochs_span,
                  hint="a stage runs at least 1 epoch; leave 'epochs' out to run the rest")
             for s in stages if s.epochs is not None and s.epochs < 1]
    open_stages = [s for s in stages if s.epochs is None]
    found += [make("KD220", f"stage '{extra.name}' also leaves out its epochs", extra.name_span,
                   hint="only one stage runs the rest of the run; give the others 'epochs N'",
                   notes=[Note(message=f"stage '{open_stages[0].name}' runs the rest",
                               span=open_stages[0].name_span)])
              for extra in open_stages[1:]]
    if found or total is None or not stages:
        return found
    fixed = sum(s.epochs for s in stages if s.epochs is not None)
    if open_stages and fixed >= total:
        message = (f"the stages with epochs take {fixed} of the run's {total} epochs, leaving none "
                   "for the stage without")
        at, hint = open_stages[0], "lower the stages' epochs or raise the run's"
    elif not open_stages and fixed != total:
        message = f"the stages run {fixed} epochs, the run {total}"
        at, hint = stages[-1], "leave 'epochs' out of one stage so that it runs the rest"
    else:
        return []
    notes = [Note(message=f"the run's epochs are set to {total}", span=total_span)] if total_span else []
    return [make("KD220", message, at.epochs_span or at.name_span, hint=hint, notes=notes)]


# ------------------------------------------------------------------------------ scoping
def optimizer_setting(call: ir.Call) -> Tuple[str, Dict[str, Any]]:
    """``adam(lr=0.1)`` as ``("adam", {"lr": 0.1})`` (positional options named by the catalog)."""
    component = REGISTRY.get("optimizer", call.func)
    names = [p.name for p in component.options] if component is not None else []
    options: Dict[str, Any] = {}
    for name, arg in zip(names, call.args):
        options[name] = try_literal(arg)[1]
    call, own_schedule = split_own_schedule(call)
    call, groups = split_groups(call)
    if groups is not None:
        options[GROUPS] = groups_value(groups)
    for k in call.kwargs:
        options[k.name] = try_literal(k.value)[1]
    if own_schedule is not None:  # the phase's own lr schedule, which build_stage takes out
        options[OWN_SCHEDULE] = schedule_value(own_schedule.value)
    return call.func, options


def _split(statements) -> Tuple[List[ir.LossDecl], Optional[ir.OptimizeDecl], List[ir.FreezeDecl]]:
    losses = [s for s in statements if isinstance(s, ir.LossDecl)]
    optimize = next((s for s in statements if isinstance(s, ir.OptimizeDecl)), None)
    freezes = [s for s in statements if isinstance(s, ir.FreezeDecl)]
    return losses, optimize, freezes


def _optimizer_call(*scopes: Sequence[ir.Node]) -> Optional[ir.Call]:
    """The first ``optimize ... with`` of the scopes, innermost first."""
    for statements in scopes:
        for s in statements:
            if isinstance(s, ir.OptimizeDecl) and s.optimizer is not None:
                return s.optimizer
    return None


def _phases(outer: Sequence[ir.Node], stage: Optional[ir.StageDecl],
            stage_freeze: List[str]) -> List[Phase]:
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
        out.append(Phase(phase.name, phase.repeat, phase, tuple(ph_losses), ph_opt or optimize,
                         tuple(freezes + ph_freezes), _optimizer_call(phase.statements, inner, outer),
                         freeze=[str(f.target) for f in ph_freezes if str(f.target) not in stage_freeze]))
    if loose or not declared:
        out.append(Phase(IMPLICIT_PHASE, 1, None, tuple(loose), optimize, tuple(freezes),
                         _optimizer_call(inner, outer)))
    return out


def _stage_freeze(statements: Sequence[ir.Node], stage: Optional[ir.StageDecl]) -> List[str]:
    """The scopes a stage freezes: the top level's, its own, then the ``frozen`` connectors."""
    inner = stage.statements if stage is not None else ()
    freeze: List[str] = []
    for s in list(statements) + list(inner):
        if isinstance(s, ir.FreezeDecl) and str(s.target) not in freeze:
            freeze.append(str(s.target))
    freeze += [c.name for c in statements
               if isinstance(c, ir.ConnectorDecl) and c.frozen and c.name not in freeze]
    return freeze


def read_procedure(statements: Sequence[ir.Node]) -> Procedure:
    """The procedure of a verified program (``spec.statements``): its stages, each with its
    phases and what they compute, train and freeze."""
    declared = any(isinstance(s, (ir.StageDecl, ir.PhaseDecl, ir.InputDecl)) for s in statements)
    decls = [s for s in statements if isinstance(s, ir.StageDecl)] or [None]
    stages = []
    for decl in decls:
        freeze = _stage_freeze(statements, decl)
        stages.append(Stage(decl.name if decl else IMPLICIT_STAGE, decl.epochs if decl else None,
                            _phases(statements, decl, freeze), freeze, decl))
    return Procedure(stages, declared)
