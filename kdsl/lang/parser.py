"""Text -> parse trees.

The text is first cut into statements: one per line, continuing inside open ``(`` and ``[``, and
blocks (``train {``, ``stage NAME [epochs N] {``, ``phase NAME [repeat N] {``) whose entries are
one per line, closed by ``}``; a stage may hold phases. Each statement is then parsed on its own
by the LALR parser, so a broken statement is reported and the next one is still checked. Bracket,
string and block problems are found by the cutter, which knows where a statement should have
ended: a missing ``)`` is reported at the end of the line that needed it, not at the start of the
next statement, and a block left open where a statement that cannot stand inside it begins in
column 1 is reported there.

Syntax errors say what was expected in the characters a user types (``')'``, not ``RPAR``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple, Union

from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.core.span import SourceText, Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang.parse_tables import grammar_path as grammar_path
from kdsl.lang.parse_tables import lark_parser as lark_parser
from kdsl.lang.statements import BLOCK_CONTENTS, BLOCK_KEYWORDS, STATEMENT_KEYWORDS

# From the statement table: the words that start a statement (inside open brackets, a line that
# starts with one of them in column 1 means the bracket above was never closed), and the blocks
# with the words of the statements that may stand inside each (a line in column 1 that starts
# another statement ends the block: its '}' was forgotten).
_CLOSERS = {"(": ")", "[": "]", "{": "}"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}
_WORD = re.compile(r"[A-Za-z_]\w*")


@dataclass
class Chunk:
    """One statement (or one train-block setting) as a range of the source text."""

    start: int
    end: int
    rule: str = "statement"
    broken: bool = False  # the cutter already reported it; do not parse


@dataclass
class Block:
    """A ``train``, ``stage`` or ``phase`` block: its header line (up to and including ``{``),
    its entries (chunks, and for a stage its phase blocks) and where its ``}`` is (None when it
    was never closed)."""

    kind: str
    header: Chunk
    open_offset: int
    entries: List["Piece"] = field(default_factory=list)
    close_offset: Optional[int] = None


Piece = Union[Chunk, Block]


# ------------------------------------------------------------------------------ cutting
_LOOKS_LIKE_STATEMENT = re.compile(r"[A-Za-z_]\w*[ \t]+[A-Za-z_]\w*[ \t]*=")


def _starts_statement(text: str, pos: int) -> bool:
    """Whether the line starting at ``pos`` begins, in column 1, with a statement keyword (or
    with ``word name =``, a statement whose keyword is misspelt)."""
    if _LOOKS_LIKE_STATEMENT.match(text, pos):
        return True
    for word in STATEMENT_KEYWORDS:
        if text.startswith(word, pos):
            after = text[pos + len(word): pos + len(word) + 1]
            if after in ("", " ", "\t", "\n", "\r", "#") or (after == "=" and word in ("student", "teacher")):
                return True
    return False


def string_end(text: str, i: int) -> int:
    """Where the string opened by the ``"`` at ``i`` ends: the offset of its closing quote, or of
    the newline (or end of text) where it was left unterminated."""
    n = len(text)
    j = i + 1
    while j < n and text[j] not in '"\n':
        j += 2 if text[j] == "\\" and j + 1 < n and text[j + 1] != "\n" else 1
    return j


def comment_end(text: str, i: int) -> int:
    """Where the comment starting with the ``#`` at ``i`` ends (its newline, or the end)."""
    j = text.find("\n", i)
    return len(text) if j < 0 else j


def comments(text: str) -> Iterator[Tuple[int, int]]:
    """(start, end) of every ``# ...`` comment, strings skipped."""
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            i = string_end(text, i) + 1
        elif text[i] == "#":
            end = comment_end(text, i)
            yield i, end
            i = end
        else:
            i += 1


# Bounds that no real spec comes near, so that checking stays fast on any input (a statement of
# 100,000 arguments took lark a minute; a deep nesting would recurse in the lowering).
MAX_STATEMENT = 64 * 1024
MAX_NESTING = 32


_SPECIAL = frozenset('#\n"()[]{} \t\r\f')
_PLAIN = re.compile(r'[^#\n"()\[\]{} \t\r\f]+')


