"""Diagnostics are data: a code, a severity, a message, a span, hints and located notes.

Text is rendered from that data in one place (:func:`render`), JSON in another
(:func:`to_json`). Colour belongs to the terminal renderer only; ``str(KdslError)`` never holds
escape codes.
"""

from __future__ import annotations

import json
from typing import Dict, Iterable, List, Literal, Optional, Sequence, Tuple

from kdsl.core.frozen import FrozenModel
from kdsl.core.files import SpecFileError, read_spec_text
from kdsl.core.span import SourceText, Span

Severity = Literal["error", "warning"]


class Note(FrozenModel):
    """A second location that explains the first (``first declared here``)."""

    message: str
    span: Optional[Span] = None


class Diagnostic(FrozenModel):
    code: str
    severity: Severity
    message: str
    span: Optional[Span] = None
    hints: Tuple[str, ...] = ()
    notes: Tuple[Note, ...] = ()
    # how many further problems this diagnostic stands for: only KD108, the line that ends a list
    # cut at a cap (a file with a million errors keeps and prints a few, and counts the rest)
    omitted: int = 0

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        return render([self])


class KdslError(Exception):
    """Raised by the API when a spec (or its use with real models) has errors.

    ``diagnostics`` holds every problem found (warnings too); ``str(error)`` renders them.
    """

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: Optional[Dict[str, str]] = None):
        self.diagnostics: List[Diagnostic] = list(diagnostics)
        self.sources: Dict[str, str] = dict(sources or {})
        super().__init__(self.diagnostics[0].message if self.diagnostics else "kdsl error")

    @property
    def errors(self) -> List[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    def __str__(self) -> str:
        return render(self.diagnostics, self.sources)


# Memory and time stay proportional to what is shown, whatever the input: past MAX_KEPT problems
# a collector only counts (1 MB of ')' once built a million diagnostics, 2.3 GB, in 68 s), and a
# renderer shows MAX_SHOWN in full, then one KD108 line with the count of the rest.
MAX_KEPT = 1000
MAX_SHOWN = 50
OMITTED_CODE = "KD108"


class Diagnostics:
    """A collector that passes append to; ``raise_if_errors`` turns it into a :class:`KdslError`.

    It keeps the first :data:`MAX_KEPT` problems; ``items`` ends with KD108 lines counting the
    errors and the warnings past them, which were never built.
    """

    def __init__(self, sources: Optional[Dict[str, str]] = None) -> None:
        self.kept: List[Diagnostic] = []
        self.sources: Dict[str, str] = sources if sources is not None else {}
        self.omitted_errors = 0
        self.omitted_warnings = 0

    @property
    def full(self) -> bool:
        """True once further problems are only counted (a producer may stop looking)."""
        return len(self.kept) >= MAX_KEPT

    @property
    def items(self) -> List[Diagnostic]:
        counted = [omission(n, severity) for n, severity in
                   ((self.omitted_errors, "error"), (self.omitted_warnings, "warning")) if n]
        return self.kept + counted

    def _count(self, severity: Severity) -> None:
        if severity == "error":
            self.omitted_errors += 1
        else:
            self.omitted_warnings += 1

    def add(self, diagnostic: Diagnostic) -> Diagnostic:
        if self.full:
            self._count(diagnostic.severity)
        else:
            self.kept.append(diagnostic)
        return diagnostic

    def error(self, code: str, message: str, span: Optional[Span] = None, *,
              hint: Optional[str] = None, hints: Iterable[str] = (),
              notes: Iterable[Note] = ()) -> Optional[Diagnostic]:
        if self.full:  # counted, never built
            return self._count("error")
        return self.add(make(code, message, span, hint=hint, hints=hints, notes=notes))

    def warning(self, code: str, message: str, span: Optional[Span] = None, *,
                hint: Optional[str] = None, notes: Iterable[Note] = ()) -> Optional[Diagnostic]:
        if self.full:
            return self._count("warning")
        return self.add(make(code, message, span, hint=hint, notes=notes, severity="warning"))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for diagnostic in diagnostics:
            self.add(diagnostic)

    @property
    def has_errors(self) -> bool:
        return self.omitted_errors > 0 or any(d.is_error for d in self.kept)

    def raise_if_errors(self) -> None:
        if self.has_errors:
            raise KdslError(sorted_diagnostics(self.items), self.sources)


def make(code: str, message: str, span: Optional[Span] = None, *, hint: Optional[str] = None,
         hints: Iterable[str] = (), notes: Iterable[Note] = (),
         severity: Severity = "error") -> Diagnostic:
    all_hints = tuple(([hint] if hint else []) + list(hints))
    return Diagnostic(code=code, severity=severity, message=message, span=span, hints=all_hints,
                      notes=tuple(notes))


def error(code: str, message: str, span: Optional[Span] = None, **kwargs) -> KdslError:
    """A :class:`KdslError` holding one diagnostic (for raising)."""
    sources = kwargs.pop("sources", None)
    return KdslError([make(code, message, span, **kwargs)], sources)


def omission(count: int, severity: Severity) -> Diagnostic:
    """The KD108 line standing for ``count`` problems that are not shown."""
    return Diagnostic(code=OMITTED_CODE, severity=severity, omitted=count,
                      message=f"{count:,} more problem{'s' if count != 1 else ''} not shown",
                      hints=("fix the problems shown and check again",))


def capped(diagnostics: Iterable[Diagnostic], limit: int = MAX_SHOWN) -> List[Diagnostic]:
    """What every renderer shows: the first ``limit`` diagnostics, then one KD108 line counting
    the rest (and those a collector counted without keeping)."""
    diagnostics = list(diagnostics)
    listed = [d for d in diagnostics if not d.omitted]
    count = sum(d.omitted for d in diagnostics) + max(0, len(listed) - limit)
    if not count:
        return diagnostics
    rest = listed[limit:] + [d for d in diagnostics if d.omitted]
    return listed[:limit] + [omission(count, "error" if any(d.is_error for d in rest) else "warning")]


def sorted_diagnostics(items: Iterable[Diagnostic]) -> List[Diagnostic]:
    """In source order (file, line, column); diagnostics without a location keep their order last."""
    items = list(items)
    located = [d for d in items if d.span is not None]
    unlocated = [d for d in items if d.span is None]
    located.sort(key=lambda d: (d.span.file, d.span.line, d.span.column))
    return located + unlocated


# ------------------------------------------------------------------------------ rendering
_STYLE = {"error": "\033[1;31m", "warning": "\033[1;33m", "hint": "\033[36m", "note": "\033[36m",
          "bold": "\033[1m", "caret": "\033[1;31m", "dim": "\033[2m", "reset": "\033[0m"}


def _source_for(file: str, sources: Dict[str, str], cache: Dict[str, Optional[SourceText]]):
    if file not in cache:
        text = sources.get(file)
        if text is None and not file.startswith("<"):
            try:
                text = read_spec_text(file)
            except SpecFileError:
                text = None
        cache[file] = SourceText(file, text) if text is not None else None
    return cache[file]


# Output stays proportional to what is worth reading, whatever the input: a source line is shown
# as a window around the caret, a message is clipped, and past MAX_SHOWN diagnostics only a count
# is printed (10,000 unclosed brackets once printed 150 MB).
LINE_WINDOW = 100
MAX_TEXT = 400
_CONTROL = {c: "?" for c in range(32) if c != 9}
_CONTROL[127] = "?"


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (messages may quote huge names)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def exception_summary(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception raised by a model's or a library's
    code, for a diagnostic: torch's C++ errors carry their stack after the message ("Exception
    raised from ... frame #0: c10::Error..."), which tells a user nothing."""
    lines = str(exc).split("Exception raised from", 1)[0].strip().splitlines()
    return clip(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


def _window(line: str, start: int, width: int) -> tuple:
    """(shown text, caret start, caret width): at most LINE_WINDOW characters around the caret."""
    if len(line) <= LINE_WINDOW:
        return line, start, width
    width = min(width, LINE_WINDOW // 2)
    lo = max(0, min(start - LINE_WINDOW // 3, len(line) - LINE_WINDOW))
    hi = lo + LINE_WINDOW
    shown = ("..." if lo else "") + line[lo:hi] + ("..." if hi < len(line) else "")
    return shown, start - lo + (3 if lo else 0), width


def _excerpt(span: Span, source: Optional[SourceText], paint) -> List[str]:
    if source is None:
        return []
    line = source.line(span.line)
    if not line and span.line > 1 and span.column == 1 and source.text.count("\n") < span.line - 1:
        return []
    if span.end_line == span.line:
        width = max(1, span.end_column - span.column)
    else:
        width = max(1, len(line) - span.column + 1)
    line, start, width = _window(line.translate(_CONTROL), span.column - 1, width)
    # keep tabs in the padding so the carets line up under tab-indented text
    pad = "".join(ch if ch == "\t" else " " for ch in line[:start])
    pad += " " * max(0, start - len(line))
    return [f"{span.line:>5} | {line}",
            f"      | {pad}{paint('caret', '^' * width)}"]


def render(diagnostics: Iterable[Diagnostic], sources: Optional[Dict[str, str]] = None, *,
           color: bool = False) -> str:
    """Render diagnostics the way the CLI prints them::

        specs/bad.kd:7:18: error[KD201]: unknown record 's_logit'
            7 | loss kd = kl_div(s_logit, t_logits, tau=4)
              |                  ^^^^^^^
          hint: did you mean 's_logits'? (declared at specs/bad.kd:3:8)
    """
    sources = sources or {}
    cache: Dict[str, Optional[SourceText]] = {}

    def paint(style: str, text: str) -> str:
        return f"{_STYLE[style]}{text}{_STYLE['reset']}" if color else text

    blocks = []
    for d in capped(diagnostics):
        head = f"{paint(d.severity, d.severity)}[{d.code}]: {paint('bold', clip(d.message))}"
        lines = [f"{d.span}: {head}" if d.span else head]
        if d.span:
            lines += _excerpt(d.span, _source_for(d.span.file, sources, cache), paint)
        for h in d.hints:
            lines.append(f"  {paint('hint', 'hint')}: {clip(h)}")
        for n in d.notes:
            where = f" (at {n.span})" if n.span else ""
            if n.span:
                lines.append(f"  {paint('note', 'note')}: {clip(n.message)} at {n.span}")
                lines += ["  " + x for x in _excerpt(n.span, _source_for(n.span.file, sources, cache), paint)]
            else:
                lines.append(f"  {paint('note', 'note')}: {clip(n.message)}{where}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def summary_line(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(d.omitted or 1 for d in diagnostics if d.is_error)
    warnings = sum(d.omitted or 1 for d in diagnostics if not d.is_error)
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts) if parts else "no problems"


def to_json(diagnostics: Iterable[Diagnostic]) -> str:
    """The diagnostics :func:`render` shows, as a JSON list; ``omitted`` appears only on the final
    KD108 entry, with the count of those not listed."""
    return json.dumps([_json_entry(d) for d in capped(diagnostics)], indent=2)


def _json_entry(diagnostic: Diagnostic) -> dict:
    entry = diagnostic.model_dump(mode="json")
    if not diagnostic.omitted:
        del entry["omitted"]
    for note, dumped in zip(diagnostic.notes, entry["notes"]):
        dumped["message"] = clip(note.message)
    entry["message"] = clip(diagnostic.message)
    entry["hints"] = [clip(h) for h in diagnostic.hints]
    return entry
