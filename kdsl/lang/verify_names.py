"""The verifier's name resolution: a syntactic expression (names, ``.attr``, ``[key]``, calls)
becomes a resolved one (records, modules of models, batch fields, connector applications), or a
located error saying what the name is and what was meant.

:class:`NameResolution` is a mixin of :class:`~kdsl.lang.verify.Verifier`; it reads the
verifier's tables (``decls``, ``models``, ``records``, ``connectors``, ``position``, ``broken``)
and reports to its ``diags``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Set

from kdsl.catalog.binding import bind
from kdsl.catalog.registry import REGISTRY
from kdsl.core.diagnostics import Note, clip
from kdsl.core.span import Span
from kdsl.core.suggest import did_you_mean, rank_candidates
from kdsl.lang import ir
from kdsl.lang.statements import KIND_WORD as KIND_WORD
from kdsl.lang.visit import Visitor



@dataclass
class Use:
    """What one statement reads: its position in the source, and the records, connectors and
    generators its expressions name (for the usage warnings). ``input``: the statement is
    ``input = ...``, the one place where a generator may be applied."""

    position: int
    records: Set[str] = field(default_factory=set)
    connectors: Set[str] = field(default_factory=set)
    models: Set[str] = field(default_factory=set)
    input: bool = False

MAX_INDEX = 2**31 - 1  # no value a spec selects from has more elements


class _Resolver(Visitor[Optional[ir.Node]]):
    """Resolves one expression of one statement; None after reporting an error."""

    def __init__(self, names: "NameResolution", use: Use) -> None:
        self.names, self.use = names, use

    def visit_const(self, e: ir.Const):
        return e

    def visit_list(self, e: ir.ListExpr):
        items = [self.visit(i) for i in e.items]
        if any(i is None for i in items):
            return None
        return e.model_copy(update={"items": tuple(items)})

    def visit_name(self, e: ir.Name):
        return self.names._resolve_name(e, self.use)

    def visit_attr(self, e: ir.Attr):
        return self.names._resolve_selection(e, self.use)

    def visit_item(self, e: ir.Item):
        return self.names._resolve_selection(e, self.use)

    def visit_call(self, e: ir.Call):
        return self.names._resolve_application(e, self.use)

    def generic_visit(self, e):
        return e  # already resolved


class NameResolution:
    """Resolving names against the declarations (a mixin of the Verifier)."""

    def _model_ref(self, name: str, span: Optional[Span], position: int) -> bool:
        decl = self.models.get(name)
        if decl is None and name in self.broken:
            return False
        if decl is None:
            hint = did_you_mean(name, list(self.models))
            if name in self.decls:
                self.diags.error("KD205", f"'{name}' is a {KIND_WORD[type(self.decls[name])]}, "
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

    def _declared_before(self, name: str, span, use: Use) -> bool:
        if self.position[name] > use.position:
            decl = self.decls[name]
            self.diags.error("KD204", f"{KIND_WORD[type(decl)]} '{name}' is used before its declaration",
                             span, notes=[Note(message=f"'{name}' declared", span=decl.name_span)])
            return False
        return True

    def resolve(self, expr, use: Use):
        """Resolve a syntactic expression; None after reporting an error."""
        return _Resolver(self, use).visit(expr)

    def _resolve_name(self, expr: ir.Name, use: Use):
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

    def _resolve_selection(self, expr, use: Use):
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
            elif isinstance(link.key, int) and abs(link.key) > MAX_INDEX:
                # a value's elements are counted in int64: a 20-digit index overflowed mid-run
                self.diags.error("KD213", f"index {clip(str(link.key), 40)} is out of range",
                                 link.span, hint=f"an index lies between -{MAX_INDEX} and {MAX_INDEX}")
                return None
            else:
                value = ir.Select(value=value, key=link.key, by="item", span=link.span)
        return value

    def _resolve_application(self, call: ir.Call, use: Use):
        """``f(...)``: a declared connector, a generator (in ``input`` only) or a catalog
        function; ``c.method(...)``: a connector's method."""
        if call.method is not None:
            return self._resolve_method(call, use)
        name = call.func
        decl = self.decls.get(name)
        if isinstance(decl, ir.ConnectorDecl):
            return self._resolve_connector_call(call, decl, use)
        if isinstance(decl, ir.ModelDecl):
            return self._resolve_model_call(call, decl, use)
        if decl is None and REGISTRY.get("function", name) is not None:
            return self._resolve_function(call, use)
        if decl is None and REGISTRY.get("loss", name) is not None:
            self.diags.error("KD213", f"'{name}' is a loss; only connectors and functions can be "
                             "applied inside a loss", call.func_span,
                             hint="declare another 'loss' and let the weights add them")
        elif decl is None and REGISTRY.get("connector", name) is not None:
            self.diags.error("KD210", f"'{name}' is a connector type, not a declared connector",
                             call.func_span,
                             hint=f"declare it first: connector c1 = {name}(...), then apply c1(...)")
        elif decl is None:
            functions = REGISTRY.names("function")
            best = rank_candidates(name, list(self.connectors) + functions)
            what = "function" if best and best[0] in functions else "connector"
            self._unknown(name, call.func_span, what, "KD210", list(self.connectors) + functions)
        else:
            self.diags.error("KD213", f"'{name}' is a {KIND_WORD[type(decl)]} and cannot be applied",
                             call.func_span)
        return None

    def _resolved_arguments(self, call: ir.Call, use: Use):
        """(args, [(keyword, value)]) resolved, or None after an error in one of them."""
        args = [self.resolve(a, use) for a in call.args]
        kwargs = [(k, self.resolve(k.value, use)) for k in call.kwargs]
        if any(a is None for a in args) or any(v is None for _, v in kwargs):
            return None
        return args, kwargs

    def _resolve_connector_call(self, call: ir.Call, decl: ir.ConnectorDecl, use: Use):
        name = call.func
        if not self._declared_before(name, call.func_span, use):
            return None
        use.connectors.add(name)
        component = REGISTRY.get("connector", decl.component)
        resolved = self._resolved_arguments(call, use)
        if resolved is None:
            return None
        args, kwargs = resolved
        bound = None
        if component is not None:
            binding = bind(component, args, [(k.name, v) for k, v in kwargs], inputs=True)
            bound = ir.Bound.of(binding.inputs, {})
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
                                              for k, v in kwargs), bound=bound, span=call.span)

    def _resolve_method(self, call: ir.Call, use: Use):
        """``para.encode(x)``: a method the connector's component declares."""
        name, method = call.func, call.method
        decl = self.decls.get(name)
        if decl is None:
            self._unknown(name, call.func_span, "connector", "KD210", list(self.connectors))
            return None
        if not isinstance(decl, ir.ConnectorDecl):
            what = KIND_WORD[type(decl)]
            hint = f"record it: record NAME = output of {name}.{method}" if what == "model" else None
            self.diags.error("KD213", f"'{name}' is a {what}; only a connector's methods can be applied",
                             call.method_span or call.span, hint=hint)
            return None
        if not self._declared_before(name, call.func_span, use):
            return None
        use.connectors.add(name)
        component = REGISTRY.get("connector", decl.component)
        methods = [m for m, _ in component.methods] if component is not None else [method]
        if method not in methods:
            hint = did_you_mean(method, methods) or (
                f"its methods: {', '.join(methods)}" if methods else
                f"'{decl.component}' declares no methods; apply the connector itself: {name}(...)")
            self.diags.error("KD225", f"connector '{name}' ({decl.component}) has no method '{method}'",
                             call.method_span, hint=hint)
            return None
        arguments = self._tensor_arguments(call, use, f"'{name}.{method}'")
        if arguments is None:
            return None
        args, kwargs = arguments
        return ir.ConnectorApply(connector=name, method=method, args=args, kwargs=kwargs, span=call.span)

    def _resolve_model_call(self, call: ir.Call, decl: ir.ModelDecl, use: Use):
        """``gen(noise(100))``: a generator run on values, only in ``input = ...``."""
        name = call.func
        if decl.role != "generator":
            self.diags.error("KD224", f"{decl.role} '{name}' cannot be applied in a spec", call.func_span,
                             hint=f"record its output instead: record NAME = output of {name}")
            return None
        if not use.input:
            self.diags.error("KD224", f"generator '{name}' is applied only in 'input = ...'",
                             call.func_span, hint=f"record its output: record NAME = output of {name}")
            return None
        if not self._model_ref(name, call.func_span, use.position):
            return None
        use.models.add(name)
        arguments = self._tensor_arguments(call, use, f"generator '{name}'")
        if arguments is None:
            return None
        args, kwargs = arguments
        return ir.ModelApply(model=name, args=args, kwargs=kwargs, span=call.span)

    def _tensor_arguments(self, call: ir.Call, use: Use, what: str):
        """The call's arguments resolved and each checked to be a tensor (``what`` names the
        callee in the error), as the positional values and IR keywords; None after an error."""
        resolved = self._resolved_arguments(call, use)
        if resolved is None:
            return None
        args, kwargs = resolved
        for value in list(args) + [v for _, v in kwargs]:
            self._check_tensor(what, value)
        return tuple(args), tuple(ir.Keyword(name=k.name, value=v, span=k.span) for k, v in kwargs)
