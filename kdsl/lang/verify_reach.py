"""What a value depends on differentiably: the models and connectors whose parameters get
gradients from a loss, for the checks of ``optimize`` (a target that no loss reaches would train
nothing), and what ``input = ...`` may read.

A record reaches its model; a connector application reaches the connector and whatever its
arguments reach; ``detach`` and ``argmax`` stop gradients (their outputs are constants to
autograd). When the models' input is made by a generator, a record of any model that runs on
that input (every model but the generators) reaches what the input reaches, through the model
even when the model itself is frozen.
"""

from __future__ import annotations

from typing import Dict, Optional, Set, Tuple

from kdsl.lang import ir
from kdsl.lang.visit import Visitor, find

# Functions whose output carries no gradient back to their input.
NO_GRADIENT = ("detach", "argmax")


class _Reach(Visitor[None]):
    def __init__(self, models: Dict[str, ir.ModelDecl], records: Dict[str, ir.RecordDecl],
                 fed: Set[str]) -> None:
        self.models, self.records, self.fed = models, records, fed
        self.found: Set[str] = set()

    def visit_record_ref(self, e: ir.RecordRef) -> None:
        record = self.records.get(e.record)
        if record is None or record.model is None:
            return
        self.found.add(record.model)
        model = self.models.get(record.model)
        if model is not None and model.role != "generator":
            self.found |= self.fed

    def visit_connector_apply(self, e: ir.ConnectorApply) -> None:
        self.found.add(e.connector)
        self.generic_visit(e)

    def visit_model_apply(self, e: ir.ModelApply) -> None:
        self.found.add(e.model)
        self.generic_visit(e)

    def visit_function_apply(self, e: ir.FunctionApply) -> None:
        if e.function not in NO_GRADIENT:
            self.generic_visit(e)

    def visit_module_ref(self, e: ir.ModuleRef) -> None:
        return None  # a module is an option (ofd_margin(bn=...)), not a value gradients flow through


def gradient_reach(expr: Optional[ir.Node], models: Dict[str, ir.ModelDecl],
                   records: Dict[str, ir.RecordDecl], fed: Set[str] = frozenset()) -> Set[str]:
    """Names of the models and connectors whose parameters ``expr``'s value depends on
    differentiably; ``fed``: what the models' input depends on."""
    if expr is None:
        return set()
    reach = _Reach(models, records, set(fed))
    reach.visit(expr)
    return reach.found


def input_reads(expr: ir.Node) -> Optional[Tuple[str, ir.Node]]:
    """What ``input = expr`` reads that it may not (in words, and the node), or None: records,
    connectors and batch fields exist only once the models have run on the input."""
    for node in find(expr, ir.Node):
        if isinstance(node, ir.RecordRef):
            return f"the record '{node.record}'", node
        if isinstance(node, ir.ConnectorApply):
            return f"connector '{node.connector}'", node
        if isinstance(node, ir.BatchRef):
            return f"batch.{node.field}", node
        if isinstance(node, ir.ModuleRef):
            return f"the module {node}" if node.path else f"the model '{node.model}'", node
    return None
