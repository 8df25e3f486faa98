"""The names a spec declares (models, records, connectors, losses, params) and where each is used.

Declarations come from the parser's lowered statements (the statement table says which kinds
declare a name and with what word); uses are the name tokens that are neither a module path part
(``student.layer2``) nor an option or setting name (``tau=``, ``epochs =``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.lang.statements import KIND_WORD, NAMED, walk_statements
from kdsl.lsp.text import Lines, Token, after_dot, parsed_statements, tokens, within_size_limit


@dataclass(frozen=True)
class Declaration:
    name: str
    kind: str  # the statement table's word: model, record, connector, loss, param
    span: Span  # the name
    node: ir.Node

    @property
    def bare_role(self) -> bool:
        """``student = model(...)``: the role word is the model's name."""
        return isinstance(self.node, ir.ModelDecl) and self.name == self.node.role


@dataclass(frozen=True)
class Occurrence:
    file: str
    start: int  # character offsets in that file's text
    end: int


def declarations(text: str, file: str) -> List[Declaration]:
    """The names one file declares, in source order (stages and phases included)."""
    statements = parsed_statements(text, file)
    return [Declaration(s.name, KIND_WORD[type(s)], s.name_span, s)
            for s in walk_statements(statements) if isinstance(s, NAMED) and s.name_span is not None]


def include_targets(text: str, file: str) -> List[Tuple[ir.IncludeDecl, str]]:
    """Each ``include`` of one file with the path it reads (relative to the including file)."""
    statements = parsed_statements(text, file)
    here = os.path.dirname(file)
    return [(s, os.path.normpath(os.path.join(here, s.path))) for s in statements
            if isinstance(s, ir.IncludeDecl)]


def _offset(lines: Lines, span: Span) -> int:
    return lines.offset(span.line - 1, span.column - 1)


def uses(text: str, name: str, declared_at: Tuple[int, ...] = ()) -> Iterator[Token]:
    """The tokens of ``text`` that name ``name``: its declarations (at ``declared_at`` offsets)
    and its uses."""
    if not within_size_limit(text):
        return
    toks = tokens(text)
    for i, t in enumerate(toks):
        if t.kind != "name" or t.text != name or after_dot(toks, i):
            continue
        nxt = toks[i + 1].text if i + 1 < len(toks) else ""
        nxt2 = toks[i + 2].text if i + 2 < len(toks) else ""
        if nxt == "=" and nxt2 != "=" and t.start not in declared_at:
            continue  # an option (tau=) or a setting (epochs =), whatever it is called
        yield t


class Index:
    """The declarations of a spec and of the files it includes (each file's text given)."""

    def __init__(self, texts: Dict[str, str]) -> None:
        self.texts = texts
        self.lines = {f: Lines(t) for f, t in texts.items()}
        self._declared: Optional[Dict[str, List[Declaration]]] = None

    @property
    def declared(self) -> Dict[str, List[Declaration]]:
        """Name -> its declarations, read when first asked for (a hover on a keyword never is)."""
        if self._declared is None:
            self._declared = {}
            for file, text in self.texts.items():
                for d in declarations(text, file):
                    self._declared.setdefault(d.name, []).append(d)
        return self._declared

    def find(self, name: str) -> Optional[Declaration]:
        found = self.declared.get(name)
        return found[0] if found else None

    def names(self) -> List[Declaration]:
        return [ds[0] for ds in self.declared.values()]

    def occurrences(self, name: str) -> List[Occurrence]:
        """Every declaration and use of ``name`` in every file of the spec."""
        out = []
        for file, text in self.texts.items():
            at = tuple(_offset(self.lines[file], d.span) for d in self.declared.get(name, ())
                       if d.span.file == file)
            out += [Occurrence(file, t.start, t.end) for t in uses(text, name, at)]
        return out
