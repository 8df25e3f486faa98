"""Literal expressions (constants and lists of them) as Python values."""

from __future__ import annotations

from typing import Tuple

from kdsl.lang import ir


def try_literal(expr) -> Tuple[bool, object]:
    """(True, python value) when ``expr`` is a literal (constant or list of literals)."""
    if isinstance(expr, ir.Const):
        return True, expr.value
    if isinstance(expr, ir.ListExpr):
        values = []
        for item in expr.items:
            ok, v = try_literal(item)
            if not ok:
                return False, None
            values.append(v)
        return True, values
    return False, None


def literal_value(expr):
    ok, value = try_literal(expr)
    if not ok:
        raise ValueError("not a literal")
    return value
