"""Parse trees -> IR nodes (syntactic forms; names are resolved later by the verifier)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from kdsl.lang import ir
from kdsl.core.diagnostics import Diagnostics
from kdsl.lang.parser import Chunk, Piece, Positions, cut, parse_chunk
from kdsl.lang.statements import (BY_RULE, INSIDE, OVERRIDE, STATEMENTS, UnhandledStatement,
                                   statement_kind)
from kdsl.core.span import SourceText, Span

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
from kdsl.core.resolve import REF_PATTERN, refusal  # noqa: E402 - one definition of a reference


class Builder:
    def __init__(self, pos: Positions, diags: Diagnostics) -> None:
        self.pos = pos
        self.diags = diags

    # ---------------------------------------------------------------- helpers
    def span(self, node) -> Optional[Span]:
        from lark import Token

        if isinstance(node, Token):
            return self.pos.of_token(node)
        return self.pos.of_meta(node.meta)

    def string(self, tok) -> str:
        raw = tok.value[1:-1]
        out, i = [], 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                nxt = raw[i + 1] if i + 1 < len(raw) else ""
                if nxt in _ESCAPES:
                    out.append(_ESCAPES[nxt])
                else:
                    s = self.pos.of_token(tok)
                    col = s.column + 1 + i
                    self.diags.error("KD105", f"invalid escape '\\{nxt}' in a string",
                                     Span(file=s.file, line=s.line, column=col, end_line=s.line,
                                          end_column=col + 2),
                                     hint='write "\\\\" for a backslash')
                    out.append(nxt)
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)

    # ---------------------------------------------------------------- expressions
    def expr(self, t) -> ir.Node:
        """The IR of an expression's parse tree: one ``expr_<rule>`` method per grammar rule."""
        from lark import Token

        if isinstance(t, Token):  # a bare STRING reaches here through ?key
            return ir.Const(value=self.string(t), span=self.span(t))
        method = getattr(self, "expr_" + t.data, None)
        if method is None:  # grammar and builder disagree
            raise AssertionError(f"unhandled expression {t.data}")
        return method(t, self.span(t))

    def expr_name(self, t, span):
        return ir.Name(name=str(t.children[0]), span=span)

    def expr_number(self, t, span):
        return ir.Const(value=self.number(t), span=span)

    def expr_string(self, t, span):
        return ir.Const(value=self.string(t.children[0]), span=span)

    def expr_true(self, t, span):
        return ir.Const(value=True, span=span)

    def expr_false(self, t, span):
        return ir.Const(value=False, span=span)

    def expr_none(self, t, span):
        return ir.Const(value=None, span=span)

    def expr_list(self, t, span):
        return ir.ListExpr(items=tuple(self.expr(c) for c in t.children if c is not None), span=span)

    def expr_attr(self, t, span):  # also ``x.0``: an index in a module path
        return ir.Attr(value=self.expr(t.children[0]), attr=str(t.children[1]), span=span)

    expr_path_index = expr_attr

    def expr_item(self, t, span):
        from lark import Token

        key = t.children[1]
        keyval = self.string(key) if isinstance(key, Token) else self.signed_int(key)
        return ir.Item(value=self.expr(t.children[0]), key=keyval, span=span)

    def expr_call(self, t, span):
        args, kwargs = self.arguments(t.children[1])
        return ir.Call(func=str(t.children[0]), args=args, kwargs=kwargs, span=span,
                       func_span=self.span(t.children[0]))

    def expr_method_call(self, t, span):
        """``para.encode(x)``: only a declared connector's methods can be applied, so the value
        before the dot must be a bare name."""
        value_t, method_t, args_t = t.children
        args, kwargs = self.arguments(args_t)
        if getattr(value_t, "data", None) != "name":
            self.diags.error("KD213", f"'.{method_t}(...)' applies a method, and only a declared "
                             "connector has methods", self.span(method_t),
                             hint="write CONNECTOR.METHOD(...), e.g. para.encode(t_feat)")
            return self.expr(value_t)  # reported; the value alone keeps later checks quiet
        name_t = value_t.children[0]
        return ir.Call(func=str(name_t), method=str(method_t), args=args, kwargs=kwargs, span=span,
                       func_span=self.span(name_t), method_span=self.span(method_t))

    def number(self, t):
        sign, tok = t.children
        value = int(tok) if tok.type == "INT" else float(tok)
        return -value if sign is not None else value

    def signed_int(self, t) -> int:
        sign, tok = t.children
        return -int(tok) if sign is not None else int(tok)

    def arguments(self, t) -> Tuple[tuple, tuple]:
        if t is None:
            return (), ()
        args: List[ir.Node] = []
        kwargs: List[ir.Keyword] = []
        reported = False
        for c in t.children:
            if c is None:
                continue
            if getattr(c, "data", None) == "keyword":
                kwargs.append(ir.Keyword(name=str(c.children[0]), value=self.expr(c.children[1]),
                                         span=self.span(c)))
            else:
                if kwargs and not reported:
                    reported = True
                    self.diags.error("KD103", "a positional argument cannot follow a keyword argument",
                                     self.span(c), hint="move it before the keyword arguments")
                args.append(self.expr(c))
        return tuple(args), tuple(kwargs)

    def call(self, t) -> ir.Call:
        return self.expr(t)  # type: ignore[return-value]

    def ref(self, tok, what: str) -> str:
        value = self.string(tok)
        if not REF_PATTERN.match(value):
            example = {"method": '"pkg.module:Class.method"', "function": '"pkg.module:function"',
                       "model": '"pkg.module:factory"'}[what]
            self.diags.error("KD405", f"malformed {what} reference \"{value}\"", self.span(tok),
                             hint=f"write it as {example}")
        elif what == "method" and "." not in value.partition(":")[2]:
            self.diags.error("KD405", f"a method reference names a class and a method, got \"{value}\"",
                             self.span(tok), hint='write it as "pkg.module:Class.method"')
        elif refused := refusal(value, what, self.span(tok)):
            self.diags.add(refused)
        return value

    # ---------------------------------------------------------------- statements
    def statement(self, t) -> Optional[ir.Node]:
        """A statement's IR, lowered by its entry in the statement table."""
        inner = t.children[0]
        span = self.span(t)
        if inner.data == "override_stmt":
            inner = inner.children[0]
            node = self._lower(inner, span)
            return node.model_copy(update={"override": True}) if node is not None else None
        return self._lower(inner, span)

    def _lower(self, t, span) -> Optional[ir.Node]:
        entry = BY_RULE.get(t.data)
        if entry is None:  # grammar and statement table disagree
            raise UnhandledStatement(f"no statement table entry lowers the rule {t.data}")
        return entry.lower(self, t, span)

    # ---------------------------------------------------------------- parts of statements
    def factory(self, t) -> Optional[ir.Factory]:
        """``model("pkg.module:factory", k=v)``; None (reported) without a valid reference."""
        args, kwargs = self.arguments(t.children[0])
        if not args or not (isinstance(args[0], ir.Const) and isinstance(args[0].value, str)):
            self.diags.error("KD405", "model(...) takes the factory reference as its first argument",
                             self.span(t), hint='write model("pkg.module:factory", option=value)')
            return None
        ref = args[0].value
        if not REF_PATTERN.match(ref):
            self.diags.error("KD405", f"malformed model reference \"{ref}\"", args[0].span,
                             hint='write it as "pkg.module:factory"')
        elif refused := refusal(ref, "model", args[0].span):
            self.diags.add(refused)
        return ir.Factory(ref=ref, args=args[1:], kwargs=kwargs, span=self.span(t), ref_span=args[0].span)

    def target(self, t):
        if t.data == "module_path":
            parts = [str(p) for p in t.children]
            return ir.ModulePath(model=parts[0], path=tuple(parts[1:]), span=self.span(t),
                                 model_span=self.span(t.children[0]))
        cls = ir.MethodRef if t.data == "method_target" else ir.FunctionRef
        ref_t, model_t = t.children
        return cls(ref=self.ref(ref_t, "method" if cls is ir.MethodRef else "function"),
                   model=str(model_t), span=self.span(t), ref_span=self.span(ref_t),
                   model_span=self.span(model_t))

    def invocation(self, t):
        if t is None:
            return 0
        return "all" if t.data == "all_calls" else int(t.children[0])

    def scope(self, t) -> ir.ParamScope:
        """A target of ``optimize``/``freeze``; the verifier settles what it names."""
        parts = [str(p) for p in t.children]
        return ir.ParamScope(name=parts[0], path=tuple(parts[1:]), span=self.span(t))

    def train_entry(self, t) -> ir.TrainSetting:
        key_t, value_t = t.children
        return ir.TrainSetting(key=str(key_t), value=self.expr(value_t), span=self.span(t),
                               key_span=self.span(key_t))


