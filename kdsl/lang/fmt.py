"""``kdsl fmt``: a spec file in its canonical layout, comments kept.

The layout, statement by statement, is the printer's (:mod:`kdsl.lang.printer`): one statement per
line in canonical spacing, calls on one line, the entries of a block (``train { }``, ``stage``,
``phase``) one per line and indented two spaces per level. Around the statements:

- comments stay with their statement: a comment line above it stays above it, a trailing
  ``# ...`` stays at the end of its line; a statement that spanned several lines with comments
  inside keeps them where they were: the call (or list) holding them is printed one argument per
  line, indented two levels, with a trailing comma, each comment after the argument it followed
  (a comment on a line of its own above the argument it preceded). Only where no one call holds
  them all do they move above the statement (printed on one line);
- blank lines between statements are kept, at most one in a row, none at the start or end of
  the file, nor just inside a block's braces;
- in a run of ``record``, ``connector`` or ``loss`` statements on consecutive lines (at the same
  depth), the ``=``
  signs line up (as ``loss kd   = ...`` above ``loss task = ...``), and trailing comments on
  consecutive lines start in one column, two spaces after the longest statement;
- numbers keep the spelling they were written with (``5e-4`` stays ``5e-4``).

The formatter works on one file (an ``include`` is a statement, not spliced in). A file with
syntax errors is not formatted: its diagnostics are returned instead. Formatting never changes
meaning: the formatted text is lowered again and must give the same statements, or
:class:`FormatError` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from kdsl.core.diagnostics import Diagnostic, Diagnostics, sorted_diagnostics
from kdsl.core.span import SourceText
from kdsl.lang import ir
from kdsl.lang.lower import Lowered, lower_file
from kdsl.lang.parser import Block, comments
from kdsl.lang.printer import (BLOCK_CLOSE, INDENT, Spelling, StatementPrinter, block_header,
                               statement_text)
from kdsl.lang.statements import ALIGNED
from kdsl.lang.visit import walk

COMMENT_GAP = "  "  # between a statement and its trailing comment
_ALIGNED = ALIGNED  # ``KEYWORD NAME = ...`` statements


class FormatError(Exception):
    """Formatting would have changed what a file means: a bug in the formatter, never the file's."""


