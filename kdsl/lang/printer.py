"""IR back to spec text: the one printer, used by messages, ``kdsl explain``, ``kdsl graph`` and
``kdsl fmt``. Printing a parsed expression gives text that parses to the same IR."""

from __future__ import annotations

from typing import Optional

from kdsl.core.literals import literal_text
from kdsl.lang import ir
from kdsl.lang.visit import Visitor


class ExprPrinter(Visitor[str]):
    def visit_const(self, e: ir.Const) -> str:
        return literal_text(e.value)

    def visit_list(self, e: ir.ListExpr) -> str:
        return "[" + ", ".join(self.visit(i) for i in e.items) + "]"

    def visit_name(self, e: ir.Name) -> str:
        return e.name

    def visit_record_ref(self, e: ir.RecordRef) -> str:
        return e.record

    def visit_module_ref(self, e: ir.ModuleRef) -> str:
        return str(e)

    def visit_batch_ref(self, e: ir.BatchRef) -> str:
        return f"batch.{e.field}"

    def visit_attr(self, e: ir.Attr) -> str:
        return f"{self.visit(e.value)}.{e.attr}"

    def visit_item(self, e: ir.Item) -> str:
        return f"{self.visit(e.value)}[{literal_text(e.key)}]"

    def visit_select(self, e: ir.Select) -> str:
        if e.by == "attr":
            return f"{self.visit(e.value)}.{e.key}"
        return f"{self.visit(e.value)}[{literal_text(e.key)}]"

    def _call(self, func: str, args, kwargs) -> str:
        parts = [self.visit(a) for a in args] + [f"{k.name}={self.visit(k.value)}" for k in kwargs]
        return f"{func}({', '.join(parts)})"

    def visit_call(self, e: ir.Call) -> str:
        return self._call(e.func, e.args, e.kwargs)

    def visit_connector_apply(self, e: ir.ConnectorApply) -> str:
        return self._call(e.connector, e.args, e.kwargs)

    def generic_visit(self, node) -> str:
        return str(node)


_EXPR = ExprPrinter()


def expr_text(expr) -> str:
    """An expression as it would be written in a spec."""
    return _EXPR.visit(expr)


def weight_text(weight: Optional[ir.Node]) -> str:
    """A loss term's weight as written (``1`` when the spec gives none)."""
    return "1" if weight is None else expr_text(weight)
