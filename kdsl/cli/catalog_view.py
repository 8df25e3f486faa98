"""``kdsl list``: the catalog as rich tables (reads the registry; never imports torch)."""

from __future__ import annotations

from typing import List

from kdsl.catalog.builtin import GROUPS, group_of
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.types import KIND_PLURALS, KINDS, Component
from kdsl.lang.printer import value_text

# Reference frameworks whose computations options reproduce, as option docs name them.
_FRAMEWORKS = ("torchdistill", "MMRazor")


def _console():
    from kdsl.cli.render import make_console

    return make_console()


def _kind_of(word: str):
    word = word.replace("-", "_")
    for kind in KINDS:
        if word in (kind, KIND_PLURALS[kind]):
            return kind
    return None


def show_catalog(what: str) -> None:
    from rich.table import Table

    console = _console()
    kinds = list(KINDS) if what == "all" else [_kind_of(what)] if _kind_of(what) else None
    if kinds is None:
        matches = [c for c in REGISTRY.all() if c.name == what]
        if not matches:
            from kdsl.cli.errors import CliError
            from kdsl.core.suggest import did_you_mean

            names = sorted({c.name for c in REGISTRY.all()} | set(KIND_PLURALS.values()))
            raise CliError(f"nothing in the catalog is called '{what}'", "KD701",
                           hint=did_you_mean(what, names) or "try `kdsl list` for everything")
        for c in matches:
            show_entry(console, c)
        return
    for kind in kinds:
        # one table per group (logits, features, relations, ...), in the catalog's order
        groups: dict = {}
        for c in REGISTRY.all(kind):
            groups.setdefault(group_of(c), []).append(c)
        order = list(dict.fromkeys(GROUPS.values()))
        for group, entries in sorted(groups.items(), key=lambda g: (
                order.index(g[0]) if g[0] in order else len(order), g[0])):
            title = KIND_PLURALS[kind] if len(groups) == 1 else f"{KIND_PLURALS[kind]}: {group}"
            table = Table(title=title, title_justify="left", show_lines=False)
            table.add_column("name", style="bold")
            table.add_column("signature")
            table.add_column("what it is")
            for c in entries:
                table.add_row(c.name, _signature(c), c.summary)
            console.print(table)


def _signature(c: Component) -> str:
    inputs = ", ".join(p.name for p in c.inputs)
    options = ", ".join(p.name + ("" if p.required else "=" + value_text(p.default)) for p in c.options)
    return f"({inputs}{'; ' if inputs and options else ''}{options})"




def entry_lines(c: Component) -> List[str]:
    """An entry as plain lines (``kdsl list NAME`` and the language server's hover): the signature,
    the documentation with its formula, the paper, inputs, options, framework forms, shape rules."""
    lines = [f"{c.name}  ({c.kind}, {group_of(c)}, from {c.origin})", f"  {c.signature_text()}", "",
             f"  {c.summary}"]
    if c.doc and c.doc != c.summary:
        lines += [""] + [f"  {line}" for line in c.doc.strip().splitlines()]
    if c.paper:
        lines += ["", f"  paper: {c.paper}"]
    if c.inputs:
        lines += ["", "  inputs:"] + [f"    {p.signature_text()}" + (f"  {p.doc}" if p.doc else "")
                                      for p in c.inputs]
    if c.options:
        lines += ["", "  options:"] + [f"    {_option_line(c, p)}" for p in c.options]
    forms = [p for p in c.options if any(f.lower() in p.doc.lower() for f in _FRAMEWORKS)]
    if forms:
        lines += ["", "  framework forms (option: what it reproduces):"]
        lines += [f"    {p.name}: {p.doc}" for p in forms]
    if c.rules:
        lines += ["", "  shape rules:"] + [f"    {r.describe()}" for r in c.rules]
    return lines


def _option_line(c: Component, p) -> str:
    inferred = " (inferred when omitted)" if c.inferable(p.name) else ""
    notes = [p.doc] if p.doc else []
    if p.constraint is not None:
        notes.append(f"must {p.constraint.describe()}")
    return f"{p.signature_text()}{inferred}" + (f"  {'; '.join(notes)}" if notes else "")


def show_entry(console, c: Component) -> None:
    from rich.markup import escape

    lines = entry_lines(c)
    console.print(f"[bold]{escape(c.name)}[/bold]{escape(lines[0][len(c.name):])}")
    for line in lines[1:]:
        console.print(escape(line))
    console.print()
