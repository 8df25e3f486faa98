"""Source locations. One :class:`Span` type is used by the IR, the diagnostics and the runtime."""

from __future__ import annotations

import re

from kdsl.core.frozen import FrozenModel


class Span(FrozenModel):
    """A region of a source file: 1-based line and column, end column exclusive.

    A zero-width span (``end_column == column`` on one line) marks a position, such as the end
    of a line where a ``)`` is missing.
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @classmethod
    def point(cls, file: str, line: int, column: int) -> "Span":
        return cls(file=file, line=line, column=column, end_line=line, end_column=column)

    def to(self, other: "Span") -> "Span":
        """The span from the start of this one to the end of ``other``."""
        return Span(file=self.file, line=self.line, column=self.column,
                    end_line=other.end_line, end_column=other.end_column)


_NEWLINE = re.compile("\n")


class SourceText:
    """The text of one source file, with line lookup by number and offset."""

    __slots__ = ("name", "text", "_starts")

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.text = text
        self._starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]

    def line(self, number: int) -> str:
        """Line ``number`` (1-based) without its newline; empty if out of range."""
        if number < 1 or number > len(self._starts):
            return ""
        start = self._starts[number - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    def position(self, offset: int) -> tuple:
        """(line, column), both 1-based, of a character offset."""
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, offset - self._starts[lo] + 1

    def span(self, start: int, end: int) -> Span:
        line, col = self.position(start)
        end_line, end_col = self.position(end)
        return Span(file=self.name, line=line, column=col, end_line=end_line, end_column=end_col)
