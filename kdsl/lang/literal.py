"""Literal expressions (constants and lists of them) as Python values."""

from __future__ import annotations

from typing import Tuple

from kdsl.lang import ir
from kdsl.lang.visit import Visitor


class _NotLiteral(Exception):
    pass


class _LiteralValue(Visitor[object]):
    def visit_const(self, e: ir.Const) -> object:
        return e.value

    def visit_list(self, e: ir.ListExpr) -> object:
        return [self.visit(i) for i in e.items]

    def generic_visit(self, node) -> object:
        raise _NotLiteral  # a name, a call, a reference: known only when the models run


_LITERAL = _LiteralValue()


def try_literal(expr) -> Tuple[bool, object]:
    """(True, python value) when ``expr`` is a literal (constant or list of literals)."""
    try:
        return True, _LITERAL.visit(expr)
    except _NotLiteral:
        return False, None


def literal_value(expr):
    ok, value = try_literal(expr)
    if not ok:
        raise ValueError("not a literal")
    return value
