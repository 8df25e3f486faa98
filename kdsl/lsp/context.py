"""Where the cursor stands: top level, inside a block (train, stage, phase), inside a call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import KINDS, Component
from kdsl.lsp.text import Token, open_brackets, tokens, window

# The kind of call a train setting's value is (optimizer = sgd(...)): its catalog kind.
@dataclass(frozen=True)
class Context:
    block: Optional[str]  # the innermost open block's keyword (train, stage, phase), None at top
    call: Optional[str]  # the innermost open call's name, None outside calls
    line_start: bool  # only a (partial) word stands before the cursor on its statement line
    given: tuple  # option names already given in the innermost call
    prefix: str  # the partial word before the cursor
    line: tuple = ()  # the texts of the tokens before it on its line (``param tau = 4 search``)
    statement: Optional[str] = None  # the first word of the statement the cursor is in


def _statement_word(head: List[Token], stack: List[int]) -> Optional[str]:
    """The first word of the statement that ``head`` ends in: of the line where its outermost
    open bracket stands (a statement continues over lines only inside brackets)."""
    j = (stack[0] if stack else len(head)) - 1
    while j >= 0 and head[j].kind != "newline" and head[j].text not in "{}":
        j -= 1
    first = head[j + 1] if j + 1 < len(head) else None
    return first.text if first is not None and first.kind == "name" else None


def _block_word(toks: List[Token], i: int) -> Optional[str]:
    """The keyword that opened the brace at ``toks[i]`` (``train {``, ``stage s epochs 5 {``)."""
    j = i - 1
    while j >= 0 and toks[j].kind != "newline":
        j -= 1
    first = toks[j + 1] if j + 1 < i else None
    return first.text if first is not None and first.kind == "name" else None


def context_at(text: str, offset: int) -> Context:
    before = tokens(text, window(text, offset)[0], offset)
    prefix = before[-1].text if before and before[-1].kind == "name" and before[-1].end == offset else ""
    head = before[:-1] if prefix else before
    stack = open_brackets(head)
    braces = [i for i in stack if head[i].text == "{"]
    parens = [i for i in stack if head[i].text == "("]
    block = _block_word(head, braces[-1]) if braces else None
    call = None
    given: tuple = ()
    if parens and (not braces or parens[-1] > braces[-1]):
        p = parens[-1]
        call = head[p - 1].text if p > 0 and head[p - 1].kind == "name" else None
        inner = head[p + 1:]
        given = tuple(t.text for k, t in enumerate(inner[:-1])
                      if t.kind == "name" and inner[k + 1].text == "=")
    line_start = not head or head[-1].kind == "newline" or head[-1].text in "{}"
    starts = [k for k, t in enumerate(head) if t.kind == "newline"]
    line = tuple(t.text for t in head[starts[-1] + 1 if starts else 0:])
    parens_open = [i for i in stack if head[i].text != "{"]
    return Context(block, call, line_start and call is None, given, prefix, line,
                   _statement_word(head, parens_open))


def component_named(name: str, kinds=KINDS) -> Optional[Component]:
    """The catalog entry called ``name`` (the first kind that has one)."""
    for kind in kinds:
        found = REGISTRY.get(kind, name)
        if found is not None:
            return found
    return None
