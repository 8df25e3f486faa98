"""Loss terms: one ``loss NAME = component(inputs) * weight`` of a spec, evaluated each step.

A term's inputs are resolved expressions; the step's :class:`~kdsl.runtime.interpret.Interpreter`
evaluates them. Shape rules are checked once: at compile time when a dry run had every input,
otherwise on the first step.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from kdsl.catalog.shapes import check_rules
from kdsl.components.schedules import Progress, Schedule
from kdsl.core.diagnostics import KdslError, error, make
from kdsl.lang import ir
from kdsl.runtime.interpret import Interpreter, where
from kdsl.runtime.values import describe_value, info_of


class LossTerm:
    """One loss of the spec: its module, its input expressions (``None`` for an input the spec
    leaves out), its shape rules and its weight (a number or a schedule)."""

    def __init__(self, decl: ir.LossDecl, module: nn.Module, inputs: Sequence[Optional[ir.Node]],
                 input_names: Sequence[str], rules, weight: Any, checked: bool = False) -> None:
        self.name = decl.name
        self.span = decl.span
        self.component = decl.component
        self.module = module
        self.inputs = list(inputs)
        self.input_names = list(input_names)
        self.rules = rules
        self.weight = weight  # float or Schedule
        self.checked = checked  # shape rules already checked (on the dry run, or a first step)

    def weight_at(self, progress: Progress) -> float:
        if isinstance(self.weight, Schedule):
            try:
                return float(self.weight(progress))
            except ValueError as exc:
                raise error("KD601", f"weight of loss '{self.name}': {exc}", self.span) from None
        return self.weight

    def input_values(self, interpreter: Interpreter) -> List[Any]:
        return [interpreter.visit(e) if e is not None else None for e in self.inputs]

    def check_shapes(self, values: Sequence[Any]) -> None:
        infos = {n: info_of(v) for n, v in zip(self.input_names, values)}
        problems = check_rules(self.rules, {k: v for k, v in infos.items() if v is not None})
        self.checked = True
        if problems:
            raise KdslError([make(p.code, f"loss '{self.name}' ({self.component}): {p.message}", self.span)
                             for p in problems])

    def evaluate(self, interpreter: Interpreter, progress: Progress
                 ) -> Tuple[torch.Tensor, torch.Tensor, float]:
        """(unweighted value, weighted value, weight) of this step."""
        values = self.input_values(interpreter)
        if not self.checked:
            self.check_shapes(values)
        try:
            value = self.module(*values)
        except KdslError:
            raise
        except Exception as exc:
            raise error("KD601", f"while evaluating loss '{self.name}'{where(self.span)}: "
                        f"{type(exc).__name__}: {exc}", self.span,
                        hint="inputs: " + "; ".join(f"{n} = {describe_value(v)}"
                                                    for n, v in zip(self.input_names, values))) from exc
        w = self.weight_at(progress)
        return value, (value if w == 1.0 else value * w), w
