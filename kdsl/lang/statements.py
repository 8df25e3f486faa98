"""THE table of statement kinds: for each, its IR node, the words it starts with, how its parse
tree is lowered, how it prints, which verifier check resolves it, and where it may stand.

Every dispatch on a statement kind is derived from :data:`STATEMENTS` (sqlglot's
``STATEMENT_PARSERS``, Jinja2's node + parse + visit): the cutter's statement words and block
contents (:mod:`~kdsl.lang.parser`), the builder (:mod:`~kdsl.lang.lower`), the printer
(:mod:`~kdsl.lang.printer`), the verifier's dispatch, the words its messages use for declared
names, what counts as a named declaration or a block, which statements ``kdsl fmt`` lines up.
A kind missing from the table is an internal error wherever it is met (:func:`statement_kind`),
never silently passed through; ``tests/language/test_statement_table.py`` checks that every IR
statement has a complete entry.

A new statement is its grammar rule, its IR node, one entry here (lowering, printing and its
check beside it), and the compiler pass or runtime piece that gives it effect. The kinds of
``record`` (:data:`RECORDER_KINDS`) are declared here too, beside the record statement; the
compiler installs each with the installer of the same name.

Lowering functions take the :class:`~kdsl.lang.lower.Builder` (spans, strings, expressions),
printing functions the :class:`~kdsl.lang.printer.StatementPrinter` (expressions, parts), checks
the :class:`~kdsl.lang.verify.Verifier` (its name resolution, argument checks and diagnostics)
and return the resolved statement; a check that lives in a verifier module is named with
:func:`verifier_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from kdsl.catalog.search import SEARCH_WORD
from kdsl.core.diagnostics import Note
from kdsl.core.literals import literal_text
from kdsl.lang import generation, ir
from kdsl.lang.literal import try_literal

Lower = Callable[[Any, Any, Any], Optional[ir.Node]]  # (builder, parse tree, span) -> node
Text = Callable[[Any, Any], str]  # (printer, node) -> spec text
Check = Callable[[Any, Any, Any], Optional[ir.Node]]  # (verifier, node, use) -> the resolved node


class UnhandledStatement(AssertionError):
    """A statement kind without a table entry: the table and the code disagree (a bug in kdsl)."""


@dataclass(frozen=True)
class StatementKind:
    """One kind of statement.

    ``keywords``: the words that start it (the cutter uses them to find statements that begin
    where a bracket or a block was left open). ``rule``: the grammar rule lowered to it.
    ``word``: the statement in a message ("a delivery cannot stand inside stage 's'").
    ``declares``: the kind word of the name it declares ("loss"), None when it declares none.
    ``inside``: the blocks it may stand in (``stage``, ``phase``). ``holds_statements``: a block
    whose entries are statements (stage, phase; a train block holds settings).
    ``aligned``: ``KEYWORD NAME = ...`` lines whose ``=`` ``kdsl fmt`` lines up.
    ``check``: checks it and returns the resolved node (see :func:`verifier_method`).
    """

    kind: str
    node: type
    keywords: Tuple[str, ...]
    rule: str
    word: str
    lower: Lower
    text: Text
    check: Check
    declares: Optional[str] = None
    inside: Tuple[str, ...] = ()
    block: bool = False
    holds_statements: bool = False
    aligned: bool = False


def verifier_method(name: str) -> Check:
    """A check that is a method of the Verifier (its mixins hold the checks that share its state)."""
    def check(verifier, node, use):
        return getattr(verifier, name)(node, use)

    check.method = name  # type: ignore[attr-defined] - for the table's completeness test
    return check


# ------------------------------------------------------------------------------ lowering and printing
def _override(stmt) -> str:
    return "override " if getattr(stmt, "override", False) else ""


def _lower_model(b, t, span):
    role_t, name_t, factory_t, ckpt_t, *flags = t.children
    role = str(role_t.children[0])
    factory = b.factory(factory_t) if factory_t is not None else None
    name = str(name_t) if name_t is not None else role
    return ir.ModelDecl(
        role=role, name=name, factory=factory,
        checkpoint=b.string(ckpt_t) if ckpt_t is not None else None,
        trainable=any(str(f.children[0]) == "trainable" for f in flags if f is not None),
        train_mode=any(str(f.children[0]) == "train_mode" for f in flags if f is not None),
        span=span, name_span=b.span(name_t if name_t is not None else role_t),
        checkpoint_span=b.span(ckpt_t) if ckpt_t is not None else None)


def _text_model(p, m: ir.ModelDecl) -> str:
    words = [_override(m) + m.role]
    if m.name != m.role:
        words.append(m.name)
    if m.factory is not None:
        words.append("= " + p.visit(m.factory))
    if m.checkpoint is not None:
        words.append("from " + literal_text(m.checkpoint))
    words += [flag for flag, on in (("trainable", m.trainable), ("train_mode", m.train_mode)) if on]
    return " ".join(words)


def _lower_record(b, t, span):
    name_t, src = t.children
    common = dict(name=str(name_t), span=span, name_span=b.span(name_t))
    if src.data == "param_source":
        return ir.RecordDecl(what="param", target=b.target(src.children[0]), **common)
    if src.data == "output_source":
        target_t, inv = src.children
        return ir.RecordDecl(what="output", target=b.target(target_t), invocation=b.invocation(inv),
                             **common)
    sel_t, target_t, inv = src.children
    selector = 0
    if sel_t is not None:
        tok = sel_t.children[0]
        selector = b.string(tok) if tok.type == "STRING" else int(tok)
    return ir.RecordDecl(what="input", target=b.target(target_t), input=selector,
                         invocation=b.invocation(inv), **common)


def record_source(p, r: ir.RecordDecl) -> str:
    """What a record reads, as written after ``record NAME =``."""
    target = p.visit(r.target)
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


def _text_record(p, r: ir.RecordDecl) -> str:
    return f"{_override(r)}record {r.name} = {record_source(p, r)}"


def _lower_deliver(b, t, span):
    ref_t, src_t, dst_t, keep_t = t.children
    cls = ir.MethodRef if ref_t.data == "method_ref" else ir.FunctionRef
    ref_tok = ref_t.children[0]
    target = cls(ref=b.ref(ref_tok, "method" if cls is ir.MethodRef else "function"),
                 span=b.span(ref_t), ref_span=b.span(ref_tok))
    return ir.DeliverDecl(target=target, source=str(src_t), dest=str(dst_t),
                          keep=int(keep_t) if keep_t is not None else None, span=span,
                          source_span=b.span(src_t), dest_span=b.span(dst_t),
                          keep_span=b.span(keep_t) if keep_t is not None else None)


def _text_deliver(p, d: ir.DeliverDecl) -> str:
    text = f"deliver output of {p.visit(d.target)} from {d.source} to {d.dest}"
    return text if d.keep is None else f"{text} keep {d.keep}"


def _lower_connector(b, t, span):
    name_t, call_t, ckpt_t, frozen_t = t.children
    return ir.ConnectorDecl(name=str(name_t), call=b.call(call_t), span=span,
                            checkpoint=b.string(ckpt_t) if ckpt_t is not None else None,
                            frozen=frozen_t is not None, name_span=b.span(name_t),
                            checkpoint_span=b.span(ckpt_t) if ckpt_t is not None else None)


def _text_connector(p, c: ir.ConnectorDecl) -> str:
    text = f"{_override(c)}connector {c.name} = {p.visit(c.call)}"
    if c.checkpoint is not None:
        text += " from " + literal_text(c.checkpoint)
    return text + " frozen" if c.frozen else text


def _lower_loss(b, t, span):
    name_t, call_t, weight_t = t.children
    weight = b.expr(weight_t) if weight_t is not None else None
    return ir.LossDecl(name=str(name_t), call=b.call(call_t), weight=weight, span=span,
                       name_span=b.span(name_t))


def _text_loss(p, loss: ir.LossDecl) -> str:
    text = f"{_override(loss)}loss {loss.name} = {p.visit(loss.call)}"
    return text if loss.weight is None else f"{text} * {p.visit(loss.weight)}"


def _lower_include(b, t, span):
    tok = t.children[0]
    return ir.IncludeDecl(path=b.string(tok), span=span, path_span=b.span(tok))


def _text_include(p, i: ir.IncludeDecl) -> str:
    return f"include {literal_text(i.path)}"


def _lower_import(b, t, span):
    tok = t.children[0]
    return ir.ImportDecl(module=b.string(tok), span=span, module_span=b.span(tok))


def _text_import(p, i: ir.ImportDecl) -> str:
    return f"import {literal_text(i.module)}"


def _lower_train(b, t, span):
    return ir.TrainDecl(span=span)  # its settings are the block's entries (lower.py)


def _text_train(p, t: ir.TrainDecl) -> str:
    return p.block([p.visit(s) for s in t.settings], block_header(t))


def _lower_stage(b, t, span):
    name_t, epochs_t, batch_t = t.children
    return ir.StageDecl(name=str(name_t), epochs=int(epochs_t) if epochs_t is not None else None,
                        batch_size=int(batch_t) if batch_t is not None else None,
                        span=span, name_span=b.span(name_t),
                        epochs_span=b.span(epochs_t) if epochs_t is not None else None,
                        batch_size_span=b.span(batch_t) if batch_t is not None else None)


def _lower_phase(b, t, span):
    name_t, repeat_t = t.children
    return ir.PhaseDecl(name=str(name_t), repeat=int(repeat_t) if repeat_t is not None else 1,
                        span=span, name_span=b.span(name_t),
                        repeat_span=b.span(repeat_t) if repeat_t is not None else None)


def _text_procedure_block(p, node) -> str:
    return p.block([p.visit(s) for s in node.statements], block_header(node))


def _lower_optimize(b, t, span):
    *targets, opt_t = t.children
    return ir.OptimizeDecl(targets=tuple(b.scope(c) for c in targets),
                           optimizer=b.call(opt_t) if opt_t is not None else None, span=span)


def _text_optimize(p, o: ir.OptimizeDecl) -> str:
    text = "optimize " + ", ".join(p.visit(t) for t in o.targets)
    return text if o.optimizer is None else f"{text} with {p.visit(o.optimizer)}"


def _lower_freeze(b, t, span):
    return ir.FreezeDecl(target=b.scope(t.children[0]), span=span)


def _text_freeze(p, f: ir.FreezeDecl) -> str:
    return f"freeze {p.visit(f.target)}"


def _lower_init(b, t, span):
    target_t, source_t = t.children
    return ir.InitDecl(target=b.target(target_t), source=b.target(source_t), span=span)


def _text_init(p, i: ir.InitDecl) -> str:
    return f"init {p.visit(i.target)} from {p.visit(i.source)}"


def _lower_input(b, t, span):
    return ir.InputDecl(value=b.expr(t.children[0]), span=span)


def _text_input(p, i: ir.InputDecl) -> str:
    return f"input = {p.visit(i.value)}"


def _lower_param(b, t, span):
    name_t, value_t, search_t = t.children
    return ir.ParamDecl(name=str(name_t), value=b.expr(value_t), span=span, name_span=b.span(name_t),
                        search=None if search_t is None else b.call(search_t))


def _text_param(p, d: ir.ParamDecl) -> str:
    search = "" if d.search is None else f" {SEARCH_WORD} {p.visit(d.search)}"
    return f"{_override(d)}param {d.name} = {p.visit(d.value)}{search}"


def _check_param(v, d: ir.ParamDecl, use) -> ir.ParamDecl:
    from kdsl.lang.search_spaces import check_search

    ok, _ = try_literal(d.value)
    if not ok:
        note = given_note(d)
        v.diags.error("KD213", f"param '{d.name}' takes a literal value", d.value.span,
                      hint="a number, a string, true/false/none or a list of them (or an earlier param)",
                      notes=[] if note is None else [Note(message=f"param '{d.name}' declared", span=d.name_span)])
    else:
        check_search(d, v.diags)
    return d


def given_note(decl: ir.ParamDecl) -> Optional[Note]:
    """The note that points at where a param's value was given, when it came from outside."""
    if decl.given is None:
        return None
    return Note(message=f"its value given by {decl.given}", span=decl.value.span)


