"""IR back to spec text: the one printer, used by messages, ``kdsl explain``, ``kdsl graph`` and
``kdsl fmt``. Printing a parsed expression or statement gives text that parses to the same IR.

Expressions print on one line, in the language's canonical spacing (``f(a, k=v)``, ``[1, 2]``,
``x * 0.5``). Statements print as one line each, except blocks (``train { ... }``,
``stage NAME { ... }``, ``phase NAME { ... }``), which print their entries one per line, indented
two spaces per level (a phase inside a stage: four). A printer can be given a ``spelling`` function that
returns how the source wrote a number (``5e-4`` stays ``5e-4`` instead of becoming ``0.0005``);
without one, numbers print as Python writes them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from kdsl.core.literals import literal_text
from kdsl.lang import ir
from kdsl.lang.statements import BLOCK_CLOSE as BLOCK_CLOSE
from kdsl.lang.statements import block_header as block_header
from kdsl.lang.statements import is_statement, statement_kind
from kdsl.lang.visit import Visitor

# How the source spelt a constant (None: print it from its value).
Spelling = Callable[[ir.Const], Optional[str]]

INDENT = "  "  # one level: the entries of a block


class ExprPrinter(Visitor[str]):
    """Expressions, syntactic and resolved, as a spec would write them."""

    def __init__(self, spelling: Optional[Spelling] = None) -> None:
        self.spelling = spelling

    def visit_const(self, e: ir.Const) -> str:
        if self.spelling is not None and isinstance(e.value, (int, float)) and \
                not isinstance(e.value, bool):
            written = self.spelling(e)
            if written is not None:
                return written
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

    def visit_keyword(self, k: ir.Keyword) -> str:
        return f"{k.name}={self.visit(k.value)}"

    def _call(self, func: str, args, kwargs) -> str:
        parts = [self.visit(a) for a in args] + [self.visit(k) for k in kwargs]
        return f"{func}({', '.join(parts)})"

    def visit_call(self, e: ir.Call) -> str:
        func = e.func if e.method is None else f"{e.func}.{e.method}"
        return self._call(func, e.args, e.kwargs)

    def visit_connector_apply(self, e: ir.ConnectorApply) -> str:
        func = e.connector if e.method is None else f"{e.connector}.{e.method}"
        return self._call(func, e.args, e.kwargs)

    def visit_function_apply(self, e: ir.FunctionApply) -> str:
        return self._call(e.function, e.args, e.kwargs)

    def visit_model_apply(self, e: ir.ModelApply) -> str:
        return self._call(e.model, e.args, e.kwargs)

    def generic_visit(self, node) -> str:
        return str(node)


class StatementPrinter(ExprPrinter):
    """Statements (and their parts: factories, record targets, settings) as spec lines."""

    # ------------------------------------------------------------ parts
    def visit_factory(self, f: ir.Factory) -> str:
        return self._call("model", (ir.Const(value=f.ref),) + tuple(f.args), f.kwargs)

    def visit_module(self, t: ir.ModulePath) -> str:
        return str(t)

    def _callable(self, word: str, t) -> str:
        text = f"{word} {literal_text(t.ref)}"
        return text if t.model is None else f"{text} in {t.model}"

    def visit_method(self, t: ir.MethodRef) -> str:
        return self._callable("method", t)

    def visit_function(self, t: ir.FunctionRef) -> str:
        return self._callable("function", t)

    def visit_train_setting(self, s: ir.TrainSetting) -> str:
        return f"{s.key} = {self.visit(s.value)}"

    def visit_param_scope(self, p: ir.ParamScope) -> str:
        return str(p)

    # ------------------------------------------------------------ statements
    def visit(self, node):
        if is_statement(node):
            return statement_kind(node).text(self, node)  # the statement table prints statements
        return super().visit(node)

    def block(self, entries, header: str) -> str:
        """A block: its header, its entries' lines indented one level, and its ``}``."""
        lines = [header] + [INDENT + line for text in entries for line in text.split("\n")]
        return "\n".join(lines + [BLOCK_CLOSE])


_PRINTER = StatementPrinter()


def expr_text(expr) -> str:
    """An expression as it would be written in a spec."""
    return _PRINTER.visit(expr)


def weight_text(weight: Optional[ir.Node]) -> str:
    """A loss term's weight as written (``1`` when the spec gives none)."""
    return "1" if weight is None else expr_text(weight)


def statement_text(stmt: ir.Node, spelling: Optional[Spelling] = None) -> str:
    """A statement (or a train setting, factory, record target) as a spec writes it; a train
    block prints on several lines."""
    printer = _PRINTER if spelling is None else StatementPrinter(spelling)
    return printer.visit(stmt)


def value_text(value: Any) -> str:
    """A Python value (a setting, an option's default) as a spec writes it: ``true``, ``none``,
    ``"text"``, ``[1, 2]``; a ``(name, {options})`` pair of a call setting (optimizer, data) as
    the call ``name(k=v)``."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], Mapping):
        return call_text(value[0], value[1])
    return literal_text(value)


def call_text(func: str, options: Mapping[str, Any]) -> str:
    """``func(k=v, ...)``, every value as a spec writes it (``sgd(lr=0.05, nesterov=true)``)."""
    return f"{func}({', '.join(f'{k}={literal_text(v)}' for k, v in options.items())})"
