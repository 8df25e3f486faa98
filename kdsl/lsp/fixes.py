"""Quick fixes for the warnings whose fix is mechanical: an unused record or connector is removed
(KD250, KD252), a flag that has no effect is dropped (KD254: a student's ``trainable``, a
trained model's ``train_mode``). "Did you mean" fixes are in
:func:`kdsl.lsp.convert.quick_fixes`."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.statements import NAMED, walk_statements
from kdsl.lsp.text import Lines, parsed_statements, tokens

Edit = Tuple[int, int, str]  # (start offset, end offset, new text) in the document's text


def _statement_lines(lines: Lines, node: ir.Node) -> Edit:
    """The whole lines of a statement, their newline included."""
    start = lines.offset(node.span.line - 1, 0)
    end = lines.offset(node.span.end_line, 0) if node.span.end_line < len(lines) else len(lines.text)
    return start, end, ""


def _drop_flag(lines: Lines, node: ir.Node) -> Optional[Edit]:
    """Drop the flag KD254 warns of: a student's ``trainable``, else ``train_mode`` of a model that
    trains (never a teacher's ``trainable``, which is what makes it train)."""
    if not isinstance(node, ir.ModelDecl):
        return None
    flag = "trainable" if node.role == "student" and node.trainable else "train_mode"
    start = lines.offset(node.span.line - 1, node.span.column - 1)
    end = lines.offset(node.span.end_line - 1, node.span.end_column - 1)
    toks = tokens(lines.text, start, end)
    for before, tok in zip(toks, toks[1:]):
        if tok.kind == "name" and tok.text == flag:
            return before.end, tok.end, ""
    return None


# code -> (the action's title, the edit for the statement the warning names)
FIXES: Dict[str, Tuple[str, Callable[[Lines, ir.Node], Optional[Edit]]]] = {
    "KD250": ("remove the unused record", _statement_lines),
    "KD252": ("remove the unused connector", _statement_lines),
    "KD254": ("remove the flag that has no effect", _drop_flag),
}


def fix_for(code: str, text: str, file: str, name_at: Tuple[int, int]) -> Optional[Tuple[str, Edit]]:
    """The fix of a warning ``code`` on the declaration whose name starts at ``name_at`` (0-based
    line and character), or None."""
    if code not in FIXES:
        return None
    title, make = FIXES[code]
    lines = Lines(text)
    statements: List[ir.Node] = parsed_statements(text, file)
    for node in walk_statements(statements):
        span = getattr(node, "name_span", None) if isinstance(node, NAMED) else None
        if span is not None and (span.line - 1, span.column - 1) == name_at:
            edit = make(lines, node)
            return (title, edit) if edit is not None else None
    return None