class ParamSubstitution:
    """Puts each param's value where its name is used (before the other checks, so that a param
    stands wherever a literal may). ``declared``: param name -> (position, declaration) of every
    param of the spec; a use above its declaration is reported (KD204)."""

    def __init__(self, declared: Dict[str, Tuple[int, ir.ParamDecl]], diags) -> None:
        self.declared, self.diags = declared, diags
        self.values: Dict[str, ir.Node] = {}  # the values of the params substituted so far
        self.uses: Dict[Any, ir.ParamDecl] = {}  # span of a use -> the param whose value it holds

    def statement(self, stmt: ir.Node, position: int) -> ir.Node:
        new = self._node(stmt, position)
        if isinstance(new, ir.ParamDecl):
            self.values[new.name] = new.value
        return new

    def _node(self, node: ir.Node, position: int) -> ir.Node:
        if isinstance(node, ir.Name) and node.name in self.declared:
            return self._use(node, position)
        updates = {}
        for field in type(node).model_fields:
            if field in ir.META_FIELDS:
                continue
            value = getattr(node, field)
            if isinstance(value, ir.Node):
                new = self._node(value, position)
            elif isinstance(value, tuple) and any(isinstance(v, ir.Node) for v in value):
                new = tuple(self._node(v, position) if isinstance(v, ir.Node) else v for v in value)
                new = value if all(a is b for a, b in zip(new, value)) else new
            else:
                continue
            if new is not value:
                updates[field] = new
        return node.model_copy(update=updates) if updates else node

    def _use(self, name: ir.Name, position: int) -> ir.Node:
        at, decl = self.declared[name.name]
        if at > position:
            self.diags.error("KD204", f"param '{name.name}' is used before its declaration", name.span,
                             notes=[Note(message=f"'{name.name}' declared", span=decl.name_span)])
        value = self.values.get(name.name, decl.value)
        if name.span is not None:
            self.uses[name.span] = decl
        return value.model_copy(update={"span": name.span})  # errors point at the use

    def point_at_params(self, diags, since: int) -> None:
        """Give each diagnostic found at a use (from ``diags.kept[since]`` on) a note that
        points at the param whose value it is."""
        for i in range(since, len(diags.kept)):
            found = diags.kept[i]
            decl = self.uses.get(found.span)
            if decl is not None and found.code != "KD204":
                note = Note(message=f"the value of param '{decl.name}' declared", span=decl.name_span)
                given = given_note(decl)  # a value from --set or params=: where it was given too
                notes = found.notes + (note,) + (() if given is None else (given,))
                diags.kept[i] = found.model_copy(update={"notes": notes})


