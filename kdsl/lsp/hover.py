"""Hover: a catalog entry (``kdsl list NAME``'s text), a train setting (meaning, default, allowed
values), an option of a call, a search space (``search uniform(1, 8)``), and a declared name (its statement; for a record, what it records)."""

from __future__ import annotations

from typing import List, Optional

from kdsl.catalog.search import SEARCH_SPACES, SEARCH_WORD
from kdsl.catalog.settings import SPEC_SETTINGS
from kdsl.cli.catalog_view import entry_lines
from kdsl.lang import ir
from kdsl.lang.header_words import HEADER_WORDS, MODEL_FLAGS
from kdsl.lang.statements import RECORDER_KINDS, UnhandledStatement, recorder_kind
from kdsl.lang.generation import OPTIONS as GENERATE_OPTIONS
from kdsl.lsp.complete import generate_option_text, search_doc, setting_doc
from kdsl.lsp.context import component_named, context_at
from kdsl.lsp.names import Declaration, Index
from kdsl.lsp.text import Token, after_dot, line_tokens


GENERATE_DOC = ("`generate from MODEL(options)`: MODEL completes the batch's prompts during training "
                "(on-policy or sequence-level distillation); the losses then score prompt + completion. "
                "Options: " + ", ".join(GENERATE_OPTIONS) + ".")


def _code(lines: List[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```"


def _declaration(d: Declaration, index: Index) -> str:
    source = index.texts.get(d.span.file, "")
    node = d.node
    start = index.lines[d.span.file].offset(node.span.line - 1, node.span.column - 1) if source else 0
    end = index.lines[d.span.file].offset(node.span.end_line - 1, node.span.end_column - 1) if source else 0
    text = f"({d.kind}) {d.name}, declared at {d.span}\n\n" + _code([source[start:end]])
    if isinstance(node, ir.RecordDecl):
        try:
            kind = recorder_kind(node)
            text += f"\n\nrecords the {kind.name}: e.g. `{RECORDER_KINDS[kind.name].example}`"
        except UnhandledStatement:
            pass
    return text


def hover_text(text: str, offset: int, index: Index) -> Optional[str]:
    toks = line_tokens(text, offset)  # the previous line's tokens tell nothing here
    i = next((k for k, t in enumerate(toks) if t.kind == "name" and t.start <= offset <= t.end), None)
    if i is None:
        return None
    tok: Token = toks[i]
    nxt = toks[i + 1].text if i + 1 < len(toks) else ""
    previous = toks[i - 1].text if i > 0 else ""
    if tok.text in SEARCH_SPACES and (previous == SEARCH_WORD or nxt == "(" and component_named(tok.text) is None):
        return search_doc(SEARCH_SPACES[tok.text])
    if tok.text == SEARCH_WORD and previous != "param":
        return f"`{SEARCH_WORD} SPACE`: the space `kdsl sweep` draws this param's value from: " + \
            ", ".join(s.signature for s in SEARCH_SPACES.values())
    if nxt == "(":
        entry = component_named(tok.text)
        if entry is not None:
            return _code(entry_lines(entry))
    ctx = context_at(text, tok.start)
    if tok.text == "generate" and nxt == "from" and ctx.line_start:
        return GENERATE_DOC
    if ctx.statement == "generate":
        if nxt == "=" and tok.text in GENERATE_OPTIONS:
            return f"`{generate_option_text(tok.text)}`\n\n{GENERATE_OPTIONS[tok.text].doc}"
    if nxt == "=" and ctx.call is not None:
        entry = component_named(ctx.call)
        option = entry.option(tok.text) if entry is not None else None
        if option is not None:
            return f"`{option.signature_text()}`" + (f"\n\n{option.doc}" if option.doc else "")
    if nxt == "=" and ctx.block == "train" and ctx.call is None and tok.text in SPEC_SETTINGS:
        return _code(setting_doc(SPEC_SETTINGS[tok.text]).splitlines())
    word = _flag_or_header_word(text, tok) if ctx.call is None else None
    if word is not None:
        return word
    declared = index.find(tok.text)
    if declared is not None and not after_dot(toks, i):
        return _declaration(declared, index)
    return None


def _flag_or_header_word(text: str, tok: Token) -> Optional[str]:
    """A model flag (``train_mode``) after a model's declaration, or a word of a ``stage`` or
    ``phase`` header (``batch_size``): its meaning."""
    line = text[text.rfind("\n", 0, tok.start) + 1:tok.start].split()
    if not line or "=" in text[tok.end:tok.end + 2]:
        return None
    if tok.text in MODEL_FLAGS and line[0] in ("student", "teacher", "generator", "override"):
        return MODEL_FLAGS[tok.text]
    if tok.text in HEADER_WORDS and line[0] in ("stage", "phase"):
        return HEADER_WORDS[tok.text]
    return None
