"""The dry run's environment for the one expression interpreter (:mod:`kdsl.runtime.interpret`).

Where a step reads recorders and the batch, the dry run reads the values recorded on the example
input (and the example batch); what it lacks is :class:`~kdsl.runtime.interpret.Unavailable`.
A connector is built the first time an application reaches it, from the shapes of its inputs
(or, for an output size, from the tensor a loss compares its output with), and runs in eval mode
without gradients, leaving buffers and RNG as they were.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import Component
from kdsl.compiler.components import (Target, build_component, device_dtype, infer_options, no_target,
                                      options_of, size_of)
from kdsl.compiler.paths import resolve_module_ref
from kdsl.compiler.plan import ConnectorPlan, Plan, Skip
from kdsl.compiler.snapshot import Snapshot
from kdsl.components.functions import FunctionContext
from kdsl.core.diagnostics import KdslError, Note, error
from kdsl.lang import ir
from kdsl.lang.printer import expr_text
from kdsl.runtime.interpret import BoundFunction, Env, Unavailable, connector_callable, run_pass
from kdsl.runtime.values import info_of


class DryRunEnv(Env):
    """Values from the dry run; connectors built on first use and recorded in the plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # the expression a loss input evaluates, and how to size its output from its partner
        self.top: Tuple[Optional[Any], Target] = (None, no_target)

    def record(self, expr: ir.RecordRef) -> Any:
        if expr.record not in self.plan.values:
            raise Unavailable(expr.record)
        return self.plan.values[expr.record]

    def batch(self, expr: ir.BatchRef) -> Any:
        if expr.field not in self.plan.request.example_batch:
            raise Unavailable(f"batch.{expr.field}")
        return self.plan.request.example_batch[expr.field]

    def module(self, expr: ir.ModuleRef) -> nn.Module:
        module = resolve_module_ref(self.plan.models, expr)
        self.plan.modules[expr] = module
        return module

    def connector(self, expr: ir.ConnectorApply, args: Sequence[Any]) -> nn.Module:
        plan = self.plan
        if expr.connector in plan.broken:
            raise Skip()
        built = plan.connectors.get(expr.connector)
        if built is None:
            top, target = self.top
            built = build_connector(plan, plan.spec.connector(expr.connector),
                                    target if expr is top else no_target, args)
        return built.module

    def call(self, expr: ir.ConnectorApply, module: nn.Module, args: List[Any],
             kwargs: Dict[str, Any]) -> Any:
        built = self.plan.connectors[expr.connector]
        _check_declared_sizes(expr, built, args)
        was_training = module.training
        module.eval()
        snapshot = Snapshot([module])  # a dry run leaves no trace: buffers and RNG come back
        try:
            with torch.no_grad():
                out = connector_callable(module, expr)(*args, **kwargs)
            if built.output is None and expr.method is None:
                built.output = info_of(out)
            return out
        finally:
            snapshot.restore()
            module.train(was_training)

    def function(self, expr: ir.FunctionApply) -> BoundFunction:
        bound = self.plan.functions.get(expr)
        if bound is None:
            raise Skip()  # it failed to build: reported already
        return bound

    def context(self) -> Any:
        return dry_context(self.plan)

    def run_model(self, expr: ir.ModelApply, args: List[Any], kwargs: Dict[str, Any]) -> Any:
        # the dry run pass runs the input's models, under no_grad with buffers restored
        if expr.model not in self.plan.ran:
            self.plan.ran.append(expr.model)
        return run_pass(self.plan.state, expr.model, self.plan.models[expr.model], args, kwargs)


DRY_BATCH = 2  # rows of a dry run's generated input: norm layers in training mode need two


def dry_context(plan: Plan) -> Any:
    """The :class:`~kdsl.components.functions.FunctionContext` of the dry run: the example's
    batch size (or two), on the student's device and dtype."""
    example = plan.request.example_input
    rows = example.shape[0] if isinstance(example, torch.Tensor) and example.dim() else DRY_BATCH
    device, dtype = device_dtype(plan)
    return FunctionContext(rows, device, dtype)


def build_connector(plan: Plan, decl: ir.ConnectorDecl, target: Target,
                    args: Sequence[Any] = ()) -> ConnectorPlan:
    """Build ``decl``'s connector, inferring left-out sizes from ``args``' shapes; record it in
    the plan (a connector that fails to build is marked broken and reported once)."""
    component = REGISTRY.get("connector", decl.component)
    options = options_of(plan, decl.call)
    infos = {p.name: info_of(v) for p, v in zip(component.inputs, args)}
    given = set(options)
    what = f"connector '{decl.name}'"
    infer_options(plan, component, options, infos, target, decl.span, what)
    built = plan.connectors[decl.name] = ConnectorPlan(
        decl, dict(options), sorted(set(options) - given),
        input=infos.get(component.inputs[0].name) if component.inputs else None)
    try:
        built.module = build_component(plan, component, options, decl.span, what, "KD510")
    except KdslError:
        plan.broken.add(decl.name)
        raise
    return built


def _check_declared_sizes(expr: ir.ConnectorApply, built: ConnectorPlan, values: List[Any]) -> None:
    """A size the spec gives (``in_channels=32``) that the input contradicts: say so plainly,
    before torch's own error from inside the connector."""
    decl = built.decl
    component: Component = REGISTRY.get("connector", decl.component)
    names = [p.name for p in component.inputs]
    for inf in component.infer:
        if inf.source == "target" or inf.option in built.inferred or inf.option not in built.options:
            continue
        name = names[0] if inf.source == "input" else inf.source
        index = names.index(name) if name in names else 0
        info = info_of(values[index]) if index < len(values) else None
        actual = size_of(info, inf)
        declared = built.options[inf.option]
        if actual is not None and actual != declared:
            what = "features per sample" if inf.flat else \
                ("channels" if inf.dim == 1 else f"size {actual} in dimension {inf.dim}")
            raise error("KD505", f"connector '{decl.name}' ({decl.component}) has {inf.option}="
                        f"{declared}, but its input {expr_text(expr.args[index])} "
                        f"has {actual} {what} {info.describe()}", expr.span,
                        hint=f"set {inf.option}={actual}, or leave it out to have it inferred",
                        notes=[Note(message=f"'{decl.name}' declared", span=decl.span)])
