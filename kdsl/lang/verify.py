"""The verify pass: names, declarations and arguments checked against each other and against
the component registry, with no models in sight. Its output is the effective program (overrides
applied, train blocks merged) with every expression resolved, or diagnostics.

Checks that look at several statements at once live here, not in the IR's validators. The
verifier is split by concern: declarations and statements here, name resolution in
:mod:`~kdsl.lang.verify_names`, call arguments in :mod:`~kdsl.lang.verify_args`, usage warnings in
:mod:`~kdsl.lang.verify_usage`, the train block in :mod:`~kdsl.lang.verify_train`, stages, phases,
``optimize``, ``freeze``, ``init`` and ``input`` in :mod:`~kdsl.lang.verify_procedure`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.statements import NAMED, PROCEDURE_BLOCKS, ParamSubstitution, recorder_kind, statement_kind
from kdsl.lang.teacher_weights import warn_random_teachers
from kdsl.lang.verify_args import ArgumentChecks
from kdsl.lang.verify_names import KIND_WORD, NameResolution, Use
from kdsl.lang.verify_placement import check_placement
from kdsl.lang.verify_procedure import ProcedureChecks
from kdsl.lang.verify_refs import check_kdsl_references
from kdsl.lang.verify_train import TrainBlockChecks
from kdsl.lang.verify_usage import UsageWarnings

RESERVED = ("batch", "true", "false", "none")


@dataclass
class _Placed:
    """A statement of the effective program: ``decl`` is where the name it declares becomes
    visible (an override keeps the position of what it replaces), ``use`` where the names it
    reads must already be declared (its own place in the source)."""

    decl: int
    use: int
    stmt: ir.Node


class Verifier(NameResolution, ArgumentChecks, UsageWarnings, TrainBlockChecks, ProcedureChecks):
    """Verifies the statements of a spec (includes spliced in) against each other and the
    catalog; ``run`` returns the effective, resolved program and reports to ``diags``."""

    def __init__(self, diags: Diagnostics, file: str = "<string>",
                 broken: Sequence[Tuple[str, str]] = (), given: Optional[Dict[str, Any]] = None) -> None:
        self.diags = diags
        self.given = given or {}  # param name -> GivenParam: values from --set or params=
        self.file = file
        # names declared by statements that did not parse: their uses are not reported again
        self.broken = {name for _, name in broken}
        self.broken_kinds = {kind for kind, _ in broken}
        self.decls: Dict[str, ir.Node] = {}
        self.position: Dict[str, int] = {}  # name -> index of its declaration in source order
        self.models: Dict[str, ir.ModelDecl] = {}
        self.records: Dict[str, ir.RecordDecl] = {}
        self.connectors: Dict[str, ir.ConnectorDecl] = {}
        self.uses: Dict[str, Use] = {}  # loss or connector name -> what it reads
        self.block_of: Dict[str, ir.Node] = {}  # loss name -> the stage or phase holding it
        self.substitution: Optional[ParamSubstitution] = None  # when the spec declares params

    # ================================================================ declarations
    def effective(self, statements: Sequence[ir.Node]) -> List[_Placed]:
        """Apply overrides, merge train blocks, drop duplicate declarations (reported)."""
        out: List[_Placed] = []
        where: Dict[str, int] = {}  # top-level name -> index in ``out``
        first: Dict[str, ir.Node] = {}  # every declared name (losses in blocks too) -> first decl
        train_at: Optional[int] = None
        self._check_block_names(statements)
        for index, stmt in enumerate(statements):
            if isinstance(stmt, ir.TrainDecl):
                self._check_train_block(stmt)
                if train_at is None:
                    train_at = len(out)
                    out.append(_Placed(index, index, stmt))
                else:
                    merged = {s.key: s for s in out[train_at].stmt.settings}
                    merged.update({s.key: s for s in stmt.settings})
                    out[train_at].stmt = out[train_at].stmt.model_copy(
                        update={"settings": tuple(merged.values())})
                continue
            if isinstance(stmt, PROCEDURE_BLOCKS):
                out.append(_Placed(index, index, self._block_declarations(stmt, stmt, first, index)))
                continue
            if not isinstance(stmt, NAMED) or not self._reserved_ok(stmt):
                if not isinstance(stmt, NAMED):
                    out.append(_Placed(index, index, stmt))
                continue
            name = stmt.name
            if stmt.override:
                self._override(stmt, index, out, where, first)
                continue
            if name in first:
                self._duplicate(stmt, first[name])
                continue
            where[name] = len(out)
            first[name] = stmt
            out.append(_Placed(index, index, stmt))
        return out

    def _reserved_ok(self, stmt) -> bool:
        if stmt.name in RESERVED:
            self.diags.error("KD209", f"'{stmt.name}' is reserved and cannot be declared", stmt.name_span,
                             hint="choose another name")
            return False
        return True

    def _duplicate(self, stmt, prev, in_block: bool = False) -> None:
        name = stmt.name
        can_override = isinstance(stmt, (ir.LossDecl, ir.ConnectorDecl, ir.RecordDecl, ir.ParamDecl)) and \
            not in_block and prev.name not in self.block_of
        self.diags.error(
            "KD203", f"'{name}' is already declared", stmt.name_span,
            hint=f"write 'override {KIND_WORD[type(stmt)]} {name} = ...' to replace it"
            if can_override else "losses in stages and phases share one namespace with all the "
            "other names" if in_block else None,
            notes=[Note(message=f"'{name}' first declared", span=prev.name_span)])

    def _override(self, stmt, index: int, out: List[_Placed], where: Dict[str, int], first) -> None:
        name = stmt.name
        if name not in where:
            if name in self.block_of:
                block = self.block_of[name]
                self.diags.error("KD206", f"'override' of '{name}', which is declared inside "
                                 f"{block.kind} '{block.name}'", stmt.name_span,
                                 hint="override replaces top-level declarations only",
                                 notes=[Note(message=f"'{name}' declared", span=first[name].name_span)])
                return
            self.diags.error("KD206", f"'override' of '{name}', which is not declared above",
                             stmt.name_span, hint="remove 'override' to declare it")
            where[name] = len(out)
            first.setdefault(name, stmt)
            out.append(_Placed(index, index, stmt))
            return
        prev = out[where[name]]
        if type(prev.stmt) is not type(stmt):
            self.diags.error(
                "KD215", f"'override {KIND_WORD[type(stmt)]} {name}' replaces a "
                f"{KIND_WORD[type(prev.stmt)]}", stmt.name_span,
                notes=[Note(message=f"'{name}' first declared", span=prev.stmt.name_span)])
            return
        # The replacement is visible from where the original was (statements of an included
        # file that use it stay valid); what it reads is checked at its own place.
        out[where[name]] = _Placed(prev.decl, index, stmt)

    def _block_declarations(self, block, stage, first: Dict[str, ir.Node], index: int):
        """A stage or phase with its duplicate losses dropped (reported); its losses join the
        one namespace of declared names."""
        kept = []
        for s in block.statements:
            if isinstance(s, ir.PhaseDecl):
                kept.append(self._block_declarations(s, stage, first, index))
                continue
            if isinstance(s, ir.LossDecl):
                if not self._reserved_ok(s):
                    continue
                if s.name in first:
                    self._duplicate(s, first[s.name], in_block=True)
                    continue
                first[s.name] = s
                self.block_of[s.name] = block
                self.decls[s.name] = s
                self.position[s.name] = index
            kept.append(s)
        return block.model_copy(update={"statements": tuple(kept)})

    # ================================================================ the whole program
    def run(self, statements: Sequence[ir.Node]) -> List[ir.Node]:
        placed = self._with_params(self.effective(statements))
        checked_from = len(self.diags.kept)
        for p in placed:
            stmt = p.stmt
            if isinstance(stmt, NAMED):
                self.decls[stmt.name] = stmt
                self.position[stmt.name] = p.decl
                if isinstance(stmt, ir.ModelDecl):
                    self.models[stmt.name] = stmt
                elif isinstance(stmt, ir.RecordDecl):
                    self.records[stmt.name] = stmt
                elif isinstance(stmt, ir.ConnectorDecl):
                    self.connectors[stmt.name] = stmt
        self._check_models([p.stmt for p in placed if isinstance(p.stmt, ir.ModelDecl)])
        result: List[ir.Node] = []
        for p in placed:
            new = self.verify_statement(p.stmt, p.use)
            if new is not None:
                result.append(new)
        self._check_procedure(result)
        self._check_usage(result, self.uses)
        check_kdsl_references(self.diags, result)
        check_placement(self.diags, result)
        if self.substitution is not None:
            self.substitution.point_at_params(self.diags, checked_from)
        if not self.diags.has_errors:
            warn_random_teachers(self.diags, result)
        return result

    def _with_params(self, placed: List[_Placed]) -> List[_Placed]:
        """Each param's value (or the value given from outside) put where its name is used."""
        if self.given or any(isinstance(p.stmt, ir.ParamDecl) for p in placed):
            from kdsl.lang.params import apply_given

            replaced = apply_given([p.stmt for p in placed if isinstance(p.stmt, ir.ParamDecl)],
                                   self.given, self.diags)
            placed = [_Placed(p.decl, p.use, replaced[p.stmt.name])
                      if isinstance(p.stmt, ir.ParamDecl) and p.stmt.name in replaced else p for p in placed]
        declared = {p.stmt.name: (p.decl, p.stmt) for p in placed if isinstance(p.stmt, ir.ParamDecl)}
        if not declared:
            return placed
        self.substitution = ParamSubstitution(declared, self.diags)
        return [_Placed(p.decl, p.use, self.substitution.statement(p.stmt, p.use)) for p in placed]

    def verify_statement(self, stmt: ir.Node, position: int) -> Optional[ir.Node]:
        """One statement checked and resolved, reading names declared up to ``position``."""
        use = Use(position, input=isinstance(stmt, ir.InputDecl))
        new = statement_kind(stmt).check(self, stmt, use)
        if isinstance(stmt, (ir.LossDecl, ir.ConnectorDecl)):
            self.uses[stmt.name] = use
        return new

    # ================================================================ models
    def _check_models(self, models: List[ir.ModelDecl]) -> None:
        students = [m for m in models if m.role == "student"]
        if not students and "student" not in self.broken_kinds:
            self.diags.error("KD207", "the spec declares no student", Span.point(self.file, 1, 1),
                             hint="add a line 'student' (or 'student = model(\"pkg.module:factory\")')")
        for extra in students[1:]:
            self.diags.error("KD208", f"a second student '{extra.name}'", extra.name_span,
                             hint="a spec distils into one student; declare the others as teachers",
                             notes=[Note(message="the student is declared", span=students[0].name_span)])
        for m in models:
            if m.role == "student" and m.trainable:
                self.diags.warning("KD254", "'trainable' has no effect on the student: it always trains",
                                   m.name_span)
            if m.train_mode and not m.frozen:
                self.diags.warning("KD254", f"'train_mode' has no effect on {_trained_model(m)}: it runs in "
                                   "train mode while it trains", m.name_span,
                                   hint="train_mode is for a frozen teacher (batch statistics, no training)")
            if m.factory is not None:
                self._no_repeated_keywords(m.factory.kwargs)
                for arg in tuple(m.factory.args) + tuple(k.value for k in m.factory.kwargs):
                    ok, _ = try_literal(arg)
                    if not ok:
                        self.diags.error("KD309", "model options must be literal values",
                                         arg.span, hint="numbers, strings, true/false/none or lists")

    def _no_repeated_keywords(self, kwargs) -> None:
        seen: Dict[str, ir.Keyword] = {}
        for k in kwargs:
            if k.name in seen:
                self.diags.error("KD307", f"'{k.name}' is given twice", k.span,
                                 notes=[Note(message=f"'{k.name}' first given", span=seen[k.name].span)])
            seen.setdefault(k.name, k)

    def _verify_model(self, stmt: ir.ModelDecl, use: Use):
        return stmt  # checked with the other models (_check_models): one student, literal options

    def _verify_include(self, stmt: ir.IncludeDecl, use: Use):
        return stmt  # the loader spliced the file in; its path was checked there

    def _verify_import(self, stmt: ir.ImportDecl, use: Use):
        return stmt  # the loader imported the module, or reported why it could not

    # ================================================================ records
    def _verify_record(self, stmt: ir.RecordDecl, use: Use):
        recorder_kind(stmt)  # a form the recorder table lacks is kdsl's bug, not the spec's
        target = stmt.target
        span = target.model_span if target.model_span else target.span
        if not self._model_ref(target.model, span, use.position):
            return stmt
        if stmt.what == "param" and not target.path:
            self.diags.error("KD212", "a param record names a parameter: param MODEL.PATH.NAME",
                             target.span, hint=f"e.g. param {target.model}.fc.weight")
        if isinstance(stmt.input, int) and stmt.input < 0:
            self.diags.error("KD212", "input positions count from 0", stmt.span)
        return stmt

    # ================================================================ deliveries
    def _verify_deliver(self, stmt: ir.DeliverDecl, use: Use):
        ok_src = self._model_ref(stmt.source, stmt.source_span, use.position)
        ok_dst = self._model_ref(stmt.dest, stmt.dest_span, use.position)
        if ok_src and ok_dst:
            src, dst = self.models[stmt.source], self.models[stmt.dest]
            if stmt.source == stmt.dest:
                self.diags.error("KD211", f"a delivery from '{stmt.source}' to itself", stmt.dest_span,
                                 hint="deliveries copy a teacher's results into the student's pass")
            elif src.role != "teacher" or dst.role != "student":
                self.diags.error(
                    "KD211", f"deliveries go from a teacher to the student, not from "
                    f"{src.role} '{src.name}' to {dst.role} '{dst.name}'", stmt.source_span.to(stmt.dest_span)
                    if stmt.source_span and stmt.dest_span else stmt.span,
                    hint="teachers run first in every step; the student's pass consumes what they produced")
        if stmt.keep is not None and stmt.keep < 1:
            self.diags.error("KD211", "'keep' must be at least 1", stmt.keep_span)
        return stmt

    # ================================================================ connectors and losses
    def _verify_connector(self, stmt: ir.ConnectorDecl, use: Use):
        component = self._component("connector", stmt.call, "KD302", "connector type")
        if component is None:
            return stmt
        call = self._bind_call(component, stmt.call, use, inputs=False)
        return stmt.model_copy(update={"call": call}) if call is not None else stmt

    def _verify_loss(self, stmt: ir.LossDecl, use: Use):
        component = self._component("loss", stmt.call, "KD301", "loss")
        weight = self._verify_weight(stmt.weight, use)
        if component is None:
            return stmt
        call = self._bind_call(component, stmt.call, use, inputs=True)
        if call is None:
            return stmt
        return stmt.model_copy(update={"call": call, "weight": weight})

    def _verify_weight(self, weight, use: Use):
        if weight is None or isinstance(weight, ir.Const):
            return weight
        if isinstance(weight, ir.Call):
            component = self._component("schedule", weight, "KD303", "schedule")
            if component is None:
                return weight
            return self._bind_call(component, weight, use, inputs=False, resolve=False) or weight
        hint = f"'{weight.name}' is not a param" if isinstance(weight, ir.Name) else None
        self.diags.error("KD213", "a weight is a number, a param or a schedule call", weight.span, hint=hint)
        return weight


def _trained_model(m: ir.ModelDecl) -> str:
    return "the student" if m.role == "student" else f"{'trainable ' if m.trainable else ''}{m.role} '{m.name}'"
