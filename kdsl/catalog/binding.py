"""Binding call arguments to a component's signature (shared by the static checker and the builders)."""

from __future__ import annotations

import math
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


# --------------------------------------------------------------------------------------------
# Checking literal values: types and constraints (the one place, for `kdsl check` and builders)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValueProblem:
    """A literal that does not fit its parameter: ``KD309`` (wrong type) or ``KD312`` (out of
    the declared range); ``item`` is the index of the offending list item, if it is one."""

    code: str
    message: str
    item: Optional[int] = None
    hint: Optional[str] = None


def value_problem(component: Component, param: Param, value: Any) -> Optional[ValueProblem]:
    """The problem with the literal ``value`` for ``param``: its type first, then its declared
    :class:`~kdsl.catalog.types.Constraint`; None when it fits."""
    if isinstance(value, tuple):
        value = list(value)  # Python callers pass tuples where a spec writes lists
    subject = f"'{param.name}' of '{component.name}'"
    if not param.type.accepts(value):
        return ValueProblem("KD309", f"{subject} must be {param.type.describe()}, got "
                            f"{literal_text(value)}", hint=_choice_hint(param, value))
    infinite = next((x for x in (value if isinstance(value, list) else [value])
                     if isinstance(x, float) and not math.isfinite(x)), None)
    if infinite is not None:  # 1e400 reads as inf: no option means it (issue #26.12)
        return ValueProblem("KD312", f"{subject} must be a finite number, got {literal_text(infinite)}")
    if param.constraint is None or value is None:
        return None
    violation = param.constraint.violation(value)
    if violation is None:
        return None
    where = "" if violation.item is None else f" (item {violation.item + 1})"
    return ValueProblem("KD312", f"{subject} {violation.requirement}, got "
                        f"{literal_text(violation.value)}{where}", item=violation.item)


def _choice_hint(param: Param, value: Any) -> Optional[str]:
    words = [c for c in param.type.choices if isinstance(c, str)]
    if not isinstance(value, str) or not words:
        return None
    from kdsl.core.suggest import did_you_mean

    return did_you_mean(value, words)


def type_problem(component: Component, param: Param, value: Any) -> Optional[str]:
    """The message of :func:`value_problem` (type or constraint), or None."""
    problem = value_problem(component, param, value)
    return problem.message if problem else None


def _is_literal(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_literal(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def instantiate(component: Component, *args: Any, **options: Any) -> Any:
    """Build ``component``'s implementation from ``options``, after checking every literal
    option against its declared type and constraint.

    The builders (``kdsl.build_loss``, the compiler) call this rather than the implementation
    directly, so that options inferred from shapes or given from Python meet the same rules as
    those `kdsl check` saw in a spec. A problem raises ``ValueError`` with the message (and
    hint) of :func:`value_problem`; ``args`` go first to the implementation (an optimizer's
    parameters)."""
    for key, value in options.items():
        param = component.option(key)
        if param is None or param.type.name == "module" or not _is_literal(value):
            continue
        problem = value_problem(component, param, value)
        if problem is not None:
            raise ValueError(problem.message + (f"; {problem.hint}" if problem.hint else ""))
    return component.load()(*args, **options)
