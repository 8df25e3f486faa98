"""What the compiler hands the runtime: the one typed contract between :mod:`kdsl.compiler` and
:class:`~kdsl.runtime.distiller.Distiller` (as Jinja2's generated module exports ``root`` and
``blocks`` and nothing else). The compiler fills it in :func:`kdsl.compiler.compiler.finish`; the
runtime reads only this, never the compiler's plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Tuple

from torch import nn

from kdsl.lang import ir
from kdsl.lang.procedure import Procedure
from kdsl.runtime.deliveries import Delivery
from kdsl.runtime.interpret import BoundFunction
from kdsl.runtime.recorders import PassState, Recorder
from kdsl.runtime.terms import LossTerm

# (stage, phase) -> model -> the recorders whose entries complete its pass (it stops there)
Cuts = Dict[Tuple[str, str], Dict[str, FrozenSet[Recorder]]]


@dataclass
class Compiled:
    """A spec bound to models, ready to run.

    ``models``: every model by its spec name (frozen teachers included); ``used_teachers``: the
    teachers a record or a delivery reads, in spec order (a plain step runs only these);
    ``recorders``, ``deliveries``: installed on the models; ``connectors``: built, by name;
    ``terms``: the loss terms in declaration order; ``state``: the passes' shared state;
    ``procedure``: stages and phases, with what each phase runs; ``batch_size``: the rows
    ``noise(...)`` draws in a step without data. ``modules``, ``functions``: the module references
    and tensor functions the loss graph reads; ``scopes``: the module each ``optimize``/``freeze``
    scope names; ``inits``: ``(target, source)`` module pairs of ``init``; ``cuts``: the passes
    that stop early (:mod:`kdsl.compiler.truncate`); ``cleanups``: what closing undoes, in order;
    ``rollout``: what the ``generate`` statement asks for, bound to its model.
    """

    spec: ir.Spec
    models: Dict[str, nn.Module]
    used_teachers: List[str]
    recorders: Dict[str, Recorder]
    deliveries: List[Delivery]
    connectors: Dict[str, nn.Module]
    terms: List[LossTerm]
    state: PassState
    procedure: Procedure
    batch_size: int
    modules: Dict[ir.ModuleRef, nn.Module] = field(default_factory=dict)
    functions: Dict[ir.FunctionApply, BoundFunction] = field(default_factory=dict)
    scopes: Dict[str, nn.Module] = field(default_factory=dict)
    inits: List[Tuple[nn.Module, nn.Module]] = field(default_factory=list)
    cuts: Cuts = field(default_factory=dict)
    cleanups: List[Callable[[], None]] = field(default_factory=list)
    rollout: Any = None  # the generate statement's Rollout (kdsl.runtime.generation), or None