class _Cutter:
    """One pass over a file's text, cutting it into pieces (see :func:`cut`)."""

    def __init__(self, source: SourceText, diags: Diagnostics) -> None:
        self.source, self.diags, self.text = source, diags, source.text
        self.pieces: List[Piece] = []
        self.stack: List[Tuple[str, int]] = []  # open brackets and where they opened
        self.blocks: List[Block] = []  # the blocks being read, innermost last
        self.start: Optional[int] = None  # where the current chunk starts
        self.last_end = 0  # just after the last character of the current chunk
        self.broken = False  # the current chunk has an error already reported

    # ---------------------------------------------------------------- chunks and blocks
    def _add(self, piece: Piece) -> None:
        (self.blocks[-1].entries if self.blocks else self.pieces).append(piece)

    def finish(self) -> None:
        if self.start is not None:
            in_train = bool(self.blocks) and self.blocks[-1].kind == "train"
            self._add(Chunk(self.start, self.last_end, "train_entry" if in_train else "statement",
                            self.broken))
        self.start, self.broken = None, False

    def unclosed(self) -> None:
        ch, at = self.stack[-1]
        closers = "".join(_CLOSERS[c] for c, _ in reversed(self.stack))
        line, col = self.source.position(self.last_end)
        self.diags.error("KD101", f"'{ch}' was never closed", Span.point(self.source.name, line, col),
                         hint=f"add '{closers}' at the end of this line",
                         notes=[Note(message=f"'{ch}' opened", span=self.source.span(at, at + 1))])
        self.stack.clear()
        self.broken = True

    def opens_block(self, i: int) -> Optional[str]:
        """The kind of block the ``{`` at ``i`` opens, or None when it opens none: a block's
        header is a line of its own that starts with ``train``, ``stage`` or ``phase``."""
        if self.stack or self.start is None or (self.blocks and self.blocks[-1].kind == "train"):
            return None
        header = self.text[self.start:i]
        m = _WORD.match(header)
        if m is None or m.group() not in BLOCK_KEYWORDS or "\n" in header:
            return None
        return m.group() if m.group() != "train" or header.strip() == "train" else None

    def open_block(self, i: int, kind: str) -> int:
        header = Chunk(self.start, i + 1, "statement", self.broken)
        self.blocks.append(Block(kind=kind, header=header, open_offset=i))
        self.start, self.broken = None, False
        self.last_end = i + 1
        return i + 1

    def close_block(self, at: Optional[int]) -> None:
        self.finish()
        block = self.blocks.pop()
        block.close_offset = at
        self._add(block)

    def block_never_closed(self) -> None:
        block = self.blocks[-1]
        line, col = self.source.position(self.last_end)
        at = block.open_offset
        what = "the train block" if block.kind == "train" else \
            f"the {block.kind} '{self._block_name(block)}'"
        self.diags.error("KD101", "'{' was never closed", Span.point(self.source.name, line, col),
                         hint=f"add '}}' on a line of its own to end {what}",
                         notes=[Note(message="'{' opened", span=self.source.span(at, at + 1))])
        self.close_block(None)

    def _block_name(self, block: Block) -> str:
        words = self.text[block.header.start:block.header.end].split()
        return words[1] if len(words) > 2 else "?"

    def ends_block(self, pos: int) -> bool:
        """Whether the line at ``pos`` starts, in column 1, a statement that cannot stand inside
        the innermost open block (so that block's ``}`` is missing)."""
        if not self.blocks or not _starts_statement(self.text, pos):
            return False
        kind = self.blocks[-1].kind
        if kind == "train":
            return True
        m = _WORD.match(self.text, pos)
        return m is not None and m.group() not in BLOCK_CONTENTS[kind]

    # ---------------------------------------------------------------- characters
    def newline(self, i: int) -> None:
        if self.stack and self.stack[-1][0] in "([":
            if _starts_statement(self.text, i + 1):
                self.unclosed()
                self.finish()
        elif not self.stack:
            self.finish()
            while self.ends_block(i + 1):
                self.block_never_closed()

    def string(self, i: int) -> int:
        j = string_end(self.text, i)
        if j >= len(self.text) or self.text[j] == "\n":
            self.diags.error("KD104", "unterminated string", self.source.span(i, j),
                             hint='close the string with \'"\' on the same line')
            self.broken = True
            self.last_end = j
            return j
        self.last_end = j + 1
        return j + 1

    def end_of_block(self, i: int) -> int:
        """The ``}`` at ``i`` closes the innermost block; nothing but a comment may follow it."""
        if self.start == i:
            self.start = None
        self.close_block(i)
        text, n = self.text, len(self.text)
        j = i + 1
        while j < n and text[j] in " \t\r":
            j += 1
        if j < n and text[j] not in "\n#":
            k = comment_end(text, j)
            self.diags.error("KD106", "expected the end of the line after '}'",
                             self.source.span(j, k), hint="start the next statement on a new line")
            self.last_end = k
            return k
        self.last_end = i + 1
        return i + 1

    def bracket(self, i: int, ch: str) -> int:
        if ch in "([{":
            if len(self.stack) == MAX_NESTING and not self.broken:
                self.diags.error("KD107", f"brackets nested more than {MAX_NESTING} deep",
                                 self.source.span(i, i + 1), hint="split the expression up")
                self.broken = True
            self.stack.append((ch, i))
        elif ch in ")]}":
            stack = self.stack
            if stack and stack[-1][0] == _OPENERS[ch]:
                stack.pop()
            elif ch == "}" and not stack and self.blocks:
                return self.end_of_block(i)
            else:
                what = f"'{ch}' does not match '{stack[-1][0]}'" if stack else f"unmatched '{ch}'"
                if self.diags.full:  # past the cap a problem is only counted: build no location
                    self.diags.error("KD102", what)
                else:
                    notes = [Note(message=f"'{stack[-1][0]}' opened",
                                  span=self.source.span(stack[-1][1], stack[-1][1] + 1))] if stack else []
                    self.diags.error("KD102", what, self.source.span(i, i + 1), notes=notes)
                self.broken = True
                if stack:
                    stack.pop()
        self.last_end = i + 1
        return i + 1

    def run(self) -> List[Piece]:
        text, n, i = self.text, len(self.text), 0
        while i < n:
            ch = text[i]
            if ch == "#":
                i = comment_end(text, i)
            elif ch == "\n":
                self.newline(i)
                i += 1
            elif ch in " \t\r\f":
                i += 1
            else:
                if self.start is None:
                    self.start = i
                if ch not in _SPECIAL:  # a run of ordinary characters: skip it in one step
                    i = _PLAIN.match(text, i).end()
                    self.last_end = i
                elif ch == '"':
                    i = self.string(i)
                elif ch == "{" and self.opens_block(i) is not None:
                    i = self.open_block(i, self.opens_block(i))
                else:
                    i = self.bracket(i, ch)
        if self.stack:
            self.unclosed()
        self.finish()
        while self.blocks:
            self.block_never_closed()
        return self.pieces


