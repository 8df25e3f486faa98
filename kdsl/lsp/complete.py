"""Completion: statement keywords (the statement table), settings in a train block (the settings
table), catalog entries with their inputs and required options as a snippet, option names inside
a call, the names the spec declares, and after a param's value ``search`` and the search spaces
(the search-space table, :mod:`kdsl.catalog.search`)."""

from __future__ import annotations

from typing import List

from lsprotocol import types as lsp

from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.search import SEARCH_SPACES, SEARCH_WORD, SearchSpace
from kdsl.catalog.settings import SPEC_SETTINGS, Setting
from kdsl.catalog.types import Component
from kdsl.core.literals import literal_text
from kdsl.lang.generation import OPTIONS as GENERATE_OPTIONS
from kdsl.lang.statements import BLOCK_CONTENTS, OVERRIDE, STATEMENTS
from kdsl.lsp.context import Context, component_named
from kdsl.lsp.names import Index

_KIND = {"loss": lsp.CompletionItemKind.Function, "connector": lsp.CompletionItemKind.Class,
         "function": lsp.CompletionItemKind.Function, "schedule": lsp.CompletionItemKind.Function,
         "optimizer": lsp.CompletionItemKind.Function, "lr_schedule": lsp.CompletionItemKind.Function,
         "batch_transform": lsp.CompletionItemKind.Function}
_NAME_KIND = {"model": lsp.CompletionItemKind.Module, "record": lsp.CompletionItemKind.Variable,
              "connector": lsp.CompletionItemKind.Class, "loss": lsp.CompletionItemKind.Value,
              "param": lsp.CompletionItemKind.Constant}


def component_snippet(c: Component) -> str:
    """``kl_div(${1:preds_S}, ${2:preds_T})``: inputs and required options as tab stops."""
    parts = [f"${{{n}:{p.name}}}" for n, p in enumerate(c.inputs, 1)]
    required = [p for p in c.options if p.required]
    parts += [f"{p.name}=${{{n}:{p.name}}}" for n, p in enumerate(required, len(parts) + 1)]
    return f"{c.name}({', '.join(parts)})"


def _keywords(block: str | None) -> List[lsp.CompletionItem]:
    if block is None:
        words = [(w, e.word) for e in STATEMENTS.values() for w in e.keywords]
        words.append((OVERRIDE, "replaces a declaration"))
    else:
        words = [(w, e.word) for e in STATEMENTS.values() for w in e.keywords
                 if w in BLOCK_CONTENTS.get(block, ())]
    return [lsp.CompletionItem(label=w, kind=lsp.CompletionItemKind.Keyword, detail=d) for w, d in words]


def setting_doc(s: Setting) -> str:
    """A setting's meaning, default and allowed values."""
    allowed = s.type.describe() if s.type is not None else f"a call ({s.call})"
    default = s.default if s.type is None else literal_text(s.default)
    if s.type is None and s.default is not None:
        default = f"{s.default[0]}()"
    lines = [f"{s.name}: {allowed}", "", s.help, "", f"default: {default}"]
    bounds = [f"at least {s.minimum:g}" if s.minimum is not None else "",
              f"at most {s.maximum:g}" if s.maximum is not None else "",
              "a positive number" if s.positive else ""]
    if any(bounds):
        lines.append("allowed: " + ", ".join(b for b in bounds if b))
    if s.example:
        lines.append(f"example: {s.example}")
    return "\n".join(lines)


def _settings(given: set) -> List[lsp.CompletionItem]:
    return [lsp.CompletionItem(label=s.name, kind=lsp.CompletionItemKind.Property,
                               detail=s.type.describe() if s.type is not None else s.call,
                               documentation=setting_doc(s), insert_text=f"{s.name} = ")
            for s in SPEC_SETTINGS.values() if s.name not in given]


_component_items: tuple = ((), [])  # the catalog's entries, and the items made of them


def _components() -> List[lsp.CompletionItem]:
    """An item per catalog entry, made again only when the catalog changed (a spec's ``import``
    registers more): most completions offer them all."""
    global _component_items
    entries = REGISTRY.all()
    kept, items = _component_items
    if len(kept) != len(entries) or any(a is not b for a, b in zip(kept, entries)):
        items = [lsp.CompletionItem(label=c.name, kind=_KIND[c.kind], detail=f"{c.kind}: {c.summary}",
                                    insert_text=component_snippet(c),
                                    insert_text_format=lsp.InsertTextFormat.Snippet)
                 for c in entries]
        _component_items = (tuple(entries), items)
    return list(items)


def _options(call: str, given: tuple) -> List[lsp.CompletionItem]:
    c = component_named(call)
    if c is None:
        return []
    return [lsp.CompletionItem(label=f"{p.name}=", kind=lsp.CompletionItemKind.Field,
                               detail=p.signature_text(), documentation=p.doc or None,
                               insert_text=f"{p.name}=", sort_text=f"0{p.name}")
            for p in c.options if p.name not in given]


def _generate_options(given: tuple) -> List[lsp.CompletionItem]:
    return [lsp.CompletionItem(label=f"{name}=", kind=lsp.CompletionItemKind.Field,
                               detail=generate_option_text(name), documentation=o.doc,
                               insert_text=f"{name}=", sort_text=f"0{name}")
            for name, o in GENERATE_OPTIONS.items() if name not in given]


def generate_option_text(name: str) -> str:
    """``temperature: float = 1.0``: an option of ``generate`` as its signature."""
    o = GENERATE_OPTIONS[name]
    return f"{name}: {o.kind.__name__} = {o.default if o.default is not None else 'none'}"


def _names(index: Index) -> List[lsp.CompletionItem]:
    return [lsp.CompletionItem(label=d.name, kind=_NAME_KIND.get(d.kind), detail=d.kind)
            for d in index.names()]


def search_doc(space: SearchSpace) -> str:
    """What a search space draws (hover and completion)."""
    return f"{space.signature}: {space.help} (kdsl sweep searches it)"


def _search_spaces() -> List[lsp.CompletionItem]:
    return [lsp.CompletionItem(label=s.name, kind=lsp.CompletionItemKind.Function, detail="search space",
                               documentation=search_doc(s), insert_text=s.signature.replace("...", "").replace(", )", ")"))
            for s in SEARCH_SPACES.values()]


def completions(ctx: Context, index: Index, settings_given: set) -> List[lsp.CompletionItem]:
    if ctx.line_start and ctx.block == "train":
        return _settings(settings_given)
    if ctx.line_start:
        return _keywords(ctx.block)
    line = ctx.line[1:] if ctx.line[:1] == ("override",) else ctx.line
    if line[:1] == ("param",) and ctx.call is None and line[-1] == SEARCH_WORD:  # param tau = 4 search |
        return _search_spaces()
    if line[:1] == ("param",) and ctx.call is None and "=" in line[:-1] and SEARCH_WORD not in line:
        return [lsp.CompletionItem(label=SEARCH_WORD, kind=lsp.CompletionItemKind.Keyword,
                                   detail="the space kdsl sweep searches for this param's value")] + _names(index)
    items = _names(index) + _components()
    if ctx.call is not None and ctx.statement == "generate":
        items = _generate_options(ctx.given) + items
    elif ctx.call is not None:
        items = _options(ctx.call, ctx.given) + items
    return items
