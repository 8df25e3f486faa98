"""Learning-rate schedules as a spec writes them: the train block's ``lr_schedule = ...`` (one
schedule's call, or ``chain(piece(...), piece(...))``), and a stage's or phase's own, given with
its optimizer: ``optimize student with sgd(lr=0.1, lr_schedule=poly(power=0.9))``.

The verifier checks each piece against the catalog like any other call (:func:`verify_chain`,
:func:`verify_schedule`); the run reads a chain as ``("chain", {"schedules": [(name, options),
...]})`` and a single schedule as ``(name, options)`` (:func:`schedule_value`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from kdsl.catalog.binding import bind
from kdsl.catalog.lr_schedules import CHAIN
from kdsl.catalog.registry import REGISTRY
from kdsl.lang import ir
from kdsl.lang.literal import literal_value

PIECES_MODULE = "kdsl.components.lr_schedules:"
OWN_SCHEDULE = "lr_schedule"  # the keyword of an `optimize ... with` optimizer that gives its schedule


def is_chain(value) -> bool:
    return isinstance(value, ir.Call) and value.func == CHAIN and value.method is None


def is_piece(component) -> bool:
    """Whether an lr-schedule entry can stand in a chain (the per-epoch ``constant``, ``cosine`` and
    ``step`` with their warm-up cannot: they set the lr whole)."""
    return isinstance(component.impl, str) and component.impl.startswith(PIECES_MODULE)


def verify_chain(verifier, call: ir.Call, use) -> None:
    """Each argument of ``chain(...)`` is a schedule piece's call, checked as a call of the catalog."""
    diags = verifier.diags
    if call.kwargs or not call.args:
        at = call.kwargs[0].span if call.kwargs else call.span
        diags.error("KD214", "chain(...) takes the schedules it runs, in order, and nothing else", at,
                    hint='e.g. chain(linear_factor(start_factor=0.001, end=500, unit="iter"), cosine_annealing())')
        return
    for arg in call.args:
        if not isinstance(arg, ir.Call) or is_chain(arg):
            diags.error("KD214", "each argument of chain(...) is one schedule's call", arg.span,
                        hint='e.g. multistep(milestones=[8, 11])')
            continue
        component = verifier._component("lr_schedule", arg, "KD310", "lr schedule")
        if component is None:
            continue
        if not is_piece(component):
            diags.error("KD214", f"'{arg.func}' sets the whole run's lr and cannot be chained", arg.func_span,
                        hint="chain the per-step schedules (`kdsl list lr-schedules`): "
                        "linear_factor, multistep, cosine_annealing, ...")
            continue
        verifier._bind_call(component, arg, use, inputs=False, resolve=False)


def call_options(call: ir.Call) -> Tuple[str, Dict[str, Any]]:
    """``(name, options)`` of a verified schedule call, its options bound to the entry's names."""
    args = [literal_value(a) for a in call.args]
    kwargs = [(k.name, literal_value(k.value)) for k in call.kwargs]
    return call.func, bind(REGISTRY.get("lr_schedule", call.func), args, kwargs, inputs=False).options


def chain_value(call: ir.Call) -> Tuple[str, Dict[str, List[Tuple[str, Dict[str, Any]]]]]:
    return CHAIN, {"schedules": [call_options(arg) for arg in call.args]}


def schedule_value(value: ir.Call) -> Tuple[str, Dict[str, Any]]:
    """The run's value of a verified schedule: a chain's, or a single call's ``(name, options)``."""
    return chain_value(value) if is_chain(value) else call_options(value)


def split_own_schedule(call: ir.Call) -> Tuple[ir.Call, Optional[ir.Keyword]]:
    """An ``optimize ... with`` optimizer call without its ``lr_schedule=`` keyword, and that keyword."""
    own = next((k for k in call.kwargs if k.name == OWN_SCHEDULE), None)
    if own is None:
        return call, None
    return call.model_copy(update={"kwargs": tuple(k for k in call.kwargs if k is not own)}), own


def verify_schedule(verifier, value, use) -> None:
    """A schedule given as a value (``lr_schedule=`` of an optimizer): one call, or a chain."""
    if is_chain(value):
        verify_chain(verifier, value, use)
        return
    if not isinstance(value, ir.Call):
        verifier.diags.error("KD214", "lr_schedule= takes a schedule's call", value.span,
                             hint="e.g. lr_schedule=cosine_annealing() or lr_schedule=chain(...)")
        return
    component = verifier._component("lr_schedule", value, "KD310", "lr schedule")
    if component is not None:
        verifier._bind_call(component, value, use, inputs=False, resolve=False)