def cut(source: SourceText, diags: Diagnostics) -> List[Piece]:
    """The statements and blocks of a file, in order; bracket, string and block problems are
    reported here, and the chunks they affect are marked ``broken``."""
    return _Cutter(source, diags).run()


# ------------------------------------------------------------------------------ parsing
class Positions:
    """Maps lark's positions inside a chunk back to the file."""

    def __init__(self, source: SourceText, offset: int) -> None:
        self.file = source.name
        self.line0, self.col0 = source.position(offset)

    def at(self, line: int, column: int) -> Tuple[int, int]:
        return self.line0 + line - 1, (column + self.col0 - 1 if line == 1 else column)

    def span(self, line: int, column: int, end_line: int, end_column: int) -> Span:
        l1, c1 = self.at(line, column)
        l2, c2 = self.at(end_line, end_column)
        return Span(file=self.file, line=l1, column=c1, end_line=l2, end_column=c2)

    def of_token(self, tok) -> Span:
        return self.span(tok.line, tok.column, tok.end_line, tok.end_column)

    def of_meta(self, meta) -> Optional[Span]:
        if getattr(meta, "empty", True):
            return None
        return self.span(meta.line, meta.column, meta.end_line, meta.end_column)


_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "REF": "a reference such as pkg.module:factory", "$END": "the end of the statement",
}
_EXPRESSION_START = {"NAME", "INT", "FLOAT", "STRING", "TRUE", "FALSE", "NONE", "LSQB", "LPAR", "MINUS"}
_ORDER = {")": 0, "]": 1, "}": 2, ",": 3, "=": 4, "*": 5}


