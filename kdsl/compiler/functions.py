"""The pass that builds the spec's tensor functions (``detach(x)``, ``argmax(t, dim=1)``,
``noise(100)``): each application's catalog component built once per compile with its literal
options (:func:`kdsl.catalog.binding.instantiate` checks them), its inputs bound to expressions
for the interpreter. Equal applications (spans aside) share one module."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from torch import nn

from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import Component
from kdsl.compiler.plan import Plan
from kdsl.core.diagnostics import KdslError, error
from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lang.visit import find
from kdsl.runtime.interpret import BoundFunction


def spec_expressions(spec: ir.Spec) -> List[ir.Node]:
    """Every expression a step evaluates: the losses' calls (stages and phases included), their
    weights, and the ``input`` expression."""
    out: List[ir.Node] = [loss.call for loss in spec.all_losses]
    out += [loss.weight for loss in spec.all_losses if loss.weight is not None]
    if spec.input is not None:
        out.append(spec.input.value)
    return out


def build_functions(plan: Plan) -> Plan:
    """A :class:`~kdsl.runtime.interpret.BoundFunction` for every function application."""
    for expr in spec_expressions(plan.spec):
        for app in find(expr, ir.FunctionApply):
            if app in plan.functions:
                continue
            try:
                plan.functions[app] = bind_function(app)
            except KdslError as exc:
                plan.diags.extend(exc.diagnostics)
    return plan


def bind_function(app: ir.FunctionApply) -> BoundFunction:
    """``app``'s component built from its literal options, its input expressions in order."""
    component: Optional[Component] = REGISTRY.get("function", app.function)
    if component is None:
        from kdsl.core.suggest import did_you_mean

        raise error("KD519", f"there is no function '{app.function}'", app.span,
                    hint=did_you_mean(app.function, REGISTRY.names("function")))
    binding = ir.bound(app)  # the verifier's binding of its arguments
    inputs: Dict[str, Any] = binding.input_values
    options = {name: _literal(app, name, value) for name, value in binding.option_values.items()}
    names = [p.name for p in component.inputs]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise error("KD519", f"{app.function}() needs its input '{missing[0]}'", app.span)
    try:
        module = instantiate(component, **options)
    except Exception as exc:  # noqa: BLE001 - the component rejected its options
        raise error("KD519", f"cannot build {app.function}(): {type(exc).__name__}: {exc}",
                    app.span) from None
    if not isinstance(module, nn.Module):
        raise error("KD519", f"function '{app.function}' did not build an nn.Module", app.span)
    return BoundFunction(module, tuple(inputs[n] for n in names),
                         bool(getattr(module, "needs_context", False)))


def _literal(app: ir.FunctionApply, name: str, expr: ir.Node) -> Any:
    ok, value = try_literal(expr)
    if not ok:
        raise error("KD519", f"{app.function}(): option '{name}' must be a literal value",
                    getattr(expr, "span", None) or app.span)
    return value
