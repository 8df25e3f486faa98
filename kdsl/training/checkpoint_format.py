"""The content of a run checkpoint (``checkpoint.pt``, format ``kdsl-run/2``): what it must hold,
checked before anything of it is used (:mod:`kdsl.training.rundir` writes and reads the file)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

CHECKPOINT_FORMAT = "kdsl-run/2"

DAMAGED_HINT = "a run checkpoint is written by kdsl train, not by hand; start a new run with --out or --overwrite"

# What a run checkpoint holds: key -> (accepted types, what it is)
_FIELDS: Tuple[Tuple[str, tuple, str], ...] = (
    ("spec", (str,), "text"), ("epoch", (int,), "a whole number"), ("step", (int,), "a whole number"),
    ("stage", (str,), "text"), ("distiller", (dict,), "a state dict"),
    ("optimization", (dict,), "a table of optimizer states"), ("rng", (dict,), "generator states"),
    ("teachers", (dict, type(None)), "a table of metrics"), ("history", (list,), "a list of metrics rows"),
    ("config", (dict,), "a table of settings"),
)


def checkpoint_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a run checkpoint's content (missing keys, wrong types, impossible
    counts), or None: checked before anything of it is used."""
    import torch

    for key, types, what in _FIELDS:
        if key not in state:
            return f"it has no '{key}'"
        value = state[key]
        if not isinstance(value, types) or isinstance(value, bool):
            return f"its '{key}' should be {what}, not {type(value).__name__}"
    epoch, step, history = state["epoch"], state["step"], state["history"]
    if epoch < 0 or step < 0:
        return f"its 'epoch' ({epoch}) and 'step' ({step}) must not be negative"
    if len(history) != epoch or not all(isinstance(r, dict) for r in history):
        return f"its 'history' should hold one metrics row per epoch done ({epoch}), it holds {len(history)}"
    bad = next((k for k, v in state["distiller"].items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        return f"its 'distiller' entry '{bad}' is not a tensor"
    phases = [p for ph in state["optimization"].values() for p in (ph.values() if isinstance(ph, dict) else [None])]
    if not all(isinstance(p, dict) and _optimizer_state(p.get("optimizer")) for p in phases):
        return "its 'optimization' should map each stage to its phases' optimizer states"
    from kdsl.training.metrics import EpochSumsState

    within = state.get("within")
    if within is not None and not (isinstance(within, dict) and isinstance(within.get("steps"), int)
                                   and not isinstance(within["steps"], bool) and within["steps"] >= 1
                                   and EpochSumsState.fits(within.get("sums"))):
        return "its 'within' should hold the steps done within an epoch and their loss sums"
    validations = state.get("validations")
    if validations is not None and not (isinstance(validations, list) and all(isinstance(r, dict) for r in validations)):
        return "its 'validations' should be a list of metrics rows"
    rng = state["rng"]
    if not isinstance(rng.get("torch"), torch.Tensor) or not isinstance(rng.get("python"), (list, tuple)) \
            or len(rng["python"]) != 3:
        return "its 'rng' should hold torch's and Python's generator states"
    return None


def _optimizer_state(state: Any) -> bool:
    """Whether ``state`` has the form of a torch optimizer's state dict (its values are checked by
    the optimizer that loads it)."""
    groups = state.get("param_groups") if isinstance(state, dict) else None
    return (isinstance(state.get("state") if isinstance(state, dict) else None, dict) and isinstance(groups, list)
            and bool(groups) and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups))


def from_format_1(state: Dict[str, Any]) -> Dict[str, Any]:
    """A checkpoint of the single-optimizer format: its optimizer is that of stage "main", phase
    "step" (what a spec without stages or phases runs)."""
    phase = {k: state.get(k) for k in ("optimizer", "scheduler", "scaler")}
    out = {k: v for k, v in state.items() if k not in phase}
    out.update(format=CHECKPOINT_FORMAT, stage="main", optimization={"main": {"step": phase}})
    return out