def _terminal_text(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    term = lark_parser().get_terminal(name)
    pattern = term.pattern
    if type(pattern).__name__ == "PatternStr":
        return f"'{pattern.value}'"
    return name.lower()


def expected_text(names) -> str:
    names = set(names)
    # After a complete expression, '.', '[', '(' and '=' could continue it, but the mistake is
    # almost always a missing separator or closer: name only those when they are possible.
    if names & {"COMMA", "RPAR", "RSQB", "STAR", "$END"}:
        names -= {"DOT", "LSQB", "LPAR", "EQUAL"}
    words: List[str] = []
    if _EXPRESSION_START <= names:
        names -= _EXPRESSION_START
        words.append("an expression")
    elif {"INT", "FLOAT"} <= names:
        names -= {"FLOAT"}
        names.discard("INT")
        words.append("a number")
    words += [_terminal_text(n) for n in names]
    words = sorted(set(words), key=lambda w: (_ORDER.get(w.strip("'"), 10), w.startswith("'") is False, w))
    if len(words) == 1:
        return words[0]
    if len(words) <= 4:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return "one of " + ", ".join(words)


def _found_text(tok) -> str:
    if tok.type == "$END":
        return "the end of the statement"
    if tok.type == "NAME":
        return f"name '{tok.value}'"
    if tok.type in ("INT", "FLOAT"):
        return f"number {tok.value}"
    if tok.type == "STRING":
        return f"string {tok.value}"
    return f"'{tok.value}'"


def _keyword_values(names) -> List[str]:
    out = []
    for n in names:
        if n in _TERMINAL_WORDS or n in _EXPRESSION_START:
            continue
        text = _terminal_text(n).strip("'")
        if text.isidentifier():
            out.append(text)
    return out


# A long-lived process (the language server) checks every edit of a file whose other statements
# are unchanged: the outcome of parsing a statement's text is kept for the PARSED_KEPT texts parsed
# last (each of at most PARSED_KEPT_CHARS characters: a statement is far shorter, and the memory
# kept stays small). An outcome depends on the text and the rule alone (lark counts lines and
# columns within the text; Positions maps them to the file), and nothing changes a tree once built.
PARSED_KEPT = 1024
PARSED_KEPT_CHARS = 2000


def _parse(text: str, rule: str):
    import lark

    try:
        return lark_parser().parse(text, start=rule)
    except lark.UnexpectedInput as e:
        return e.with_traceback(None)  # kept: without the parser's frames


_parse_kept = functools.lru_cache(maxsize=PARSED_KEPT)(_parse)


def parsed(text: str, rule: str):
    """lark's parse tree of one statement's ``text`` from grammar rule ``rule``, or the syntax
    error lark raised (an exception returned, not raised)."""
    return _parse_kept(text, rule) if len(text) <= PARSED_KEPT_CHARS else _parse(text, rule)


def parse_chunk(source: SourceText, chunk: Chunk, diags: Diagnostics):
    """The parse tree of one chunk, or None after reporting its syntax error."""
    import lark

    pos = Positions(source, chunk.start)
    text = source.text[chunk.start:chunk.end]
    if len(text) > MAX_STATEMENT:
        diags.error("KD107", f"this statement is {len(text)} characters long; at most {MAX_STATEMENT}",
                    source.span(chunk.start, chunk.start + 1),
                    hint="split it up: a statement per record, connector and loss")
        return None, pos
    e = parsed(text, chunk.rule)
    if not isinstance(e, lark.UnexpectedInput):
        return e, pos
    if isinstance(e, lark.UnexpectedCharacters):
        line, col = pos.at(e.line, e.column)
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        hint = "strings use double quotes" if ch == "'" else None
        if ch == "{":
            diags.error("KD106", "'{' only opens a block: 'train {', 'stage NAME {' or 'phase NAME {'",
                        Span(file=source.name, line=line, column=col, end_line=line, end_column=col + 1))
        else:
            shown = f'"{ch}"' if ch == "'" else f"'{ch}'"
            diags.error("KD100", f"unexpected character {shown}",
                        Span(file=source.name, line=line, column=col, end_line=line, end_column=col + 1),
                        hint=hint)
    elif isinstance(e, lark.UnexpectedToken):
        tok = e.token
        expected = set(getattr(e, "accepts", None) or e.expected)
        if tok.type == "$END":
            # point just after the last character of the statement
            end_line, end_col = source.position(chunk.end)
            span = Span.point(source.name, end_line, end_col)
            message = f"unexpected end of the statement; expected {expected_text(expected)}"
        else:
            span = pos.of_token(tok)
            message = f"unexpected {_found_text(tok)}; expected {expected_text(expected)}"
        hint = None
        if tok.type == "NAME":
            hint = did_you_mean(tok.value, _keyword_values(expected))
        if hint is None and chunk.rule == "statement" and tok.type != "$END" and \
                tok.end_pos is not None and text[:tok.start_pos].strip() == "":
            hint = "a statement starts with " + ", ".join(f"'{k}'" for k in STATEMENT_KEYWORDS)
        diags.error("KD103", message, span, hint=hint)
    elif isinstance(e, lark.UnexpectedEOF):  # pragma: no cover - LALR reports UnexpectedToken($END)
        end_line, end_col = source.position(chunk.end)
        diags.error("KD103", f"unexpected end of the statement; expected {expected_text(e.expected)}",
                    Span.point(source.name, end_line, end_col))
    return None, pos


def parse_ref_call(text: str):
    """Parse a command-line reference ``pkg.module:factory(k=v)``; raises lark errors."""
    return lark_parser().parse(text, start="ref_call")


def parse_value(text: str):
    """Parse a command-line value written as an expression (``sgd(lr=0.1)``); raises lark errors."""
    return lark_parser().parse(text, start="value")
