"""``kdsl fmt``: a spec file in its canonical layout, comments kept.

The layout, statement by statement, is the printer's (:mod:`kdsl.lang.printer`): one statement per
line in canonical spacing, calls on one line, the entries of a block (``train { }``, ``stage``,
``phase``) one per line and indented two spaces per level. Around the statements:

- comments stay with their statement: a comment line above it stays above it, a trailing
  ``# ...`` stays at the end of its line; a comment inside a statement that spanned several
  lines moves above the statement (the statement is printed on one line);
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
from kdsl.lang.printer import BLOCK_CLOSE, INDENT, Spelling, block_header, statement_text
from kdsl.lang.statements import ALIGNED

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
    blocks = _attach_comments(source, _code_items(pieces, _spelling(source)))
    formatted = _render(_lay_out(source, blocks))
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
    inner: List[str] = field(default_factory=list)  # comments from inside the statement
    trailing: Optional[str] = None


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
                               align=align))
            continue
        items.append(_Code(piece.header.start, piece.header.end, block_header(node), depth=depth,
                           role="open"))
        items += _code_items(list(lowered.children), spelling, depth + 1)
        at = piece.close_offset
        items.append(_Code(at, at + 1, BLOCK_CLOSE, depth=depth, role="close"))
    return items


def _attach_comments(source: SourceText, items: List[_Code]) -> List[_Block]:
    """Code and comment lines in file order; a comment after code on its line becomes that
    code's trailing comment, and one inside a statement moves above it."""
    found = [_Comment(start, end, source.text[start:end].rstrip()) for start, end in comments(source.text)]
    merged = sorted(items + found, key=lambda b: b.start)
    out: List[_Block] = []
    last: Optional[_Code] = None
    for block in merged:
        if isinstance(block, _Code):
            last = block
            out.append(block)
        elif last is not None and block.start < last.end:
            last.inner.append(block.text)
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


def _lay_out(source: SourceText, blocks: List[_Block]) -> List[_Line]:
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
            lines += [_Line(block.depth, comment=c) for c in block.inner]
            lines.append(_Line(block.depth, block.text, block.trailing, block.align))
            depth = block.depth + 1 if block.role == "open" else block.depth
        else:
            lines.append(_Line(depth, comment=block.text))
        previous = block
    _align_equals(lines)
    return lines


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
