"""The compiled plan: what each pass of :mod:`kdsl.compiler.compiler` finds and builds.

A :class:`Plan` starts from a :class:`Request` (the verified spec, the models given, the example
input) and is filled in pass by pass: models, then recorders and deliveries, then what the dry run
saw, then connectors and loss terms. The runtime gets only what it runs of the finished plan
(:class:`~kdsl.runtime.compiled.Compiled`, made by :func:`kdsl.compiler.compiler.hand_off`); the
:class:`~kdsl.runtime.distiller.Distiller` keeps the plan itself, unread, for the reports
(``distiller.plan``: ``kdsl explain``, ``kdsl graph``, ``kdsl check``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import torch
from torch import nn

from kdsl.catalog.shapes import TensorInfo
from kdsl.core.diagnostics import Diagnostics
from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.runtime.deliveries import Delivery
from kdsl.runtime.interpret import BoundFunction
from kdsl.lang.procedure import Procedure
from kdsl.runtime.recorders import PassState, Recorder
from kdsl.runtime.terms import LossTerm


class Skip(Exception):
    """A loss that depends on something already reported broken: not reported again."""


@dataclass
class Request:
    """What :func:`kdsl.compile` was asked: the spec, the models passed by name, the example."""

    spec: ir.Spec
    given: Dict[str, nn.Module] = field(default_factory=dict)
    example_input: Any = None
    example_batch: Dict[str, Any] = field(default_factory=dict)
    device: Optional[torch.device] = None
    truncate: bool = True  # stop passes once their records are taken (kdsl.compiler.truncate)
    compile_models: Any = False  # torch.compile the models: False, True or torch.compile's options
    load_given: frozenset = frozenset()  # passed models that still get the spec's `from` weights
    batch_size: Optional[int] = None  # rows of a generated input per step (None: the spec's)

    @property
    def dry(self) -> bool:
        """Whether there is a dry run: an example input to run the models on, or the spec's own
        ``input`` expression (a generator's output)."""
        return self.example_input is not None or self.spec.input is not None


@dataclass
class Undo:
    """What compiling installed, to undo: ``on_close`` when the distiller closes (or compiling
    fails), ``on_failure`` only when compiling fails (a passed-in model's own weights)."""

    on_close: List[Callable[[], None]] = field(default_factory=list)
    on_failure: List[Callable[[], None]] = field(default_factory=list)

    def fail(self) -> None:
        """Undo everything, newest first, as much as possible."""
        for fn in reversed(self.on_close):
            try:
                fn()
            except Exception:  # noqa: BLE001 - restore as much as possible
                pass
        self.on_close = []
        for fn in reversed(self.on_failure):
            fn()
        self.on_failure = []


@dataclass
class RecordPlan:
    """One record: its recorder, where it is installed, and what the dry run saw."""

    decl: ir.RecordDecl
    recorder: Recorder
    installed_as: str  # "forward hook on student.layer1", "patched pkg.Class.method", ...
    info: Optional[TensorInfo] = None  # the recorded tensor's shape and dtype
    description: Optional[str] = None  # what the dry run recorded, in words

    @property
    def shape_text(self) -> str:
        if self.info is not None:
            return self.info.describe()
        return self.description or "-"


@dataclass
class DeliveryPlan:
    """One delivery and the places (owner, attribute) patched for it."""

    decl: ir.DeliverDecl
    delivery: Delivery
    places: List[Tuple[Any, str]] = field(default_factory=list)


@dataclass
class ParamView:
    """A delivered or recorded dry-run value whose storage is a parameter's (a slice of a
    positional table, a weight returned as is): under FSDP2 it lives only while the parameter's
    unit is gathered (:func:`kdsl.training.sharding.param_view_errors`)."""

    what: str  # "the delivery of method ...", "record 'pos'"
    span: Optional[Span]
    model: str
    param: str  # the parameter's name in the model


@dataclass
class ConnectorPlan:
    """A connector as built: its options (``inferred`` names those kdsl filled in) and shapes."""

    decl: ir.ConnectorDecl
    options: Dict[str, Any]
    inferred: List[str]
    input: Optional[TensorInfo] = None
    output: Optional[TensorInfo] = None
    module: Optional[nn.Module] = None  # None if building it failed


@dataclass
class LossPlan:
    """A loss as built: inputs bound to their expressions, the order they are evaluated in,
    their shapes on the dry run, the loss's options and its term."""

    decl: ir.LossDecl
    bound: Dict[str, Any]  # input name -> expression
    order: List[str]  # input names in evaluation order
    inputs: Dict[str, Optional[TensorInfo]] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    inferred: List[str] = field(default_factory=list)
    complete: bool = False  # every input had a value on the dry run
    values: Dict[str, Any] = field(default_factory=dict)  # dry-run values; dropped when finished
    term: Optional[LossTerm] = None


@dataclass
class PassCut:
    """Whether one model's pass in one phase stops early (:mod:`kdsl.compiler.truncate`):
    ``needed`` are the records whose entries complete it; ``reason`` says why it runs in full
    (``None``: it stops as soon as the last of ``needed`` is recorded)."""

    stage: str
    phase: str
    model: str
    needed: List[str] = field(default_factory=list)
    reason: Optional[str] = None

    @property
    def stops(self) -> bool:
        return self.reason is None


@dataclass
class Plan:
    """Everything compiling a spec against models found and built, filled in pass by pass."""

    request: Request
    diags: Diagnostics
    undo: Undo = field(default_factory=Undo)
    state: PassState = field(default_factory=PassState)
    models: Dict[str, nn.Module] = field(default_factory=dict)
    records: Dict[str, RecordPlan] = field(default_factory=dict)
    deliveries: List[DeliveryPlan] = field(default_factory=list)
    values: Dict[str, Any] = field(default_factory=dict)  # record -> dry-run value (dropped when finished)
    dry_failed: bool = False  # a model failed on the example input: no loss graph is built
    broken: Set[str] = field(default_factory=set)  # records and connectors already reported
    rollout: Any = None  # the generate statement bound to its model (kdsl.runtime.generation.Rollout)
    connectors: Dict[str, ConnectorPlan] = field(default_factory=dict)
    losses: Dict[str, LossPlan] = field(default_factory=dict)
    modules: Dict[ir.ModuleRef, nn.Module] = field(default_factory=dict)  # module refs in loss inputs
    functions: Dict[ir.FunctionApply, BoundFunction] = field(default_factory=dict)
    procedure: Procedure = field(default_factory=Procedure)
    scopes: Dict[str, nn.Module] = field(default_factory=dict)  # "student.layer1" -> its module
    inits: List[Tuple[ir.InitDecl, nn.Module, nn.Module]] = field(default_factory=list)  # (decl, target, source)
    ran: List[str] = field(default_factory=list)  # models the dry run ran, in order
    param_views: List[ParamView] = field(default_factory=list)  # values the dry run saw share a parameter's storage
    reach: Optional[Set[str]] = None  # packages method/function targets may lie in (kdsl.compiler.reach)
    cuts: Dict[Tuple[str, str, str], PassCut] = field(default_factory=dict)  # (stage, phase, model)
    compiled: List[str] = field(default_factory=list)  # models torch.compile'd (kdsl.compiler.compile_models)
    compile_note: Optional[str] = None  # why compiling was not done (KD708), in words

    @property
    def spec(self) -> ir.Spec:
        return self.request.spec

    @property
    def recorders(self) -> Dict[str, Recorder]:
        return {name: r.recorder for name, r in self.records.items()}

    @property
    def connector_modules(self) -> Dict[str, nn.Module]:
        """Built connectors by name, in the order they were built."""
        return {name: c.module for name, c in self.connectors.items() if c.module is not None}

    @property
    def terms(self) -> List[LossTerm]:
        """Loss terms in declaration order (the losses that built)."""
        return [p.term for p in self.losses.values() if p.term is not None]

    @property
    def used_teachers(self) -> List[str]:
        """Teachers a record or a delivery reads, in spec order: the only ones a plain step runs."""
        used = {r.model for r in self.spec.records} | {d.source for d in self.spec.deliveries}
        return [t.name for t in self.spec.teachers if t.name in used]

    @property
    def record_shapes(self) -> Dict[str, Optional[TensorInfo]]:
        """Record name -> shape and dtype seen on the dry run (``None``: not a tensor, or no dry run)."""
        return {name: r.info for name, r in self.records.items()}