TRAIN_OPEN, BLOCK_CLOSE = "train {", "}"


def block_header(node) -> str:
    """The opening line of a block: ``train {``, ``stage NAME [epochs N] [batch_size B] {``,
    ``phase NAME [repeat N] {`` (``repeat 1``, the default, is not written)."""
    if isinstance(node, ir.StageDecl):
        return (f"stage {node.name}" + ("" if node.epochs is None else f" epochs {node.epochs}")
                + ("" if node.batch_size is None else f" batch_size {node.batch_size}") + " {")
    if isinstance(node, ir.PhaseDecl):
        return f"phase {node.name}" + ("" if node.repeat == 1 else f" repeat {node.repeat}") + " {"
    return TRAIN_OPEN


# ------------------------------------------------------------------------------ the table
_IN_BLOCKS = ("stage", "phase")

_check = verifier_method

STATEMENTS: Dict[str, StatementKind] = {e.kind: e for e in (
    StatementKind("model", ir.ModelDecl, ("student", "teacher", "generator"), "model_stmt", "a model",
                  _lower_model, _text_model, _check("_verify_model"), declares="model"),
    StatementKind("record", ir.RecordDecl, ("record",), "record_stmt", "a record",
                  _lower_record, _text_record, _check("_verify_record"), declares="record",
                  aligned=True),
    StatementKind("deliver", ir.DeliverDecl, ("deliver",), "deliver_stmt", "a delivery",
                  _lower_deliver, _text_deliver, _check("_verify_deliver")),
    StatementKind("connector", ir.ConnectorDecl, ("connector",), "connector_stmt", "a connector",
                  _lower_connector, _text_connector, _check("_verify_connector"), declares="connector",
                  aligned=True),
    StatementKind("loss", ir.LossDecl, ("loss",), "loss_stmt", "a loss",
                  _lower_loss, _text_loss, _check("_verify_loss"), declares="loss", inside=_IN_BLOCKS,
                  aligned=True),
    StatementKind("train", ir.TrainDecl, ("train",), "train_open", "a train block",
                  _lower_train, _text_train, _check("_verify_train"), block=True),
    StatementKind("stage", ir.StageDecl, ("stage",), "stage_open", "a stage",
                  _lower_stage, _text_procedure_block, _check("_verify_stage"), block=True,
                  holds_statements=True),
    StatementKind("phase", ir.PhaseDecl, ("phase",), "phase_open", "a phase",
                  _lower_phase, _text_procedure_block, _check("_verify_phase"), inside=("stage",),
                  block=True, holds_statements=True),
    StatementKind("optimize", ir.OptimizeDecl, ("optimize",), "optimize_stmt", "'optimize'",
                  _lower_optimize, _text_optimize, _check("_verify_optimize"), inside=_IN_BLOCKS),
    StatementKind("freeze", ir.FreezeDecl, ("freeze",), "freeze_stmt", "'freeze'",
                  _lower_freeze, _text_freeze, _check("_verify_freeze"), inside=_IN_BLOCKS),
    StatementKind("init", ir.InitDecl, ("init",), "init_stmt", "'init'",
                  _lower_init, _text_init, _check("_verify_init")),
    StatementKind("input", ir.InputDecl, ("input",), "input_stmt", "'input'",
                  _lower_input, _text_input, _check("_verify_input")),
    StatementKind("generate", ir.GenerateDecl, ("generate",), "generate_stmt", "'generate'",
                  generation.lower, generation.text, generation.check),
    StatementKind("param", ir.ParamDecl, ("param",), "param_stmt", "a param",
                  _lower_param, _text_param, _check_param, declares="param", aligned=True),
    StatementKind("include", ir.IncludeDecl, ("include",), "include_stmt", "an include",
                  _lower_include, _text_include, _check("_verify_include")),
    StatementKind("import", ir.ImportDecl, ("import",), "import_stmt", "an import",
                  _lower_import, _text_import, _check("_verify_import")),
)}

