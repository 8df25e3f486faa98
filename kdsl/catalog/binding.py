"""Binding call arguments to a component's signature (shared by the static checker and the builders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.catalog.types import Component, Param
from kdsl.core.literals import literal_text

# --------------------------------------------------------------------------------------------
# Binding arguments to a signature (shared by the static checker and the builders)
# --------------------------------------------------------------------------------------------
@dataclass
class ArgProblem:
    """A problem binding arguments; ``index`` is the positional index or the keyword's position."""

    code: str
    message: str
    keyword: Optional[str] = None
    position: Optional[int] = None
    hint: Optional[str] = None


@dataclass
class Binding:
    inputs: Dict[str, Any] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    problems: List[ArgProblem] = field(default_factory=list)


def bind(component: Component, args: Sequence[Any], kwargs: Sequence[Tuple[str, Any]], *,
         inputs: bool, inferable_ok: bool = True) -> Binding:
    """Bind positional ``args`` and keyword ``kwargs`` (a list, to see duplicates) to the
    component's inputs (``inputs=True``: a loss call or a connector application) or options.

    For a loss call, positional arguments fill the inputs and keywords may name inputs or
    options. For a declaration of options, positional arguments fill the options in order.
    Values are opaque here; type checks are the caller's.
    """
    from kdsl.core.suggest import did_you_mean

    out = Binding()
    slots: List[Param] = list(component.inputs) if inputs else list(component.options)
    target = out.inputs if inputs else out.options
    what = "input" if inputs else "option"
    for i, value in enumerate(args):
        if i >= len(slots):
            names = ", ".join(p.name for p in slots) or "none"
            out.problems.append(ArgProblem(
                "KD306", f"'{component.name}' takes {len(slots)} positional "
                f"{what}{'' if len(slots) == 1 else 's'} ({names}), got {len(args)}", position=i))
            break
        target[slots[i].name] = value
    seen: Dict[str, int] = {}
    for j, (key, value) in enumerate(kwargs):
        if key in seen:
            out.problems.append(ArgProblem("KD307", f"'{key}' is given twice", keyword=key, position=j))
            continue
        seen[key] = j
        if inputs and component.input(key) is not None:
            dest = out.inputs
        elif component.option(key) is not None or (component.open_options and not inputs):
            dest = out.options
        else:
            known = [p.name for p in component.inputs] if inputs else []
            known += [p.name for p in component.options]
            out.problems.append(ArgProblem(
                "KD305", f"'{component.name}' has no {'input or option' if inputs else 'option'} "
                f"'{key}'", keyword=key, position=j, hint=did_you_mean(key, known)
                or (f"it takes {', '.join(known)}" if known else f"it takes no {what}s")))
            continue
        if key in dest:
            out.problems.append(ArgProblem(
                "KD307", f"'{key}' is given both by position and by keyword", keyword=key, position=j))
            continue
        dest[key] = value
    required_inputs = [p for p in component.inputs if p.required] if inputs else []
    for p in required_inputs:
        if p.name not in out.inputs:
            out.problems.append(ArgProblem(
                "KD308", f"'{component.name}' is missing its input '{p.name}'"))
    for p in component.options:
        if p.required and p.name not in out.options:
            if inferable_ok and component.inferable(p.name):
                continue
            if inputs and component.kind == "connector":
                continue  # connector options are bound at its declaration, not its application
            out.problems.append(ArgProblem(
                "KD308", f"'{component.name}' is missing its option '{p.name}'"
                + (f" ({p.doc})" if p.doc else "")))
    return out


def type_problem(component: Component, param: Param, value: Any) -> Optional[str]:
    """A message if the literal ``value`` does not fit ``param``'s type, else None."""
    if param.type.accepts(value):
        return None
    return (f"'{param.name}' of '{component.name}' must be {param.type.describe()}, "
            f"got {literal_text(value)}")
