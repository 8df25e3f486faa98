"""kdsl's diagnostics as LSP diagnostics: the same code, message, hints and notes as ``kdsl check``
(hints and unlocated notes follow the message, located notes are related information); a
diagnostic inside an included file is reported on the ``include`` that brings it in."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set

from lsprotocol import types as lsp

from kdsl.core.diagnostics import Diagnostic, clip
from kdsl.core.span import Span
from kdsl.lsp.names import include_targets
from kdsl.lsp.text import Lines

SOURCE = "kdsl"
_DID_YOU_MEAN = re.compile(r"did you mean (.*?)\?")
_QUOTED = re.compile(r"'([^']+)'")
MAX_DIAGNOSTICS = 200  # an editor shows the first few; 10,000 unclosed brackets stay cheap


def uri_of(path: str) -> str:
    import pathlib

    return pathlib.Path(path).absolute().as_uri()


def span_range(span: Optional[Span]) -> lsp.Range:
    if span is None:
        return lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0))
    return lsp.Range(lsp.Position(max(0, span.line - 1), max(0, span.column - 1)),
                     lsp.Position(max(0, span.end_line - 1), max(0, span.end_column - 1)))


def offsets_range(lines: Lines, start: int, end: int) -> lsp.Range:
    return lsp.Range(lsp.Position(*lines.position(start)), lsp.Position(*lines.position(end)))


def suggestions(d: Diagnostic) -> List[str]:
    """The names a "did you mean" hint offers."""
    out: List[str] = []
    for hint in d.hints:
        found = _DID_YOU_MEAN.search(hint)
        if found:
            out += _QUOTED.findall(found.group(1))
    return out


def _message(d: Diagnostic, where: str = "") -> str:
    lines = [where + clip(d.message)] + [f"hint: {clip(h)}" for h in d.hints]
    lines += [f"note: {clip(n.message)}" for n in d.notes if n.span is None]
    return "\n".join(lines)


def _related(d: Diagnostic) -> List[lsp.DiagnosticRelatedInformation]:
    return [lsp.DiagnosticRelatedInformation(lsp.Location(uri_of(n.span.file), span_range(n.span)),
                                             clip(n.message))
            for n in d.notes if n.span is not None and not n.span.file.startswith("<")]


def _include_owner(path: str, sources: Dict[str, str]) -> Dict[str, Span]:
    """For every file the spec reads through its includes: the span of the ``include`` in
    ``path`` that brings it in (directly or through other includes)."""
    owner: Dict[str, Span] = {}
    for stmt, target in include_targets(sources.get(path, ""), path):
        seen: Set[str] = set()
        todo = [target]
        while todo:
            f = todo.pop()
            if f in seen or f not in sources:
                continue
            seen.add(f)
            owner.setdefault(f, stmt.path_span)
            todo += [t for _, t in include_targets(sources[f], f)]
    return owner


def to_lsp(diagnostics: List[Diagnostic], path: str, sources: Dict[str, str]) -> List[lsp.Diagnostic]:
    """The diagnostics of the document at ``path``, those of included files on their include."""
    owner: Optional[Dict[str, Span]] = None
    out = []
    for d in diagnostics[:MAX_DIAGNOSTICS]:
        span, where, related = d.span, "", _related(d)
        if span is not None and span.file != path:
            owner = owner if owner is not None else _include_owner(path, sources)
            where = f"in {span}: "
            related = [lsp.DiagnosticRelatedInformation(lsp.Location(uri_of(span.file), span_range(span)),
                                                        "the problem is here")] + related
            span = owner.get(span.file)
        out.append(lsp.Diagnostic(
            range=span_range(span), message=_message(d, where), code=d.code, source=SOURCE,
            severity=lsp.DiagnosticSeverity.Error if d.is_error else lsp.DiagnosticSeverity.Warning,
            related_information=related or None,
            data={"replacements": suggestions(d)} if suggestions(d) and not where else None))
    return out


def quick_fixes(uri: str, diagnostics: List[lsp.Diagnostic]) -> List[lsp.CodeAction]:
    """One action per name a "did you mean" hint offers: replace the name the diagnostic marks."""
    actions = []
    for d in diagnostics:
        names = (d.data or {}).get("replacements", []) if isinstance(d.data, dict) else []
        for name in names:
            edit = lsp.WorkspaceEdit(changes={uri: [lsp.TextEdit(d.range, name)]})
            actions.append(lsp.CodeAction(title=f"replace with '{name}'", kind=lsp.CodeActionKind.QuickFix,
                                          diagnostics=[d], edit=edit, is_preferred=len(names) == 1))
    return actions
