"""The verifier's checks of training procedures: ``stage`` and ``phase`` blocks, ``optimize``,
``freeze``, ``init`` and ``input`` (the scoping rules are :mod:`kdsl.lang.procedure`'s).

Each statement is resolved where it stands (``_verify_<kind>``); the checks that need the whole
program (what each phase's losses reach, stage epochs against the run, frozen connectors that
nothing gives weights) run once everything is resolved, in :meth:`_check_procedure`.
:class:`ProcedureChecks` is a mixin of :class:`~kdsl.lang.verify.Verifier`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set

from kdsl.core.diagnostics import Note, clip
from kdsl.core.suggest import did_you_mean
from kdsl.lang.lr_schedule import split_own_schedule, verify_schedule
from kdsl.lang.param_groups import split_groups, verify_groups
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.catalog.settings import BY_NAME as SETTINGS_BY_NAME
from kdsl.lang.procedure import Phase, check_stage_epochs, read_procedure
from kdsl.lang.verify_names import KIND_WORD, Use
from kdsl.lang.verify_reach import gradient_reach, input_reads
from kdsl.lang.visit import find

# Like every other count (epochs, steps per epoch), a phase's repeat has an upper bound; the
# data-free methods repeat a phase 5 times.
MAX_PHASE_REPEAT = 1_000
# a stage's own batch size (`stage NAME batch_size B`) has the batch_size setting's range
MAX_STAGE_BATCH = SETTINGS_BY_NAME["batch_size"].maximum


class ProcedureChecks:
    """Stages, phases and what they train (a mixin of the Verifier)."""

    # ================================================================ blocks
    def _check_block_names(self, statements: Sequence[ir.Node]) -> None:
        """Stage names are unique; a phase's name is unique among the phases that run in the
        same step (the top-level ones and those of its stage)."""
        self._unique([s for s in statements if isinstance(s, ir.StageDecl)], "stage")
        top = [s for s in statements if isinstance(s, ir.PhaseDecl)]
        self._unique(top, "phase")
        for stage in (s for s in statements if isinstance(s, ir.StageDecl)):
            self._unique(top + [p for p in stage.statements if isinstance(p, ir.PhaseDecl)], "phase",
                         skip=len(top))

    def _unique(self, blocks, word: str, skip: int = 0) -> None:
        seen: Dict[str, ir.Node] = {}
        for i, b in enumerate(blocks):
            if b.name in seen and i >= skip:
                self.diags.error("KD217", f"{word} '{b.name}' is already declared", b.name_span,
                                 hint=f"give each {word} its own name",
                                 notes=[Note(message=f"'{b.name}' first declared", span=seen[b.name].name_span)])
            seen.setdefault(b.name, b)

    def _verify_stage(self, stmt: ir.StageDecl, use: Use):
        if stmt.batch_size is not None and not 1 <= stmt.batch_size <= MAX_STAGE_BATCH:
            self.diags.error("KD240", f"stage '{stmt.name}' has batch_size {clip(str(stmt.batch_size), 40)}",
                             stmt.batch_size_span, hint=f"a stage's batch_size is 1 to {MAX_STAGE_BATCH:,}")
        return self._verify_block(stmt, use)  # its epochs: _check_stage_epochs

    def _verify_phase(self, stmt: ir.PhaseDecl, use: Use):
        if not 1 <= stmt.repeat <= MAX_PHASE_REPEAT:
            self.diags.error("KD220", f"phase '{stmt.name}' repeats {clip(str(stmt.repeat), 40)} times",
                             stmt.repeat_span, hint=f"a phase runs 1 to {MAX_PHASE_REPEAT:,} times per step")
        return self._verify_block(stmt, use)

    def _verify_block(self, block, use: Use):
        inner = [self.verify_statement(s, use.position) for s in block.statements]
        return block.model_copy(update={"statements": tuple(s for s in inner if s is not None)})

    # ================================================================ optimize, freeze, init
    def _scope(self, scope: ir.ParamScope, use: Use, verb: str) -> Optional[ir.ParamScope]:
        """What an ``optimize``/``freeze`` target names: a model, a module of one, a connector."""
        decl = self.decls.get(scope.name)
        if decl is None:
            if scope.name not in self.broken:
                names = list(self.models) + list(self.connectors)
                self.diags.error("KD218", f"unknown model or connector '{scope.name}'", scope.span,
                                 hint=did_you_mean(scope.name, names) or
                                 (f"{verb} names models, modules of models and connectors"))
            return None
        if not self._declared_before(scope.name, scope.span, use):
            return None
        if isinstance(decl, ir.ModelDecl):
            return scope.model_copy(update={"what": "module" if scope.path else "model"})
        if isinstance(decl, ir.ConnectorDecl) and not scope.path:
            return scope.model_copy(update={"what": "connector"})
        if isinstance(decl, ir.ConnectorDecl):
            self.diags.error("KD218", f"'{verb}' takes a connector whole, not '{scope}'", scope.span,
                             hint=f"write {verb} {scope.name}")
            return None
        self.diags.error("KD218", f"'{scope.name}' is a {KIND_WORD[type(decl)]}; '{verb}' names models, "
                         "modules of models and connectors", scope.span)
        return None

    def _verify_optimize(self, stmt: ir.OptimizeDecl, use: Use):
        targets = [self._scope(t, use, "optimize") for t in stmt.targets]
        for t in targets:
            if t is not None:
                self._trainable(t)
        if stmt.optimizer is not None:
            optimizer, own_schedule = split_own_schedule(stmt.optimizer)
            optimizer, groups = split_groups(optimizer)
            component = self._component("optimizer", optimizer, "KD304", "optimizer")
            if component is not None:  # the binding of its own options is kept on the call as written
                bound_call = self._bind_call(component, optimizer, use, inputs=False, resolve=False)
                if bound_call is not None:
                    stmt = stmt.model_copy(update={"optimizer": stmt.optimizer.model_copy(
                        update={"bound": bound_call.bound})})
            if groups is not None:
                verify_groups(self.diags, component, groups)
            if own_schedule is not None:
                verify_schedule(self, own_schedule.value, use)
        if any(t is None for t in targets):
            return stmt
        return stmt.model_copy(update={"targets": tuple(targets)})

    def _trainable(self, scope: ir.ParamScope) -> None:
        decl = self.decls[scope.name]
        if isinstance(decl, ir.ModelDecl) and decl.frozen:
            self.diags.error("KD218", f"teacher '{decl.name}' is frozen and cannot be optimized",
                             scope.span, hint="add 'trainable' to its declaration to train it",
                             notes=[Note(message=f"'{decl.name}' declared", span=decl.name_span)])
        elif isinstance(decl, ir.ConnectorDecl) and decl.frozen:
            self.diags.error("KD218", f"connector '{decl.name}' is declared frozen and cannot be optimized",
                             scope.span, hint="remove 'frozen', or freeze it only in the stages that "
                             f"keep it fixed: freeze {decl.name}",
                             notes=[Note(message=f"'{decl.name}' declared", span=decl.name_span)])

    def _verify_freeze(self, stmt: ir.FreezeDecl, use: Use):
        target = self._scope(stmt.target, use, "freeze")
        return stmt if target is None else stmt.model_copy(update={"target": target})

    def _verify_init(self, stmt: ir.InitDecl, use: Use):
        target, source = stmt.target, stmt.source
        ok = self._model_ref(target.model, target.model_span or target.span, use.position)
        ok = self._model_ref(source.model, source.model_span or source.span, use.position) and ok
        if ok and target.model == source.model:
            self.diags.error("KD222", f"'init' copies from another model, not from '{source.model}' itself",
                             source.span, hint="name a module of a teacher (or of another model) after 'from'")
        return stmt

    # ================================================================ input
    def _verify_input(self, stmt: ir.InputDecl, use: Use):
        value = self.resolve(stmt.value, use)
        if value is None:
            return stmt
        bad = input_reads(value)
        if bad is not None:
            self.diags.error("KD223", f"the input cannot read {bad[0]}", bad[1].span,
                             hint="records, connectors and batch fields come from the models' pass on "
                             "the input; build it from generators and functions: input = gen(noise(100))")
        elif isinstance(value, (ir.Const, ir.ListExpr, ir.ModuleRef)):
            self.diags.error("KD223", "the input must be a tensor", value.span,
                             hint="e.g. input = gen(noise(100))")
        return stmt.model_copy(update={"value": value})

    def _check_run_input(self, result: Sequence[ir.Node]) -> None:
        inputs = [s for s in result if isinstance(s, ir.InputDecl)]
        for extra in inputs[1:]:
            self.diags.error("KD223", "a second 'input'", extra.span, hint="a spec has at most one input",
                             notes=[Note(message="the input is set", span=inputs[0].span)])
        train = next((s for s in result if isinstance(s, ir.TrainDecl)), ir.TrainDecl())
        share = train.get("share_input")
        if not inputs and share is not None and try_literal(share.value) == (True, True):
            self.diags.warning("KD242", "share_input has no effect: the models' input is the data's batch, "
                               "the same for every phase of a step", share.span,
                               hint="it shares a generated input (input = ...) between phases")
        if not inputs:
            return
        for stage in (s for s in result if isinstance(s, ir.StageDecl) and s.batch_size is not None):
            self.diags.warning("KD241", f"stage '{stage.name}' sets batch_size, but no step reads data: the "
                               "models' input comes from `input`", stage.batch_size_span,
                               hint="remove it; noise(...) says how many rows a generated batch has",
                               notes=[Note(message="the input is set", span=inputs[0].span)])
        if train.get("steps_per_epoch") is None and train.get("data") is None:
            self.diags.error("KD223", "an input that is not data needs 'steps_per_epoch' in the train block",
                             inputs[0].span, hint="add e.g. steps_per_epoch = 100 to the train block "
                             "(with data given, an epoch is a pass over it)")

    # ================================================================ the whole procedure
    def _check_procedure(self, result: List[ir.Node]) -> None:
        self._check_run_input(result)
        self._check_one_optimize(result)
        self._check_stage_epochs(result)
        for con in self.connectors.values():
            if con.frozen and con.checkpoint is None:
                self.diags.error("KD221", f"connector '{con.name}' is frozen but nothing loads its weights",
                                 con.name_span, hint=f'load them: connector {con.name} = ... from "FILE.pt" '
                                 "frozen; or train it in an earlier stage and 'freeze' it in the later ones")
        if self.diags.has_errors:
            return  # what losses reach is unknown where they failed to resolve
        stages = read_procedure(result).stages
        source = next((s.value for s in result if isinstance(s, ir.InputDecl)), None)
        # what the models' input depends on: a loss that reads any model's record reaches it
        fed = gradient_reach(source, self.models, self.records) if source is not None else set()
        reported: Set[int] = set()
        any_loss = any(phase.losses for stage in stages for phase in stage.phases)
        for stage in stages:
            for phase in stage.phases:
                if any_loss and self._check_has_losses(stage, phase):
                    self._check_reach(stage.name if stage.decl else None, phase, fed, reported)
                    self._check_default_reach(stage, phase, fed)
        self._check_frozen_connectors(stages)
        self._check_generators(result)

    def _check_one_optimize(self, result: Sequence[ir.Node]) -> None:
        def scan(statements, where: str) -> None:
            found = [s for s in statements if isinstance(s, ir.OptimizeDecl)]
            for extra in found[1:]:
                self.diags.error("KD218", f"a second 'optimize' {where}", extra.span,
                                 hint="name everything it trains in one 'optimize a, b, c'",
                                 notes=[Note(message="first 'optimize'", span=found[0].span)])
            for s in statements:
                if isinstance(s, (ir.StageDecl, ir.PhaseDecl)):
                    scan(s.statements, f"in {s.kind} '{s.name}'")

        scan(result, "at the top level")

    def _check_stage_epochs(self, result: Sequence[ir.Node]) -> None:
        """The stages' epochs by the one epoch rule, against the train block's when it sets them
        (the trainer checks them again against the run's, which a flag may change)."""
        train = next((s for s in result if isinstance(s, ir.TrainDecl)), ir.TrainDecl())
        setting = train.get("epochs")
        ok, total = try_literal(setting.value) if setting is not None else (False, None)
        known = ok and isinstance(total, int) and not isinstance(total, bool)
        stages = [s for s in result if isinstance(s, ir.StageDecl)]
        self.diags.extend(check_stage_epochs(stages, total if known else None,
                                             setting.value.span if known else None))

    def _check_reach(self, stage: Optional[str], phase: Phase, fed: Set[str], reported: Set[int]) -> None:
        """Every ``optimize`` target must get gradients from a loss of each phase it holds in."""
        if phase.optimize_decl is None:
            return
        reached: Set[str] = set()
        for loss in phase.loss_decls:
            reached |= gradient_reach(loss.call, self.models, self.records, fed)
        for target in phase.optimize_decl.targets:
            if target.name in reached or id(target) in reported:
                continue
            reported.add(id(target))
            where = " and ".join(w for w in (f"stage '{stage}'" if stage else "",
                                             f"phase '{phase.name}'" if phase.decl else "") if w)
            self.diags.error("KD219", f"no loss{' of ' + where if where else ''} reaches '{target}': "
                             "optimizing it would train nothing", target.span,
                             hint=f"add a loss that reads a record of '{target.name}'" if target.what != "connector"
                             else f"add a loss that applies '{target.name}'")

    def _check_has_losses(self, stage, phase: Phase) -> bool:
        """A stage's step, or a declared phase, computes at least one loss: an empty one once
        crashed the run after its earlier stages had trained (a spec with no loss at all is
        KD255's)."""
        if phase.losses:
            return True
        block = phase.decl or stage.decl
        what = f"phase '{phase.name}'" if phase.decl is not None else f"stage '{stage.name}'"
        self.diags.error("KD220", f"{what} has no loss: its steps would train nothing",
                         block.name_span if block is not None else None,
                         hint="declare its losses inside it, or at the top level to hold in every stage")
        return False

    def _check_default_reach(self, stage, phase: Phase, fed: Set[str]) -> None:
        """A phase without ``optimize`` trains the student, the trainable teachers and the
        connectors its losses use: some loss must reach one of them (a generator's phase that
        forgot ``optimize gen`` once crashed on its first step)."""
        if phase.optimize_decl is not None or phase.decl is None:
            return
        reached: Set[str] = set()
        for loss in phase.loss_decls:
            reached |= gradient_reach(loss.call, self.models, self.records, fed)
        default = {n for n, m in self.models.items() if m.role == "student" or m.trainable}
        default |= {c for n in self._loss_names(phase) for c in self.uses[n].connectors}
        if reached & default:
            return
        where = f"phase '{phase.name}'" + (f" of stage '{stage.name}'" if stage.decl is not None else "")
        others = sorted(reached - default)
        self.diags.error("KD219", f"no loss of {where} reaches what a phase without 'optimize' "
                         "trains (the student, trainable teachers, connectors)", phase.decl.name_span,
                         hint=f"say what it trains: optimize {others[0]}" if others else
                         "add a loss that reads a record of the student")

    def _loss_names(self, phase: Phase) -> List[str]:
        return [name for name in phase.losses if name in self.uses]

    def _trained(self, phase: Phase, name: str) -> bool:
        """Whether ``phase`` trains the connector ``name``."""
        if self.connectors[name].frozen or any(f.target.name == name for f in phase.freezes):
            return False
        if phase.optimize_decl is not None:
            return any(t.name == name for t in phase.optimize_decl.targets)
        return any(name in self.uses[loss.name].connectors
                   for loss in phase.loss_decls if loss.name in self.uses)

    def _check_frozen_connectors(self, stages) -> None:
        """A connector frozen in a stage keeps the weights it has: a checkpoint's, or an earlier
        stage's (declared ``frozen`` without ``from`` is reported on its own)."""
        trained: Set[str] = set()  # connectors trained by an earlier stage
        reported: Set[int] = set()
        for stage in stages:
            for phase in stage.phases:
                for f in phase.freezes:
                    con = self.connectors.get(f.target.name) if f.target.what == "connector" else None
                    if con is None or con.checkpoint is not None or con.frozen or con.name in trained \
                            or id(f) in reported:
                        continue
                    reported.add(id(f))
                    where = f" in stage '{stage.name}'" if stage.decl else ""
                    self.diags.error(
                        "KD221", f"connector '{con.name}' is frozen{where} but nothing loads or trains "
                        "it before", f.target.span,
                        hint=f'load its weights (connector {con.name} = ... from "FILE.pt") or train it '
                        "in an earlier stage")
            trained |= {c for phase in stage.phases for c in self.connectors if self._trained(phase, c)}

    def _check_generators(self, result) -> None:
        optimized = {t.name for s in _all_statements(result) if isinstance(s, ir.OptimizeDecl)
                     for t in s.targets}
        applied = {n.model for s in result if isinstance(s, ir.InputDecl) for n in find(s.value, ir.ModelApply)}
        for g in self.models.values():
            if g.role != "generator":
                continue
            if g.name not in applied:
                self.diags.warning("KD256", f"generator '{g.name}' is never used", g.name_span,
                                   hint=f"make the models' input with it: input = {g.name}(noise(100))")
            elif g.name not in optimized and g.checkpoint is None:
                self.diags.warning("KD257", f"generator '{g.name}' is never trained and loads no weights",
                                   g.name_span, hint=f"train it in a phase: optimize {g.name}; or load it "
                                   'with from "FILE.pt"')


def _all_statements(statements):
    for s in statements:
        yield s
        if isinstance(s, (ir.StageDecl, ir.PhaseDecl)):
            yield from _all_statements(s.statements)
