"""The one interpreter of resolved expressions: what a loss's inputs evaluate to.

The training step and the compiler's dry run run the same :class:`Interpreter`, as torch.fx's
``ShapeProp`` is its ``Interpreter`` run on example inputs. They differ only in the :class:`Env`
the interpreter asks for leaf values and connector modules:

* the step's :class:`StepEnv` reads the recorders and the batch given to ``step``;
* the compiler's dry-run environment reads the values recorded on the example input, says
  :class:`Unavailable` for what it does not have, builds each connector once the shape of its
  input is known, and runs connectors in eval mode leaving no trace.

So a selection that fails, a connector that raises or a missing batch field give the same
diagnostic (same code, same text) whether the dry run or a training step finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from kdsl.core.diagnostics import KdslError, error
from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.lang.visit import Visitor, kind_of
from kdsl.runtime.recorders import Recorder, check_missing
from kdsl.runtime.values import describe_value


class Unavailable(Exception):
    """A value the environment does not have (a dry run without an example input, or a batch
    field the example does not give): the expression has no value, and the caller goes on."""


def where(span: Span | None) -> str:
    """`` at FILE:LINE:COL`` for messages that may be read without the rendered location."""
    return f" at {span}" if span else ""


@dataclass(frozen=True)
class BoundFunction:
    """A catalog function of a spec, built once when compiling: its module (options applied)
    and the expressions of its inputs, in order. A ``needs_context`` function (``noise``) takes the
    step's :class:`~kdsl.components.functions.FunctionContext` instead of inputs."""

    module: nn.Module
    inputs: Tuple[Any, ...] = ()
    needs_context: bool = False


class Env:
    """Where an :class:`Interpreter` finds leaf values, and how it runs a connector, a function
    or a model."""

    def record(self, expr: ir.RecordRef) -> Any:
        raise NotImplementedError

    def batch(self, expr: ir.BatchRef) -> Any:
        raise NotImplementedError

    def module(self, expr: ir.ModuleRef) -> nn.Module:
        raise NotImplementedError

    def connector(self, expr: ir.ConnectorApply, args: Sequence[Any]) -> nn.Module:
        """The module that ``expr`` applies; ``args`` holds ``None`` where a value is unavailable."""
        raise NotImplementedError

    def call(self, expr: ir.ConnectorApply, module: nn.Module, args: List[Any],
             kwargs: Dict[str, Any]) -> Any:
        """Run the connector, or its method (the interpreter turns what it raises into KD602)."""
        return connector_callable(module, expr)(*args, **kwargs)

    def function(self, expr: ir.FunctionApply) -> BoundFunction:
        """The built function that ``expr`` applies."""
        raise NotImplementedError

    def context(self) -> Any:
        """The :class:`~kdsl.components.functions.FunctionContext` of this evaluation."""
        raise NotImplementedError

    def run_model(self, expr: ir.ModelApply, args: List[Any], kwargs: Dict[str, Any]) -> Any:
        """Run a declared model on values (a generator in ``input``): its own pass."""
        raise NotImplementedError


def connector_callable(module: nn.Module, expr: ir.ConnectorApply) -> Callable[..., Any]:
    """``module`` itself, or its method ``expr.method`` (``para.reconstruct``)."""
    return module if expr.method is None else getattr(module, expr.method)


def run_pass(state: Any, name: str, model: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]) -> Any:
    """``model(*args, **kwargs)`` as model ``name``'s pass (its recorders listen), restoring the
    pass that was running before (the input is evaluated outside any other pass)."""
    before = state.active
    state.active = name
    try:
        return model(*args, **kwargs)
    finally:
        state.active = before


class StepEnv(Env):
    """A training step's values: the recorders' entries and the fields of the step's batch."""

    def __init__(self, recorders: Dict[str, Recorder], connectors: Any,
                 modules: Dict[ir.ModuleRef, nn.Module],
                 functions: Optional[Dict[ir.FunctionApply, BoundFunction]] = None,
                 models: Optional[Callable[[str], nn.Module]] = None, state: Any = None,
                 context: Optional[Callable[[], Any]] = None) -> None:
        self.recorders = recorders
        self.connectors = connectors  # a ModuleDict: the distiller's own, moved with it
        self.modules = modules
        self.functions = dict(functions or {})
        self.models = models  # name -> model (the distiller's, moved with it)
        self.state = state
        self.context_of = context
        self.fields: Dict[str, Any] = {}

    def record(self, expr: ir.RecordRef) -> Any:
        rec = self.recorders[expr.record]
        return check_missing(rec.read(), rec)

    def batch(self, expr: ir.BatchRef) -> Any:
        try:
            return self.fields[expr.field]
        except KeyError:
            name = expr.field
            given = ", ".join(sorted(self.fields)) or "nothing"
            how = "distiller.step(x, target=y)" if name == "target" else \
                f"distiller.step(x, batch={{'{name}': ...}})"
            raise error("KD608", f"the loss reads batch.{name} but the step was given {given}",
                        expr.span, hint=f"pass it: {how}") from None

    def module(self, expr: ir.ModuleRef) -> nn.Module:
        return self.modules[expr]

    def connector(self, expr: ir.ConnectorApply, args: Sequence[Any]) -> nn.Module:
        return self.connectors[expr.connector]

    def function(self, expr: ir.FunctionApply) -> BoundFunction:
        return self.functions[expr]

    def context(self) -> Any:
        return self.context_of()

    def run_model(self, expr: ir.ModelApply, args: List[Any], kwargs: Dict[str, Any]) -> Any:
        return run_pass(self.state, expr.model, self.models(expr.model), args, kwargs)


