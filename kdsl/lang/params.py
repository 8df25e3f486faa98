"""Params from outside the spec (#25 item 4).

A value given from outside, ``--set NAME=VALUE`` on the command line or ``params={NAME: value}``
in Python, is read as the language's literal in a source of its own: ``--set`` holds one line per
argument as it was typed, ``params=`` one line per entry as the language writes the value. So a
problem with a value is located there with a caret, as a problem in a spec file is. The verifier
then puts it in place of the spec's value (:meth:`kdsl.lang.verify.Verifier._with_params`) and
checks it as it checks the spec's own, wherever the param is used.

Search spaces, the record of a spec's params and their text are in :mod:`kdsl.lang.search_spaces`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.core.literals import literal_text
from kdsl.core.span import SourceText, Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir

SET_FLAG = "--set"  # the source name of command-line values, and their origin
PARAMS_ARG = "params="  # the same for ``kdsl.train(spec, params={...})``
_NAME = re.compile(r"[A-Za-z_]\w*\Z")

# What callers pass: the command line's NAME=VALUE texts, or Python's {NAME: value}.
GivenValues = Union[Sequence[str], Mapping[str, Any], None]


@dataclass(frozen=True)
class GivenParam:
    """A param's value given from outside the spec: ``value`` located in the source ``origin``."""

    name: str
    value: ir.Node
    name_span: Span
    origin: str


def given_params(values: GivenValues, diags: Diagnostics, sources: Dict[str, str]) -> Dict[str, GivenParam]:
    """The values read (their source text added to ``sources``); problems go to ``diags``."""
    if not values:
        return {}
    if isinstance(values, Mapping):
        origin = PARAMS_ARG
        lines = [f"{name}={literal_text(value)}" for name, value in values.items()]
    else:
        origin, lines = SET_FLAG, [str(v) for v in values]
    text = "\n".join(line.replace("\n", " ") for line in lines)
    sources[origin] = text
    source = SourceText(origin, text)
    found: Dict[str, GivenParam] = {}
    offset = 0
    for line in text.split("\n"):
        given = _read_line(source, offset, line, origin, diags)
        offset += len(line) + 1
        if given is None:
            continue
        if given.name in found:
            diags.error("KD236", f"{origin} gives '{given.name}' twice", given.name_span,
                        notes=[Note(message="first given", span=found[given.name].name_span)])
        found[given.name] = given
    return found


def _read_line(source: SourceText, offset: int, line: str, origin: str, diags) -> Optional[GivenParam]:
    from kdsl.lang.lower import Builder
    from kdsl.lang.parser import Chunk, parse_chunk

    name, eq, value = line.partition("=")
    bare = name.strip()
    if not eq or not _NAME.match(bare) or not value.strip():
        diags.error("KD236", f"{origin} takes NAME=VALUE, not '{line}'", source.span(offset, offset + max(len(line), 1)),
                    hint=f"e.g. {SET_FLAG} tau=2 (a param the spec declares, the value as the spec would write it)")
        return None
    start = offset + len(name) - len(name.lstrip())
    name_span = source.span(start, start + len(bare))
    value_at = offset + len(name) + 1
    tree, pos = parse_chunk(source, Chunk(value_at, offset + len(line), rule="value"), diags)
    if tree is None:
        return None
    return GivenParam(bare, Builder(pos, diags).expr(tree.children[0]), name_span, origin)


def apply_given(params: Sequence[ir.ParamDecl], given: Mapping[str, GivenParam],
                diags: Diagnostics) -> Dict[str, ir.ParamDecl]:
    """Each declared param that a value is given for, with that value (by name); a value for a
    param the spec does not declare is reported (KD235)."""
    names = [p.name for p in params]
    for g in given.values():
        if g.name not in names:
            hint = did_you_mean(g.name, names) or (
                "the spec's params: " + ", ".join(names) if names else
                f"the spec declares no params: add 'param {g.name} = VALUE' to it")
            diags.error("KD235", f"{g.origin} gives '{g.name}', which the spec does not declare as a param",
                        g.name_span, hint=hint)
    return {p.name: p.model_copy(update={"value": given[p.name].value, "given": given[p.name].origin})
            for p in params if p.name in given}