# ``override`` prefixes a declaration (grammar: override_stmt) and replaces it.
OVERRIDE = "override"
BY_RULE: Dict[str, StatementKind] = {e.rule: e for e in STATEMENTS.values()}
BY_NODE: Dict[type, StatementKind] = {e.node: e for e in STATEMENTS.values()}

# Derived views, for the passes that select by them.
STATEMENT_KEYWORDS: Tuple[str, ...] = tuple(w for e in STATEMENTS.values() for w in e.keywords) + (OVERRIDE,)
BLOCK_KEYWORDS: Tuple[str, ...] = tuple(e.kind for e in STATEMENTS.values() if e.block)
BLOCK_CONTENTS: Dict[str, Tuple[str, ...]] = {
    block: tuple(w for e in STATEMENTS.values() if block in e.inside for w in e.keywords)
    for block in BLOCK_KEYWORDS}
INSIDE: Dict[str, Tuple[type, ...]] = {
    block: tuple(e.node for e in STATEMENTS.values() if block in e.inside)
    for block in BLOCK_KEYWORDS if STATEMENTS[block].holds_statements}
NAMED: Tuple[type, ...] = tuple(e.node for e in STATEMENTS.values() if e.declares)
PROCEDURE_BLOCKS: Tuple[type, ...] = tuple(e.node for e in STATEMENTS.values() if e.holds_statements)
ALIGNED: Tuple[type, ...] = tuple(e.node for e in STATEMENTS.values() if e.aligned)
KIND_WORD: Dict[type, str] = {e.node: e.declares for e in STATEMENTS.values() if e.declares}