def select(value: Any, expr: ir.Select) -> Any:
    """``value.key`` (a dict's key too: ``x.logits``) or ``value[key]``; KD610 when it fails."""
    key = expr.key
    try:
        if expr.by == "attr":
            return value[key] if isinstance(value, dict) else getattr(value, key)
        return value[key]
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        text = f".{key}" if expr.by == "attr" else f"[{key!r}]"
        raise error("KD610", f"cannot select {text} of {describe_value(value)}: "
                    f"{type(exc).__name__}: {exc}", expr.span) from None


class Interpreter(Visitor[Any]):
    """Evaluates resolved expressions against an :class:`Env`, one ``visit_<kind>`` per kind.

    The same connector or model application (same callee and arguments, spans aside) runs once
    until :meth:`clear`: two losses reading ``embed(s)`` share one output, and one gradient path.
    Functions run every time they are evaluated (``noise`` draws afresh).
    """

    def __init__(self, env: Env) -> None:
        self.env = env
        self.cache: Dict[int, Any] = {}  # application slot -> output
        self._slots: Dict[int, Tuple[ir.Node, int]] = {}  # id(node) -> (node, slot)
        self._canonical: Dict[ir.Node, int] = {}  # node (spans aside) -> slot
        self._methods: Dict[type, Callable[[Any], Any]] = {}

    def visit(self, node: Any) -> Any:
        # Visitor's dispatch by kind, looked up once per node class: this runs every step
        method = self._methods.get(type(node))
        if method is None:
            method = getattr(self, "visit_" + kind_of(node), self.generic_visit)
            self._methods[type(node)] = method
        return method(node)

    def clear(self) -> None:
        """Forget connector outputs (the end of a step)."""
        self.cache.clear()

    def generic_visit(self, node: Any) -> Any:
        raise AssertionError(f"unresolved expression {kind_of(node)}")

    def visit_const(self, expr: ir.Const) -> Any:
        return expr.value

    def visit_list(self, expr: ir.ListExpr) -> List[Any]:
        return [self.visit(i) for i in expr.items]

    def visit_record_ref(self, expr: ir.RecordRef) -> Any:
        return self.env.record(expr)

    def visit_batch_ref(self, expr: ir.BatchRef) -> Any:
        return self.env.batch(expr)

    def visit_module_ref(self, expr: ir.ModuleRef) -> nn.Module:
        return self.env.module(expr)

    def visit_select(self, expr: ir.Select) -> Any:
        return select(self.visit(expr.value), expr)

    def visit_connector_apply(self, expr: ir.ConnectorApply) -> Any:
        slot = self._slot(expr)
        if slot in self.cache:
            return self.cache[slot]
        args: List[Any] = []
        known = True
        for a in expr.args:
            try:
                args.append(self.visit(a))
            except Unavailable:
                args.append(None)
                known = False
        # asked even when an argument is unavailable: a dry run builds the connector regardless
        module = self.env.connector(expr, args)
        if not known:
            raise Unavailable(expr.connector)
        kwargs = {k.name: self.visit(k.value) for k in expr.kwargs}
        try:
            out = self.env.call(expr, module, args, kwargs)
        except KdslError:
            raise
        except Exception as exc:
            name = expr.connector + (f".{expr.method}" if expr.method else "")
            raise error("KD602", f"while evaluating connector '{name}'{where(expr.span)}: "
                        f"{type(exc).__name__}: {exc}", expr.span,
                        hint="inputs: " + "; ".join(describe_value(v) for v in args)) from exc
        self.cache[slot] = out
        return out

    def visit_function_apply(self, expr: ir.FunctionApply) -> Any:
        bound = self.env.function(expr)
        if bound.needs_context:
            values = [self.env.context()]
        else:
            values = [self.visit(a) for a in bound.inputs]
        return _run_located(f"evaluating {expr.function}()", expr, values, lambda: bound.module(*values))

    def visit_model_apply(self, expr: ir.ModelApply) -> Any:
        slot = self._slot(expr)
        if slot in self.cache:
            return self.cache[slot]
        args = [self.visit(a) for a in expr.args]
        kwargs = {k.name: self.visit(k.value) for k in expr.kwargs}
        out = _run_located(f"running model '{expr.model}'", expr, args,
                           lambda: self.env.run_model(expr, args, kwargs))
        self.cache[slot] = out
        return out

    def _slot(self, expr: ir.Node) -> int:
        found = self._slots.get(id(expr))
        if found is None:
            # nodes compare without their spans: equal applications share a slot
            slot = self._canonical.setdefault(expr, len(self._canonical))
            found = self._slots[id(expr)] = (expr, slot)  # the node is kept: its id stays unique
        return found[1]


def _run_located(doing: str, expr: ir.Node, inputs: List[Any], run: Callable[[], Any]) -> Any:
    """``run()``; an exception from user code (not a kdsl error) becomes KD611 at ``expr``, saying
    what was being done and describing the ``inputs``."""
    try:
        return run()
    except KdslError:
        raise
    except Exception as exc:
        raise error("KD611", f"while {doing}{where(expr.span)}: {type(exc).__name__}: {exc}", expr.span,
                    hint="inputs: " + ("; ".join(describe_value(v) for v in inputs) or "none")) from exc
