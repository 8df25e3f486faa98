"""A spec's text as the editor features see it: tokens with their offsets, and where the cursor is.

The parser's grammar answers for whole statements; an editor asks about half-typed text ("which
call is the cursor inside?"), so this module scans tokens with a tolerant lexer that never fails:
strings and comments are skipped, brackets are counted, anything else is one-character punctuation.
"""

from __future__ import annotations

import bisect
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

from kdsl.core.files import SpecFileError, check_spec_size
from kdsl.core.frozen import trusted_construction

_TOKEN = re.compile(r'(?P<comment>#[^\n]*)|(?P<string>"(?:\\.|[^"\\\n])*"?)'
                    r'|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>[0-9][0-9_.eE+-]*)'
                    r'|(?P<space>[ \t\r\f\v\ufeff]+)|(?P<newline>\n)|(?P<punct>.)', re.S)
OPENERS = {"(": ")", "[": "]", "{": "}"}
CLOSERS = {v: k for k, v in OPENERS.items()}


class Token(NamedTuple):  # a tuple: a fuzzer's text holds tens of thousands, built per request
    kind: str  # comment, string, name, number, newline, punct
    text: str
    start: int  # character offset in the text

    @property
    def end(self) -> int:
        return self.start + len(self.text)


# Questions about the cursor (hover, completion) read the text around it only: from a line start at
# most WINDOW characters before it to the end of its line (at most WINDOW characters on either side). A spec is far smaller, so for every spec
# this is the whole text before the cursor; for a fuzzer's megabytes it keeps answers quick.
WINDOW = 20_000


def tokens(text: str, start: int = 0, end: int = -1) -> List[Token]:
    """Every token but blanks of ``text[start:end]``, in order (offsets in the whole text)."""
    found = _TOKEN.finditer(text, start, len(text) if end < 0 else end)
    new = tuple.__new__
    return [new(Token, (m.lastgroup, m.group(), m.start())) for m in found if m.lastgroup != "space"]


def line_tokens(text: str, offset: int) -> List[Token]:
    """The tokens of :func:`tokens` over ``window(text, offset)`` from the start of the cursor's
    line on (the tokens about the cursor, without scanning the lines above it). A token ends at a
    line's end, except a string whose line ends in a backslash: after such a line, start earlier."""
    start, end = window(text, offset)
    line = max(start, text.rfind("\n", 0, offset) + 1)
    while line - 2 >= start and text[line - 2] == "\\":
        line = max(start, text.rfind("\n", 0, line - 1) + 1)
    return tokens(text, line, end)


def within_size_limit(text: str) -> bool:
    """Whether the loader reads ``text`` at all. Past the spec size limit (MAX_SPEC_BYTES) it answers
    with the size error alone, and so do the features that would parse or scan the whole text
    (names, outline, formatting, fixes): megabytes typed or pasted are answered at once."""
    try:
        check_spec_size("", text)
    except SpecFileError:
        return False
    return True


# The statements of the files parsed last, file -> (its text, its statements): the requests that
# follow an edit read those its check parsed (:func:`remember_parsed`), and the several features
# asking about one text parse it once.
PARSED_FILES_KEPT = 32
_parsed: Dict[str, Tuple[str, list]] = {}


def _keep(file: str, text: str, statements: list) -> None:
    _parsed.pop(file, None)
    _parsed[file] = (text, statements)
    if len(_parsed) > PARSED_FILES_KEPT:
        _parsed.pop(next(iter(_parsed)))


def remember_parsed(texts: Dict[str, str], parsed: Dict[str, list]) -> None:
    """Keep the statements a check parsed (``check_text``'s ``parsed``) for the files' texts."""
    for file, statements in parsed.items():
        _keep(file, texts[file], statements)


def parsed_statements(text: str, file: str) -> list:
    """The file's statements, parsed and lowered (:func:`kdsl.lang.fmt.lowered_statements`); none
    for a text past the size limit."""
    from kdsl.lang.fmt import lowered_statements

    if not within_size_limit(text):
        return []
    kept = _parsed.get(file)
    if kept is None or not (kept[0] is text or kept[0] == text):
        with trusted_construction():  # the parser's nodes, as the loader builds them
            kept = (text, lowered_statements(text, file)[0])
        _keep(file, *kept)
    return list(kept[1])


def window(text: str, offset: int) -> Tuple[int, int]:
    """(start, end) of the text that questions about ``offset`` read (see WINDOW)."""
    start = 0 if offset <= WINDOW else text.find("\n", offset - WINDOW, offset) + 1 or offset - WINDOW
    end = text.find("\n", offset, offset + WINDOW)
    return start, min(len(text), offset + WINDOW) if end < 0 else end


class Lines:
    """Offsets <-> (0-based line, 0-based character) of one text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __len__(self) -> int:
        return len(self.starts)

    def line_text(self, line: int) -> str:
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.text)
        return self.text[self.starts[line]:end]

    def contains(self, line: int, character: int) -> bool:
        return 0 <= line < len(self.starts) and 0 <= character <= len(self.line_text(line))

    def offset(self, line: int, character: int) -> int:
        return self.starts[line] + character

    def position(self, offset: int) -> Tuple[int, int]:
        line = bisect.bisect_right(self.starts, offset) - 1
        return line, offset - self.starts[line]


def token_at(toks: List[Token], offset: int) -> Optional[Token]:
    """The name, string or number token under (or just before) the cursor."""
    starts = [t.start for t in toks]
    i = bisect.bisect_right(starts, offset) - 1
    for j in (i, i - 1):
        if 0 <= j < len(toks) and toks[j].start <= offset <= toks[j].end \
                and toks[j].kind in ("name", "string", "number"):
            return toks[j]
    return None


def open_brackets(toks: List[Token]) -> List[int]:
    """The indexes of the brackets still open after ``toks`` (innermost last)."""
    stack: List[int] = []
    for i, t in enumerate(toks):
        if t.text in OPENERS and t.kind == "punct":
            stack.append(i)
        elif t.text in CLOSERS and t.kind == "punct":
            while stack and toks[stack[-1]].text != CLOSERS[t.text]:
                stack.pop()  # an unclosed inner bracket ends with its outer one
            if stack:
                stack.pop()
    return stack


def after_dot(toks: List[Token], i: int) -> bool:
    """``layer2`` in ``student.layer2``: a module path part, not a name of the spec."""
    return i > 0 and toks[i - 1].text == "." and toks[i - 1].end == toks[i].start


class ClientUnits:
    """Characters as the client counts them (LSP's position encodings: UTF-16 unless the client
    asks for UTF-8 or UTF-32), as pygls's PositionCodec counts them, but converted by the codecs
    in C: pygls walks a line character by character in Python, a quarter of a second on a
    fuzzer's megabyte line."""

    def __init__(self, encoding: Optional[str]) -> None:
        self.codec = {"utf-8": "utf-8", "utf-32": None}.get(encoding or "", "utf-16-le")
        self.size = 2 if self.codec == "utf-16-le" else 1

    def count(self, text: str) -> int:
        """How many units ``text`` is."""
        return len(text) if self.codec is None or text.isascii() else len(text.encode(self.codec)) // self.size

    def characters(self, line: str, units: int) -> int:
        """The characters of ``line`` that its first ``units`` units hold (a character cut in
        two by ``units`` counts whole, as pygls counts it)."""
        if self.codec is None or line.isascii():
            return min(units, len(line))
        encoded = line.encode(self.codec)[:units * self.size]
        whole = len(encoded.decode(self.codec, errors="ignore"))
        return whole + (len(line[:whole].encode(self.codec)) < len(encoded))