# ------------------------------------------------------------------------------ recorder kinds
@dataclass(frozen=True)
class RecorderKind:
    """One kind of ``record``: what it reads (``what``) of which kind of target (``target``: the
    record target node's kind). ``during_pass``: it listens to a model's pass (a ``param`` record
    reads a tensor of the model directly, so the pass need not run for it). The compiler installs
    each kind with the installer of the same name (``INSTALLERS`` in kdsl/compiler/install.py)."""

    name: str
    what: str
    target: str
    example: str
    during_pass: bool = True


RECORDER_KINDS: Dict[str, RecorderKind] = {k.name: k for k in (
    RecorderKind("module output", "output", "module", "output of student.layer1"),
    RecorderKind("module input", "input", "module", 'input "mask" of student.head'),
    RecorderKind("param", "param", "module", "param student.fc.weight", during_pass=False),
    RecorderKind("method output", "output", "method", 'output of method "pkg.heads:Head.assign" in student'),
    RecorderKind("method input", "input", "method", 'input 1 of method "pkg.heads:Head.assign" in student'),
    RecorderKind("function output", "output", "function", 'output of function "pkg.ops:resize" in student'),
    RecorderKind("function input", "input", "function", 'input "size" of function "pkg.ops:resize" in student'),
)}
_RECORDER_BY_FORM = {(k.what, k.target): k for k in RECORDER_KINDS.values()}


def recorder_kind(record: ir.RecordDecl) -> RecorderKind:
    """The kind of a record; raises on a form the table does not know."""
    found = _RECORDER_BY_FORM.get((record.what, record.target.kind))
    if found is None:
        raise UnhandledStatement(f"no recorder kind records {record.what} of a {record.target.kind}")
    return found


def statement_kind(node: Any) -> StatementKind:
    """The table entry of a statement node; raises on a node the table does not know."""
    entry = BY_NODE.get(type(node))
    if entry is None:
        raise UnhandledStatement(f"no statement table entry for {type(node).__name__}")
    return entry


def is_statement(node: Any) -> bool:
    return type(node) in BY_NODE


def walk_statements(statements) -> Iterator[ir.Node]:
    """Every statement, those inside stages and phases included, in source order."""
    for s in statements:
        yield s
        if isinstance(s, PROCEDURE_BLOCKS):
            yield from walk_statements(s.statements)
