"""The verifier's argument checks: a call bound to its component's signature (from the catalog),
inputs that must be tensors, options that must be literals of the declared type and range.

:class:`ArgumentChecks` is a mixin of :class:`~kdsl.lang.verify.Verifier`.
"""

from __future__ import annotations

from typing import Optional

from kdsl.catalog.binding import bind, value_problem
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import KIND_PLURALS, Component, Param
from kdsl.core.span import Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.verify_names import Use
from kdsl.lang.visit import Visitor


class _Description(Visitor[str]):
    """What a value is, in words, for messages ("the record 's'", "a list")."""

    def visit_const(self, e: ir.Const) -> str:
        v = e.value
        if isinstance(v, str):
            return "a string"
        if v is None:
            return "none"
        return f"the literal {str(v).lower() if isinstance(v, bool) else v}"

    def visit_list(self, e: ir.ListExpr) -> str:
        return "a list"

    def visit_module_ref(self, e: ir.ModuleRef) -> str:
        return f"the module {e}" if e.path else f"the model '{e.model}'"

    def visit_record_ref(self, e: ir.RecordRef) -> str:
        return f"the record '{e.record}'"

    def visit_connector_apply(self, e: ir.ConnectorApply) -> str:
        return f"the output of connector '{e.connector}'"

    def visit_batch_ref(self, e: ir.BatchRef) -> str:
        return f"batch.{e.field}"

    def visit_function_apply(self, e: ir.FunctionApply) -> str:
        return f"the output of {e.function}(...)"

    def visit_model_apply(self, e: ir.ModelApply) -> str:
        return f"the output of generator '{e.model}'"

    def generic_visit(self, e) -> str:
        return "an expression"


_DESCRIBE = _Description()


def describe_expr(expr) -> str:
    """A value described for a message."""
    return _DESCRIBE.visit(expr)


class ArgumentChecks:
    """Binding calls and checking their values (a mixin of the Verifier)."""

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
                f"{describe_expr(value)}", value.span,
                hint="pass a record, a connector application or a batch field")
        elif isinstance(value, ir.ModuleRef):
            self.diags.error(
                "KD311", f"input '{param.name}' of '{component.name}' takes a tensor, got "
                f"{describe_expr(value)}", value.span,
                hint=f"record it first: record NAME = output of {value}")

    def _check_tensor(self, what: str, value) -> None:
        """A value passed where only tensors make sense (a connector's method, a generator)."""
        if isinstance(value, (ir.Const, ir.ModuleRef)) or (
                isinstance(value, ir.ListExpr) and not self._runtime_list(value)):
            self.diags.error("KD311", f"{what} takes tensors, got {describe_expr(value)}", value.span,
                             hint="pass a record, a connector application, a function or a batch field")

    def _resolve_function(self, call: ir.Call, use: Use):
        """``argmax(t, dim=1)``, ``noise(100)``: a catalog function bound like a loss call, where
        positional arguments fill the inputs and then the options; the resolved
        :class:`~kdsl.lang.ir.FunctionApply` holds the inputs given by position in ``args`` and
        everything else, options given by position included, by name in ``kwargs``."""
        component = REGISTRY.get("function", call.func)
        args = [self.resolve(a, use) for a in call.args]
        kwargs = [(k.name, self.resolve(k.value, use), k.span) for k in call.kwargs]
        n_in = len(component.inputs)
        extra = list(zip(args[n_in:], call.args[n_in:]))
        slots = component.options
        if len(extra) > len(slots):
            names = ", ".join(p.name for p in tuple(component.inputs) + tuple(slots)) or "none"
            self.diags.error("KD306", f"'{component.name}' takes {n_in + len(slots)} positional "
                             f"arguments ({names}), got {len(call.args)}",
                             call.args[n_in + len(slots)].span)
            extra = extra[:len(slots)]
        named = [(p.name, value, arg.span) for p, (value, arg) in zip(slots, extra)] + kwargs
        if any(a is None for a in args[:n_in]) or any(v is None for _, v, _ in named):
            return None
        binding = bind(component, args[:n_in], [(k, v) for k, v, _ in named], inputs=True)
        for problem in binding.problems:
            at = problem.position
            span = named[at][2] if problem.keyword is not None and at is not None and at < len(named) \
                else self._problem_span(call, problem)
            self.diags.error(problem.code, problem.message, span, hint=problem.hint)
        for pname, value in binding.inputs.items():
            self._check_input(component, component.input(pname), value)
        for pname, value in binding.options.items():
            if value is not None:
                self._check_option(component, component.option(pname), value)
        if binding.problems:
            return None
        return ir.FunctionApply(function=call.func, args=tuple(args[:n_in]),
                                kwargs=tuple(ir.Keyword(name=k, value=v, span=sp) for k, v, sp in named),
                                bound=ir.Bound.of(binding.inputs, binding.options), span=call.span)

    def _runtime_list(self, value) -> bool:
        return isinstance(value, ir.ListExpr) and bool(value.items) and all(
            not isinstance(i, (ir.Const, ir.ListExpr, ir.ModuleRef)) for i in value.items)

    def _check_option(self, component: Component, param: Param, value) -> None:
        if param.type.name == "module":
            if not isinstance(value, ir.ModuleRef) or not value.path:
                self.diags.error("KD311", f"option '{param.name}' of '{component.name}' takes a module "
                                 f"of a model, got {describe_expr(value)}", value.span,
                                 hint=f"e.g. {param.name}=teacher.layer2.0.bn1")
            return
        ok, literal = try_literal(value)
        if not ok:
            self.diags.error("KD311", f"option '{param.name}' of '{component.name}' takes a literal "
                             f"{param.type.describe()}, got {describe_expr(value)}", value.span)
            return
        problem = value_problem(component, param, literal)
        if problem:
            at_item = problem.item is not None and isinstance(value, ir.ListExpr)
            span = value.items[problem.item].span if at_item else value.span
            self.diags.error(problem.code, problem.message, span, hint=problem.hint)

    def _bind_call(self, component: Component, call: ir.Call, use: Use, *, inputs: bool,
                   resolve: bool = True):
        """Bind and check a call's arguments; returns the resolved call, carrying its binding
        (:class:`~kdsl.lang.ir.Bound`), or None."""
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
                                     f"value, got {describe_expr(value)}", value.span)
        if failed:
            return None
        return call.model_copy(update={
            "args": tuple(args),
            "kwargs": tuple(ir.Keyword(name=k.name, value=v, span=k.span) for k, v in kwargs),
            "bound": ir.Bound.of(binding.inputs, binding.options)})

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
