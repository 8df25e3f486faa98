"""Params from outside the spec, and params' search spaces (#25 items 4 and 5).

A value given from outside, ``--set NAME=VALUE`` on the command line or ``params={NAME: value}``
in Python, is read as the language's literal in a source of its own: ``--set`` holds one line per
argument as it was typed, ``params=`` one line per entry as the language writes the value. So a
problem with a value is located there with a caret, as a problem in a spec file is. The verifier
then puts it in place of the spec's value (:meth:`kdsl.lang.verify.Verifier._with_params`) and
checks it as it checks the spec's own, wherever the param is used.

``param tau = 4 search uniform(1, 8)`` declares the space ``kdsl sweep`` searches;
:func:`check_search` checks it against :data:`kdsl.catalog.search.SEARCH_SPACES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from kdsl.catalog.search import SEARCH_SPACES, space_text
from kdsl.core.diagnostics import Diagnostics, Note
from kdsl.core.literals import literal_text
from kdsl.core.span import SourceText, Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal

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


def given_note(decl: ir.ParamDecl) -> Optional[Note]:
    """The note that points at where a param's value was given, when it came from outside."""
    if decl.given is None:
        return None
    return Note(message=f"its value given by {decl.given}", span=decl.value.span)


# ------------------------------------------------------------------------------ search spaces
def check_search(decl: ir.ParamDecl, diags: Diagnostics) -> None:
    """A param's ``search`` space: a known kind, literal arguments that fit it (KD237, KD238),
    and the spec's own value inside it (KD239), so that the sweep's first trial, the spec as
    written, is a point of the space."""
    call = decl.search
    if call is None:
        return
    space = SEARCH_SPACES.get(call.func) if call.method is None else None
    if space is None:
        diags.error("KD237", f"unknown search space '{call.func}'", call.func_span or call.span,
                    hint=did_you_mean(call.func, list(SEARCH_SPACES))
                    or "search spaces: " + ", ".join(s.signature for s in SEARCH_SPACES.values()))
        return
    values = _space_values(call, space, diags)
    if values is None:
        return
    problem = _space_problem(space, values)
    if problem is not None:
        diags.error("KD238", f"{space_text(call.func, values)}: {problem}", call.span,
                    hint=f"{space.signature}: {space.help}")
        return
    ok, value = try_literal(decl.value)
    if ok and decl.given is None and not contains(call.func, values, value):
        diags.error("KD239", f"the value of param '{decl.name}', {literal_text(value)}, lies outside its "
                    f"search space {space_text(call.func, values)}", decl.value.span,
                    hint="a sweep's first trial is the spec as written: give a value inside the space")


def _space_values(call: ir.Call, space, diags) -> Optional[Tuple]:
    if call.kwargs:
        diags.error("KD237", f"{call.func}() takes no keyword arguments", call.kwargs[0].span,
                    hint=space.signature)
        return None
    values = []
    for arg in call.args:
        ok, value = try_literal(arg)
        if not ok or isinstance(value, list):
            diags.error("KD237", f"the arguments of {call.func}() are literal numbers, strings or "
                        "true/false", arg.span, hint=space.signature)
            return None
        values.append(value)
    wanted = "two arguments, low and high" if space.bounds else "at least one value"
    if (space.bounds and len(values) != 2) or not values:
        diags.error("KD237", f"{call.func}() takes {wanted}, not {len(values)}", call.span,
                    hint=f"{space.signature}: {space.help}")
        return None
    return tuple(values)


def _space_problem(space, values: Tuple) -> Optional[str]:
    if not space.bounds:
        return "a value is given twice" if len(set(map(repr, values))) < len(values) else None
    low, high = values
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric:
        return "low and high must be numbers"
    if space.integer and not all(isinstance(v, int) for v in values):
        return "low and high must be integers"
    if not low < high:
        return "low must be below high"
    if space.log and not low > 0:
        return "a log scale needs low above 0"
    return None


def contains(name: str, values: Tuple, value: Any) -> bool:
    """Whether ``value`` is a point of the space ``name(values)``."""
    space = SEARCH_SPACES[name]
    if not space.bounds:
        return any(type(value) is type(v) and value == v or _same_number(value, v) for v in values)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if space.integer and not isinstance(value, int):
        return False
    return values[0] <= value <= values[1]


def _same_number(a: Any, b: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)) and a == b


def search_values(decl: ir.ParamDecl) -> Tuple:
    """The literal arguments of a verified param's search space."""
    return tuple(try_literal(a)[1] for a in decl.search.args)


# ------------------------------------------------------------------------------ the record
def param_record(spec: ir.Spec) -> Dict[str, Dict[str, Any]]:
    """Each param of a verified spec: its value and where it came from ("spec", "--set",
    "params="), and its search space when it declares one (summary.json, explain)."""
    record: Dict[str, Dict[str, Any]] = {}
    for p in spec.params:
        entry = {"value": try_literal(p.value)[1], "source": p.given or "spec"}
        if p.search is not None:
            entry["search"] = space_text(p.search.func, search_values(p))
        record[p.name] = entry
    return record


def params_text(spec: ir.Spec) -> List[str]:
    """``tau = 2 (--set; search uniform(1, 8))`` for each param: what explain shows."""
    out = []
    for name, entry in param_record(spec).items():
        extra = [entry["source"]] if entry["source"] != "spec" else []
        extra += [f"search {entry['search']}"] if "search" in entry else []
        out.append(f"{name} = {literal_text(entry['value'])}" + (f" ({'; '.join(extra)})" if extra else ""))
    return out