_MODEL_WORDS = STATEMENTS["model"].keywords
_NAME_WORDS = tuple(w for e in STATEMENTS.values() if e.declares and e.kind != "model" for w in e.keywords)
_DECLARES = re.compile(rf"^\s*(?:{OVERRIDE}\s+)?(?:({'|'.join(_NAME_WORDS)})\s+([A-Za-z_]\w*)"
                       rf"|({'|'.join(_MODEL_WORDS)})(?:\s+([A-Za-z_]\w*))?)")


def declared_by(text: str) -> Optional[Tuple[str, str]]:
    """(kind, name) a statement that failed to parse seems to declare, so that its later uses
    are not reported again as unknown names."""
    m = _DECLARES.match(text)
    if not m:
        return None
    if m.group(1):
        return m.group(1), m.group(2)
    name = m.group(4) if m.group(4) not in (None, "from", "trainable") else m.group(3)
    return m.group(3), name


@dataclass
class Lowered:
    """One piece of a file and what it lowered to (``node`` is None where it had a syntax
    error); for a block, ``children`` holds one entry per line inside it (train settings,
    statements, nested phase blocks), in order."""

    piece: Piece
    node: Optional[ir.Node]
    children: Tuple["Lowered", ...] = ()


class _FileLowering:
    """Lowers the pieces of one file (see :func:`lower_file`)."""

    def __init__(self, source: SourceText, diags: Diagnostics,
                 broken: Optional[List[Tuple[str, str]]]) -> None:
        self.source, self.diags, self.broken = source, diags, broken

    def failed(self, chunk: Chunk) -> None:
        if self.broken is not None:
            found = declared_by(self.source.text[chunk.start:chunk.end])
            if found:
                self.broken.append(found)

    def build(self, chunk: Chunk, method: str):
        if chunk.broken:
            self.failed(chunk)
            return None
        tree, pos = parse_chunk(self.source, chunk, self.diags)
        if tree is None:
            self.failed(chunk)
            return None
        try:
            return getattr(Builder(pos, self.diags), method)(tree)
        except UnhandledStatement:
            raise  # kdsl's own tables disagree: a bug to see, not the user's input
        except Exception as exc:  # noqa: BLE001 - report, never crash on odd input
            self.diags.error("KD103", f"cannot read this statement ({exc})",
                             self.source.span(chunk.start, chunk.end))
            return None

    def piece(self, piece: Piece) -> Lowered:
        if isinstance(piece, Chunk):
            return Lowered(piece, self.build(piece, piece.rule if piece.rule == "train_entry"
                                             else "statement"))
        header = self.build(piece.header, "statement")
        children = tuple(self.piece(p) for p in piece.entries)
        end = piece.close_offset + 1 if piece.close_offset is not None else piece.header.end
        span = self.source.span(piece.header.start, end)
        if header is None:
            return Lowered(piece, None, children)
        if isinstance(header, ir.TrainDecl):
            settings = tuple(c.node for c in children if c.node is not None)
            return Lowered(piece, ir.TrainDecl(settings=settings, span=span), children)
        inside = tuple(c.node for c in children if self.allowed(header, c.node))
        return Lowered(piece, header.model_copy(update={"statements": inside, "span": span}), children)

    def allowed(self, block, node) -> bool:
        """Whether ``node`` may stand inside ``block``; reports it when not."""
        if node is None:
            return False
        where = f"{block.kind} '{block.name}'"
        if getattr(node, "override", False):
            self.diags.error("KD216", f"'override' inside {where}", node.span,
                             hint="override replaces a top-level declaration; write it outside any "
                             "stage or phase")
            return False
        if isinstance(node, INSIDE[block.kind]):
            return True
        what = statement_kind(node).word
        hint = "declare it at the top level, where it holds in every stage and phase"
        if isinstance(node, ir.StageDecl):
            hint = "stages follow one another at the top level"
        elif isinstance(node, ir.PhaseDecl):
            hint = "phases stand at the top level or directly inside a stage"
        self.diags.error("KD216", f"{what} cannot stand inside {where}", node.span, hint=hint)
        return False


def lower_file(source: SourceText, diags: Diagnostics,
               broken: Optional[List[Tuple[str, str]]] = None) -> List[Lowered]:
    """Every piece of a file (statement or block) with its IR; syntax errors go to ``diags``,
    and the names that broken statements seem to declare to ``broken``."""
    lowering = _FileLowering(source, diags, broken)
    return [lowering.piece(p) for p in cut(source, diags)]


def build_statements(source: SourceText, diags: Diagnostics,
                     broken: Optional[List[Tuple[str, str]]] = None) -> List[ir.Node]:
    """Every statement of a file as IR nodes, in order; syntax errors go to ``diags``, and the
    names that broken statements seem to declare to ``broken``."""
    return [p.node for p in lower_file(source, diags, broken) if p.node is not None]
