"""THE table of search spaces: what may follow ``search`` in ``param NAME = VALUE search SPACE``.

``kdsl sweep`` (:mod:`kdsl.training.sweep`) draws each trial's value of a param from its space
with Optuna; the verifier checks a space's arguments (:mod:`kdsl.lang.search_check`), and the
language server's hover and completion read the entries. Torch-free and Optuna-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class SearchSpace:
    """One kind of search space. ``bounds``: it takes ``(low, high)``, both included, low below
    high (``integer``: both integers; ``log``: both above zero, drawn uniformly in log scale);
    otherwise it takes one or more literal values to choose among."""

    name: str
    signature: str
    help: str
    bounds: bool = True
    integer: bool = False
    log: bool = False


SEARCH_SPACES: Dict[str, SearchSpace] = {s.name: s for s in (
    SearchSpace("uniform", "uniform(low, high)", "a number drawn uniformly from [low, high]"),
    SearchSpace("log_uniform", "log_uniform(low, high)",
                "a number drawn uniformly in log scale from [low, high], 0 < low (learning rates, "
                "decays)", log=True),
    SearchSpace("int_uniform", "int_uniform(low, high)", "an integer drawn uniformly from low..high",
                integer=True),
    SearchSpace("choice", "choice(value, ...)", "one of the values given (numbers, strings, true/false)",
                bounds=False),
)}

# The word that starts a search space after a param's value.
SEARCH_WORD = "search"


def space_text(name: str, values: Tuple) -> str:
    """How a space with these literal arguments reads in a spec: ``uniform(1, 8)``."""
    from kdsl.core.literals import literal_text

    return f"{name}(" + ", ".join(literal_text(v) for v in values) + ")"
