"""The language's literal syntax, printed: the one place that says how a Python value is written in
a spec (``true``, ``none``, ``"text"`` with escapes, ``[1, 2]``)."""

from __future__ import annotations

from typing import Any


def literal_text(value: Any) -> str:
    """``value`` as a spec would write it; lists and tuples become ``[...]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        # the escapes the lexer reads back (kdsl/lang/lower.py): a string stays on one line
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal_text(v) for v in value) + "]"
    return repr(value)
