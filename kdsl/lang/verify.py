"""The verify pass: names, declarations and arguments checked against each other and against
the component registry, with no models in sight. Its output is the effective program (overrides
applied, train blocks merged) with every expression resolved, or diagnostics.

Checks that look at several statements at once live here, not in the IR's validators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from kdsl.lang import ir
from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.catalog.types import KIND_PLURALS, Component, Param
from kdsl.catalog.binding import bind, type_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.core.span import Span
from kdsl.lang.literal import try_literal
from kdsl.lang.verify_train import TrainBlockChecks
from kdsl.core.suggest import did_you_mean, rank_candidates

RESERVED = ("batch", "true", "false", "none")
_NAMED = (ir.ModelDecl, ir.RecordDecl, ir.ConnectorDecl, ir.LossDecl)
_KIND_WORD = {ir.ModelDecl: "model", ir.RecordDecl: "record", ir.ConnectorDecl: "connector",
              ir.LossDecl: "loss"}


def _describe_expr(expr) -> str:
    if isinstance(expr, ir.Const):
        v = expr.value
        return "a string" if isinstance(v, str) else ("none" if v is None else f"the literal {str(v).lower() if isinstance(v, bool) else v}")
    if isinstance(expr, ir.ListExpr):
        return "a list"
    if isinstance(expr, ir.ModuleRef):
        return f"the module {expr}" if expr.path else f"the model '{expr.model}'"
    if isinstance(expr, ir.RecordRef):
        return f"the record '{expr.record}'"
    if isinstance(expr, ir.ConnectorApply):
        return f"the output of connector '{expr.connector}'"
    if isinstance(expr, ir.BatchRef):
        return f"batch.{expr.field}"
    return "an expression"


@dataclass
class _Use:
    position: int
    records: Set[str] = field(default_factory=set)
    connectors: Set[str] = field(default_factory=set)


class Verifier(TrainBlockChecks):
    def __init__(self, diags: Diagnostics, file: str = "<string>",
                 broken: Sequence[Tuple[str, str]] = ()) -> None:
        self.diags = diags
        self.file = file
        # names declared by statements that did not parse: their uses are not reported again
        self.broken = {name for _, name in broken}
        self.broken_kinds = {kind for kind, _ in broken}
        self.decls: Dict[str, ir.Node] = {}
        self.position: Dict[str, int] = {}  # name -> index of its declaration in source order
        self.models: Dict[str, ir.ModelDecl] = {}
        self.records: Dict[str, ir.RecordDecl] = {}
        self.connectors: Dict[str, ir.ConnectorDecl] = {}

    # ================================================================ declarations
    def effective(self, statements: Sequence[ir.Node]) -> List[Tuple[int, ir.Node]]:
        """Apply overrides and merge train blocks; returns (source index, statement) pairs."""
        out: List[Optional[Tuple[int, ir.Node]]] = []
        where: Dict[str, int] = {}
        train_at: Optional[int] = None
        for index, stmt in enumerate(statements):
            if isinstance(stmt, ir.TrainDecl):
                self._check_train_block(stmt)
                if train_at is None:
                    train_at = len(out)
                    out.append((index, stmt))
                else:
                    merged = {s.key: s for s in out[train_at][1].settings}
                    merged.update({s.key: s for s in stmt.settings})
                    first = out[train_at][1]
                    out[train_at] = (out[train_at][0], first.model_copy(
                        update={"settings": tuple(merged.values())}))
                continue
            if not isinstance(stmt, _NAMED):
                out.append((index, stmt))
                continue
            name = stmt.name
            if name in RESERVED:
                self.diags.error("KD209", f"'{name}' is reserved and cannot be declared", stmt.name_span,
                                 hint="choose another name")
                continue
            if stmt.override:
                if name not in where:
                    self.diags.error("KD206", f"'override' of '{name}', which is not declared above",
                                     stmt.name_span, hint="remove 'override' to declare it")
                    where[name] = len(out)
                    out.append((index, stmt))
                    continue
                prev = out[where[name]][1]
                if type(prev) is not type(stmt):
                    self.diags.error(
                        "KD215", f"'override {_KIND_WORD[type(stmt)]} {name}' replaces a "
                        f"{_KIND_WORD[type(prev)]}", stmt.name_span,
                        notes=[Note(message=f"'{name}' first declared", span=prev.name_span)])
                    continue
                out[where[name]] = (index, stmt)
                continue
            if name in where:
                prev = out[where[name]][1]
                self.diags.error(
                    "KD203", f"'{name}' is already declared", stmt.name_span,
                    hint=f"write 'override {_KIND_WORD[type(stmt)]} {name} = ...' to replace it"
                    if isinstance(stmt, (ir.LossDecl, ir.ConnectorDecl, ir.RecordDecl)) else None,
                    notes=[Note(message=f"'{name}' first declared", span=prev.name_span)])
                continue
            where[name] = len(out)
            out.append((index, stmt))
        return [p for p in out if p is not None]

    # ================================================================ the whole program
    def run(self, statements: Sequence[ir.Node]) -> List[ir.Node]:
        pairs = self.effective(statements)
        for index, stmt in pairs:
            if isinstance(stmt, _NAMED):
                self.decls[stmt.name] = stmt
                self.position[stmt.name] = index
                if isinstance(stmt, ir.ModelDecl):
                    self.models[stmt.name] = stmt
                elif isinstance(stmt, ir.RecordDecl):
                    self.records[stmt.name] = stmt
                elif isinstance(stmt, ir.ConnectorDecl):
                    self.connectors[stmt.name] = stmt
        self._check_models([s for _, s in pairs if isinstance(s, ir.ModelDecl)])
        uses: Dict[str, _Use] = {}
        result: List[ir.Node] = []
        for index, stmt in pairs:
            method = getattr(self, f"_verify_{stmt.kind}", None)
            use = _Use(index)
            new = method(stmt, use) if method else stmt
            if isinstance(stmt, (ir.LossDecl, ir.ConnectorDecl)):
                uses[stmt.name] = use
            if new is not None:
                result.append(new)
        self._check_usage(result, uses)
        return result

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

    def _verify_model(self, stmt: ir.ModelDecl, use: _Use):
        return stmt

    # ================================================================ records
    def _model_ref(self, name: str, span: Optional[Span], position: int) -> bool:
        decl = self.models.get(name)
        if decl is None and name in self.broken:
            return False
        if decl is None:
            hint = did_you_mean(name, list(self.models))
            if name in self.decls:
                self.diags.error("KD205", f"'{name}' is a {_KIND_WORD[type(self.decls[name])]}, "
                                 "not a model", span, hint=hint)
            else:
                self.diags.error("KD205", f"unknown model '{name}'", span,
                                 hint=hint or self._models_hint())
            return False
        if self.position[name] > position:
            self.diags.error("KD204", f"model '{name}' is used before its declaration", span,
                             notes=[Note(message=f"'{name}' declared", span=decl.name_span)])
            return False
        return True

    def _models_hint(self) -> Optional[str]:
        if not self.models:
            return "declare it with 'student' or 'teacher NAME'"
        return "declared models: " + ", ".join(f"'{m}'" for m in self.models)

    def _verify_record(self, stmt: ir.RecordDecl, use: _Use):
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
    def _verify_deliver(self, stmt: ir.DeliverDecl, use: _Use):
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

    # ================================================================ expressions
    def _unknown(self, name: str, span, kind_word: str, code: str, candidates: Sequence[str]):
        if name in self.broken:
            return  # its declaration has a syntax error, reported already
        best = rank_candidates(name, candidates)
        hint = None
        if best:
            decl = self.decls.get(best[0])
            where = f" (declared at {decl.name_span})" if decl is not None and decl.name_span else ""
            hint = did_you_mean(name, best) + where if len(best) > 1 else f"did you mean '{best[0]}'?{where}"
        self.diags.error(code, f"unknown {kind_word} '{name}'", span, hint=hint)

    def _declared_before(self, name: str, span, use: _Use) -> bool:
        if self.position[name] > use.position:
            decl = self.decls[name]
            self.diags.error("KD204", f"{_KIND_WORD[type(decl)]} '{name}' is used before its declaration",
                             span, notes=[Note(message=f"'{name}' declared", span=decl.name_span)])
            return False
        return True

    def resolve(self, expr, use: _Use):
        """Resolve a syntactic expression; None after reporting an error."""
        if isinstance(expr, (ir.Const,)):
            return expr
        if isinstance(expr, ir.ListExpr):
            items = [self.resolve(i, use) for i in expr.items]
            if any(i is None for i in items):
                return None
            return expr.model_copy(update={"items": tuple(items)})
        if isinstance(expr, ir.Name):
            name = expr.name
            if name == "batch":
                self.diags.error("KD213", "'batch' needs a field", expr.span,
                                 hint="e.g. batch.target or batch.index")
                return None
            decl = self.decls.get(name)
            if decl is None:
                self._unknown(name, expr.span, "record", "KD201",
                              list(self.records) + list(self.connectors) + list(self.models))
                return None
            if not self._declared_before(name, expr.span, use):
                return None
            if isinstance(decl, ir.RecordDecl):
                use.records.add(name)
                return ir.RecordRef(record=name, span=expr.span)
            if isinstance(decl, ir.ModelDecl):
                return ir.ModuleRef(model=name, span=expr.span)
            if isinstance(decl, ir.ConnectorDecl):
                self.diags.error("KD213", f"connector '{name}' must be applied to a tensor", expr.span,
                                 hint=f"write {name}(RECORD)")
                return None
            self.diags.error("KD213", f"'{name}' is a loss; a loss's value cannot be an input",
                             expr.span)
            return None
        if isinstance(expr, (ir.Attr, ir.Item)):
            return self._resolve_selection(expr, use)
        if isinstance(expr, ir.Call):
            return self._resolve_application(expr, use)
        return expr  # already resolved

    def _resolve_selection(self, expr, use: _Use):
        # unwind the chain down to its root
        chain = []
        root = expr
        while isinstance(root, (ir.Attr, ir.Item)):
            chain.append(root)
            root = root.value
        chain.reverse()
        if isinstance(root, ir.Name) and root.name == "batch":
            first = chain[0]
            if not isinstance(first, ir.Attr):
                self.diags.error("KD213", "select a batch field by name: batch.NAME", first.span)
                return None
            value = ir.BatchRef(field=first.attr, span=first.span)
            return self._selections(value, chain[1:])
        if isinstance(root, ir.Name) and root.name in self.models:
            if not self._model_ref(root.name, root.span, use.position):
                return None
            path = []
            for link in chain:
                key = link.attr if isinstance(link, ir.Attr) else link.key
                if isinstance(link, ir.Item) and not isinstance(key, int):
                    self.diags.error("KD213", "a module path takes attribute names and integer indices",
                                     link.span)
                    return None
                path.append(str(key))
            return ir.ModuleRef(model=root.name, path=tuple(path), span=expr.span)
        if isinstance(root, ir.Name) and root.name not in self.decls:
            self._unknown(root.name, root.span, "name", "KD202",
                          list(self.records) + list(self.models) + ["batch"])
            return None
        base = self.resolve(root, use)
        if base is None:
            return None
        return self._selections(base, chain)

    def _selections(self, value, chain):
        for link in chain:
            if isinstance(link, ir.Attr):
                if link.attr.isdigit():
                    self.diags.error("KD213", f"'.{link.attr}' selects nothing on a value",
                                     link.span, hint=f"select element {link.attr} with [{link.attr}]")
                    return None
                value = ir.Select(value=value, key=link.attr, by="attr", span=link.span)
            else:
                value = ir.Select(value=value, key=link.key, by="item", span=link.span)
        return value

    def _resolve_application(self, call: ir.Call, use: _Use):
        name = call.func
        decl = self.decls.get(name)
        if not isinstance(decl, ir.ConnectorDecl):
            if decl is None and REGISTRY.get("loss", name) is not None:
                self.diags.error("KD213", f"'{name}' is a loss; only connectors can be applied inside a loss",
                                 call.func_span, hint="declare another 'loss' and let the weights add them")
            elif decl is None and REGISTRY.get("connector", name) is not None:
                self.diags.error("KD210", f"'{name}' is a connector type, not a declared connector",
                                 call.func_span,
                                 hint=f"declare it first: connector c1 = {name}(...), then apply c1(...)")
            elif decl is None:
                self._unknown(name, call.func_span, "connector", "KD210", list(self.connectors))
            else:
                self.diags.error("KD213", f"'{name}' is a {_KIND_WORD[type(decl)]} and cannot be applied",
                                 call.func_span)
            return None
        if not self._declared_before(name, call.func_span, use):
            return None
        use.connectors.add(name)
        component = REGISTRY.get("connector", decl.component)
        args = [self.resolve(a, use) for a in call.args]
        kwargs = [(k, self.resolve(k.value, use)) for k in call.kwargs]
        if any(a is None for a in args) or any(v is None for _, v in kwargs):
            return None
        if component is not None:
            binding = bind(component, args, [(k.name, v) for k, v in kwargs], inputs=True)
            for problem in binding.problems:
                span = self._problem_span(call, problem)
                self.diags.error(problem.code, problem.message, span, hint=problem.hint)
            for key in binding.options:
                kw = call.keyword(key)
                self.diags.error("KD305", f"'{key}' is an option of connector '{name}'; set it where "
                                 "the connector is declared", kw.span if kw else call.span,
                                 notes=[Note(message=f"'{name}' declared", span=decl.name_span)])
            for pname, value in binding.inputs.items():
                self._check_input(component, component.input(pname), value)
        return ir.ConnectorApply(connector=name, args=tuple(args),
                                 kwargs=tuple(ir.Keyword(name=k.name, value=v, span=k.span)
                                              for k, v in kwargs), span=call.span)

    # ================================================================ arguments
    def _problem_span(self, call: ir.Call, problem) -> Optional[Span]:
        if problem.keyword is not None:
            kw = call.kwargs[problem.position] if problem.position is not None and \
                problem.position < len(call.kwargs) else call.keyword(problem.keyword)
            if kw is not None:
                return kw.span
        elif problem.position is not None and problem.position < len(call.args):
            return call.args[problem.position].span
        return call.func_span or call.span

    def _check_input(self, component: Component, param: Param, value) -> None:
        if isinstance(value, ir.Const) and value.value is None and not param.required:
            return
        if isinstance(value, (ir.Const, ir.ListExpr)) and not self._runtime_list(value):
            self.diags.error(
                "KD311", f"input '{param.name}' of '{component.name}' takes a tensor, got "
                f"{_describe_expr(value)}", value.span,
                hint="pass a record, a connector application or a batch field")
        elif isinstance(value, ir.ModuleRef):
            self.diags.error(
                "KD311", f"input '{param.name}' of '{component.name}' takes a tensor, got "
                f"{_describe_expr(value)}", value.span,
                hint=f"record it first: record NAME = output of {value}")

    def _runtime_list(self, value) -> bool:
        return isinstance(value, ir.ListExpr) and bool(value.items) and all(
            not isinstance(i, (ir.Const, ir.ListExpr, ir.ModuleRef)) for i in value.items)

    def _check_option(self, component: Component, param: Param, value) -> None:
        if param.type.name == "module":
            if not isinstance(value, ir.ModuleRef) or not value.path:
                self.diags.error("KD311", f"option '{param.name}' of '{component.name}' takes a module "
                                 f"of a model, got {_describe_expr(value)}", value.span,
                                 hint=f"e.g. {param.name}=teacher.layer2.0.bn1")
            return
        ok, literal = try_literal(value)
        if not ok:
            self.diags.error("KD311", f"option '{param.name}' of '{component.name}' takes a literal "
                             f"{param.type.describe()}, got {_describe_expr(value)}", value.span)
            return
        message = type_problem(component, param, literal)
        if message:
            self.diags.error("KD309", message, value.span)

    def _bind_call(self, component: Component, call: ir.Call, use: _Use, *, inputs: bool,
                   resolve: bool = True):
        """Bind and check a call's arguments; returns the resolved call or None."""
        args = [self.resolve(a, use) if resolve else a for a in call.args]
        kwargs = [(k, self.resolve(k.value, use) if resolve else k.value) for k in call.kwargs]
        failed = any(a is None for a in args) or any(v is None for _, v in kwargs)
        binding = bind(component, [a for a in args], [(k.name, v) for k, v in kwargs], inputs=inputs)
        for problem in binding.problems:
            self.diags.error(problem.code, problem.message, self._problem_span(call, problem),
                             hint=problem.hint)
        for pname, value in binding.inputs.items():
            if value is not None:
                self._check_input(component, component.input(pname), value)
        for pname, value in binding.options.items():
            param = component.option(pname)
            if value is not None and param is not None:
                self._check_option(component, param, value)
            elif value is not None and param is None and component.open_options:
                ok, _ = try_literal(value)
                if not ok:
                    self.diags.error("KD311", f"option '{pname}' of '{component.name}' takes a literal "
                                     f"value, got {_describe_expr(value)}", value.span)
        if failed:
            return None
        return call.model_copy(update={
            "args": tuple(args),
            "kwargs": tuple(ir.Keyword(name=k.name, value=v, span=k.span) for k, v in kwargs)})

    def _component(self, kind: str, call: ir.Call, code: str, what: str) -> Optional[Component]:
        component = REGISTRY.get(kind, call.func)
        if component is None:
            hint = did_you_mean(call.func, REGISTRY.names(kind))
            if hint is None:
                others = [k for k in ("loss", "connector", "schedule") if k != kind and REGISTRY.get(k, call.func)]
                if others:
                    hint = f"'{call.func}' is a {others[0]}, not a {what}"
            listing = KIND_PLURALS[kind].replace("_", "-")
            self.diags.error(code, f"unknown {what} '{call.func}'", call.func_span,
                             hint=hint or f"see `kdsl list {listing}`")
        return component

    # ================================================================ connectors and losses
    def _verify_connector(self, stmt: ir.ConnectorDecl, use: _Use):
        component = self._component("connector", stmt.call, "KD302", "connector type")
        if component is None:
            return stmt
        call = self._bind_call(component, stmt.call, use, inputs=False)
        return stmt.model_copy(update={"call": call}) if call is not None else stmt

    def _verify_loss(self, stmt: ir.LossDecl, use: _Use):
        component = self._component("loss", stmt.call, "KD301", "loss")
        weight = self._verify_weight(stmt.weight, use)
        if component is None:
            return stmt
        call = self._bind_call(component, stmt.call, use, inputs=True)
        if call is None:
            return stmt
        return stmt.model_copy(update={"call": call, "weight": weight})

    def _verify_weight(self, weight, use: _Use):
        if weight is None or isinstance(weight, ir.Const):
            return weight
        if isinstance(weight, ir.Call):
            component = self._component("schedule", weight, "KD303", "schedule")
            if component is None:
                return weight
            return self._bind_call(component, weight, use, inputs=False, resolve=False) or weight
        self.diags.error("KD213", "a weight is a number or a schedule call", weight.span)
        return weight

    # ================================================================ usage
    def _check_usage(self, result: List[ir.Node], uses: Dict[str, _Use]) -> None:
        if self.diags.has_errors:
            return  # usage is incomplete where resolution failed: warnings would be noise
        used_records: Set[str] = set()
        used_connectors: Set[str] = set()
        for stmt in result:
            if isinstance(stmt, ir.LossDecl):
                use = uses.get(stmt.name)
                if use is None:
                    continue
                records = set(use.records)
                for c in use.connectors:  # records reached through connector options count too
                    records |= uses[c].records if c in uses else set()
                used_records |= records
                used_connectors |= use.connectors
                if not records and REGISTRY.get("loss", stmt.component) is not None:
                    self.diags.warning("KD251", f"loss '{stmt.name}' reads no record", stmt.name_span,
                                       hint="its value does not depend on the models")
        if not any(isinstance(s, ir.LossDecl) for s in result):
            self.diags.warning("KD255", "the spec declares no loss: training would not change the student",
                               Span.point(self.file, 1, 1),
                               hint="add e.g. loss task = cross_entropy(LOGITS, batch.target)")
        for name, rec in self.records.items():
            if name not in used_records:
                self.diags.warning("KD250", f"record '{name}' is never used", rec.name_span,
                                   hint="remove it, or use it in a loss")
        for name, con in self.connectors.items():
            if name not in used_connectors:
                self.diags.warning("KD252", f"connector '{name}' is never used", con.name_span)
        read = {r.model for r in self.records.values()}
        read |= {s.source for s in result if isinstance(s, ir.DeliverDecl)}
        for name, model in self.models.items():
            if model.role == "teacher" and name not in read:
                self.diags.warning("KD253", f"teacher '{name}' is never used", model.name_span,
                                   hint="no record or delivery reads it, so its forward pass is skipped")