@dataclass
class Formatted:
    """The result of formatting one file's text."""

    name: str
    original: str
    text: Optional[str]  # None when the file has syntax errors
    diagnostics: List[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.text is not None

    @property
    def changed(self) -> bool:
        return self.text is not None and self.text != self.original

    @property
    def sources(self) -> Dict[str, str]:
        return {self.name: self.original}


def lowered_statements(text: str, name: str = "<string>") -> Tuple[List[ir.Node], List[Diagnostic]]:
    """A file's statements, parsed and lowered but not verified (includes not spliced), and the
    syntax diagnostics found on the way."""
    diags = Diagnostics({name: text})
    pieces = lower_file(SourceText(name, text), diags)
    return [p.node for p in pieces if p.node is not None], sorted_diagnostics(diags.items)


def format_text(text: str, name: str = "<string>") -> Formatted:
    """``text`` in canonical layout, or its syntax diagnostics when it has errors."""
    source = SourceText(name, text)
    diags = Diagnostics({name: text})
    pieces = lower_file(source, diags)
    found = sorted_diagnostics(diags.items)
    if diags.has_errors:
        return Formatted(name, text, None, found)
    spelling = _spelling(source)
    blocks = _attach_comments(source, _code_items(pieces, spelling))
    formatted = _render(_lay_out(source, blocks, spelling))
    before = [p.node for p in pieces if p.node is not None]
    after, problems = lowered_statements(formatted, name)
    if problems or after != before:
        raise FormatError(f"formatting {name} would change its meaning")
    return Formatted(name, text, formatted, found)


# ------------------------------------------------------------------------------ what the file holds
@dataclass
class _Code:
    """A statement, a train block's opening or closing line, or one of its settings."""

    start: int
    end: int
    text: str
    depth: int = 0
    role: str = "statement"  # or "open", "setting", "close"
    align: Optional[Tuple[str, bool]] = None  # neighbours with the same key line up their '='
    inner: List["_Comment"] = field(default_factory=list)  # comments from inside the statement
    trailing: Optional[str] = None
    node: Optional[ir.Node] = None  # the statement or setting printed


@dataclass
class _Comment:
    """A comment on a line of its own."""

    start: int
    end: int
    text: str


_Block = Union[_Code, _Comment]


def _spelling(source: SourceText) -> Spelling:
    def spelt(const: ir.Const) -> Optional[str]:
        span = const.span
        if span is None or span.line != span.end_line:
            return None
        written = source.line(span.line)[span.column - 1: span.end_column - 1]
        return "".join(written.split()) or None  # "- 1" is written "-1"

    return spelt


def _code_items(pieces: List[Lowered], spelling: Spelling, depth: int = 0) -> List[_Code]:
    items: List[_Code] = []
    for lowered in pieces:
        piece, node = lowered.piece, lowered.node
        if not isinstance(piece, Block):
            align = (node.kind, node.override, depth) if isinstance(node, _ALIGNED) else None
            items.append(_Code(piece.start, piece.end, statement_text(node, spelling), depth=depth,
                               role="setting" if piece.rule == "train_entry" else "statement",
                               align=align, node=node))
            continue
        items.append(_Code(piece.header.start, piece.header.end, block_header(node), depth=depth,
                           role="open"))
        items += _code_items(list(lowered.children), spelling, depth + 1)
        at = piece.close_offset
        items.append(_Code(at, at + 1, BLOCK_CLOSE, depth=depth, role="close"))
    return items


def _attach_comments(source: SourceText, items: List[_Code]) -> List[_Block]:
    """Code and comment lines in file order; a comment after code on its line becomes that
    code's trailing comment, and one inside a statement goes with it (see :func:`_spread`)."""
    found = [_Comment(start, end, source.text[start:end].rstrip()) for start, end in comments(source.text)]
    merged = sorted(items + found, key=lambda b: b.start)
    out: List[_Block] = []
    last: Optional[_Code] = None
    for block in merged:
        if isinstance(block, _Code):
            last = block
            out.append(block)
        elif last is not None and block.start < last.end:
            last.inner.append(block)
        elif last is not None and source.position(block.start)[0] == _last_line(source, last):
            last.trailing = block.text
        else:
            out.append(block)
    return out


def _last_line(source: SourceText, block: _Block) -> int:
    return source.position(max(block.start, block.end - 1))[0]


# ------------------------------------------------------------------------------ layout
@dataclass
class _Line:
    depth: int = 0
    code: Optional[str] = None
    comment: Optional[str] = None
    align: Optional[Tuple[str, bool]] = None


def _lay_out(source: SourceText, blocks: List[_Block], spelling: Spelling) -> List[_Line]:
    lines: List[_Line] = []
    depth = 0  # of a comment line: inside the innermost open block
    previous: Optional[_Block] = None
    for block in blocks:
        is_code = isinstance(block, _Code)
        if previous is not None and not (isinstance(previous, _Code) and previous.role == "open") \
                and not (is_code and block.role == "close") \
                and source.position(block.start)[0] > _last_line(source, previous) + 1:
            lines.append(_Line())  # the blank lines between two statements, as one
        if is_code:
            lines += _code_lines(source, block, spelling)
            depth = block.depth + 1 if block.role == "open" else block.depth
        else:
            lines.append(_Line(depth, comment=block.text))
        previous = block
    _align_equals(lines)
    return lines


def _code_lines(source: SourceText, code: _Code, spelling: Spelling) -> List[_Line]:
    """The lines of one statement: one, or several where comments inside it keep their place."""
    if code.inner:
        spread = _spread(source, code, spelling)
        if spread is not None:
            return spread
    above = [_Line(code.depth, comment=c.text) for c in code.inner]  # no one call holds them
    return above + [_Line(code.depth, code.text, code.trailing, code.align)]


def _parts(holder: ir.Node) -> Tuple[str, List[ir.Node], str]:
    """A call's, a factory's or a list's opening, the nodes between its brackets, its closing."""
    if isinstance(holder, ir.ListExpr):
        return "[", list(holder.items), "]"
    if isinstance(holder, ir.Factory):
        ref = ir.Const(value=holder.ref, span=holder.ref_span)
        return "model(", [ref, *holder.args, *holder.kwargs], ")"
    func = holder.func if holder.method is None else f"{holder.func}.{holder.method}"
    return func + "(", [*holder.args, *holder.kwargs], ")"


def _holder(node: ir.Node, places: List[Tuple[int, int]]) -> Optional[ir.Node]:
    """The outermost call, factory or list of ``node`` whose brackets hold every place."""
    for found in walk(node):
        span = found.span
        if isinstance(found, (ir.Call, ir.Factory, ir.ListExpr)) and span is not None and all(
                (span.line, span.column) <= at < (span.end_line, span.end_column) for at in places):
            return found
    return None


def _spread(source: SourceText, code: _Code, spelling: Spelling) -> Optional[List[_Line]]:
    """``code`` with the call holding its inner comments printed one argument per line and
    each comment where it was: after the argument ending on its line (on the opening line when
    none does), or, on a line of its own, above the argument it preceded. None where no call
    holds them all or the call cannot be found in the printed statement."""
    places = [source.position(c.start) for c in code.inner]
    holder = _holder(code.node, places)
    if holder is None:
        return None
    printer = StatementPrinter(spelling)
    whole = printer.visit(holder)
    if code.text.count(whole) != 1:
        return None
    before, after = code.text.split(whole)
    opening, parts, closing = _parts(holder)
    trailing: Dict[int, List[str]] = {}  # part index (-1: the opening line) -> comments after it
    above: Dict[int, List[str]] = {}  # part index (len(parts): the closing line) -> comment lines
    for comment, (line, column) in zip(code.inner, places):
        if not source.line(line)[:column - 1].strip():
            at = next((i for i, p in enumerate(parts) if p.span is not None
                       and (p.span.line, p.span.column) > (line, column)), len(parts))
            above.setdefault(at, []).append(comment.text)
            continue
        ends = [i for i, p in enumerate(parts) if p.span is not None and p.span.end_line == line]
        holds = [i for i, p in enumerate(parts) if p.span is not None
                 and p.span.line <= line <= p.span.end_line]
        trailing.setdefault((ends or holds or [-1])[-1], []).append(comment.text)
    inner = code.depth + 2
    lines = [_Line(code.depth, before + opening, _joined(trailing.get(-1)), code.align)]
    for i, part in enumerate(parts):
        lines += [_Line(inner, comment=text) for text in above.get(i, [])]
        lines.append(_Line(inner, printer.visit(part) + ",", _joined(trailing.get(i))))
    lines += [_Line(inner, comment=text) for text in above.get(len(parts), [])]
    return lines + [_Line(code.depth, closing + after, code.trailing)]


def _joined(comments: Optional[List[str]]) -> Optional[str]:
    return COMMENT_GAP.join(comments) if comments else None


def _runs(lines: List[_Line], key) -> List[List[_Line]]:
    """Maximal runs of consecutive lines with the same key (None breaks a run)."""
    runs: List[List[_Line]] = []
    current_key = None
    for line in lines:
        k = key(line)
        if k is not None and k == current_key:
            runs[-1].append(line)
        elif k is not None:
            runs.append([line])
        current_key = k
    return runs


def _align_equals(lines: List[_Line]) -> None:
    for run in _runs(lines, lambda line: line.align if line.code is not None else None):
        heads = [line.code.partition(" = ") for line in run]
        width = max(len(head) for head, _, _ in heads)
        for line, (head, eq, rest) in zip(run, heads):
            line.code = head.ljust(width) + eq + rest


def _render(lines: List[_Line]) -> str:
    for run in _runs(lines, lambda line: True if line.code is not None and line.comment else None):
        width = max(len(INDENT * line.depth + line.code) for line in run)
        for line in run:
            line.code = line.code.ljust(width - len(INDENT * line.depth))
    out = []
    for line in lines:
        text = INDENT * line.depth
        if line.code is not None:
            text += line.code + (COMMENT_GAP + line.comment if line.comment else "")
        elif line.comment is not None:
            text += line.comment
        out.append(text.rstrip())
    return "\n".join(out) + "\n" if out else ""
