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

    # ------------------------------------------------------------ statements
    @staticmethod
    def _override(stmt) -> str:
        return "override " if stmt.override else ""

    def visit_model(self, m: ir.ModelDecl) -> str:
        words = [self._override(m) + m.role]
        if m.name != m.role:
            words.append(m.name)
        if m.factory is not None:
            words.append("= " + self.visit(m.factory))
        if m.checkpoint is not None:
            words.append("from " + literal_text(m.checkpoint))
        if m.trainable:
            words.append("trainable")
        return " ".join(words)

    def record_source(self, r: ir.RecordDecl) -> str:
        """What a record reads, as written after ``record NAME =``."""
        target = self.visit(r.target)
        if r.what == "param":
            return f"param {target}"
        text = "output"
        if r.what == "input":
            text = "input" if r.input in (0, None) else f"input {literal_text(r.input)}"
        text += f" of {target}"
        if r.invocation == "all":
            text += " all calls"
        elif r.invocation != 0:
            text += f" call {r.invocation}"
        return text

    def visit_record(self, r: ir.RecordDecl) -> str:
        return f"{self._override(r)}record {r.name} = {self.record_source(r)}"

    def visit_deliver(self, d: ir.DeliverDecl) -> str:
        text = f"deliver output of {self.visit(d.target)} from {d.source} to {d.dest}"
        return text if d.keep is None else f"{text} keep {d.keep}"

    def visit_connector(self, c: ir.ConnectorDecl) -> str:
        text = f"{self._override(c)}connector {c.name} = {self.visit(c.call)}"
        if c.checkpoint is not None:
            text += " from " + literal_text(c.checkpoint)
        return text + " frozen" if c.frozen else text

    def visit_loss(self, loss: ir.LossDecl) -> str:
        text = f"{self._override(loss)}loss {loss.name} = {self.visit(loss.call)}"
        return text if loss.weight is None else f"{text} * {self.visit(loss.weight)}"

    def visit_train(self, t: ir.TrainDecl) -> str:
        lines = [TRAIN_OPEN] + [INDENT + self.visit(s) for s in t.settings] + [TRAIN_CLOSE]
        return "\n".join(lines)

    def visit_param_scope(self, p: ir.ParamScope) -> str:
        return str(p)

    def visit_optimize(self, o: ir.OptimizeDecl) -> str:
        text = "optimize " + ", ".join(self.visit(t) for t in o.targets)
        return text if o.optimizer is None else f"{text} with {self.visit(o.optimizer)}"

    def visit_freeze(self, f: ir.FreezeDecl) -> str:
        return f"freeze {self.visit(f.target)}"

    def visit_init(self, i: ir.InitDecl) -> str:
        return f"init {self.visit(i.target)} from {self.visit(i.source)}"

    def visit_input(self, i: ir.InputDecl) -> str:
        return f"input = {self.visit(i.value)}"

    def _block(self, node) -> str:
        inner = [self.visit(s) for s in node.statements]
        lines = [block_header(node)] + [INDENT + line for text in inner for line in text.split("\n")]
        return "\n".join(lines + [BLOCK_CLOSE])

    def visit_stage(self, s: ir.StageDecl) -> str:
        return self._block(s)

    def visit_phase(self, p: ir.PhaseDecl) -> str:
        return self._block(p)

    def visit_include(self, i: ir.IncludeDecl) -> str:
        return f"include {literal_text(i.path)}"

    def visit_import(self, i: ir.ImportDecl) -> str:
        return f"import {literal_text(i.module)}"


TRAIN_OPEN, TRAIN_CLOSE = "train {", "}"
BLOCK_CLOSE = "}"


def block_header(node) -> str:
    """The opening line of a block: ``train {``, ``stage NAME [epochs N] {``,
    ``phase NAME [repeat N] {`` (``repeat 1``, the default, is not written)."""
    if isinstance(node, ir.StageDecl):
        return f"stage {node.name}" + ("" if node.epochs is None else f" epochs {node.epochs}") + " {"
    if isinstance(node, ir.PhaseDecl):
        return f"phase {node.name}" + ("" if node.repeat == 1 else f" repeat {node.repeat}") + " {"
    return TRAIN_OPEN

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
