"""Params' search spaces (#25 item 5) and the record of a spec's params (#25 item 4).

``param tau = 4 search uniform(1, 8)`` declares the space ``kdsl sweep`` searches;
:func:`check_search` checks it against :data:`kdsl.catalog.search.SEARCH_SPACES`.
:func:`param_record` says each param's value and where it came from (summary.json, explain).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from kdsl.catalog.search import SEARCH_SPACES, space_text
from kdsl.core.diagnostics import Diagnostics
from kdsl.core.literals import literal_text
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir
from kdsl.lang.literal import try_literal


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
    if not all(math.isfinite(v) for v in values):
        return "low and high must be finite numbers"
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
