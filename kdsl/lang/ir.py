"""The IR of a spec: frozen pydantic nodes, one tagged union for expressions and one for statements.

Every node carries its source span (``span``, and ``*_span`` fields for its parts); spans take part
in serialization but not in equality, so a spec equals its JSON round trip and two specs that say
the same thing in different places are equal.

Expressions (:mod:`kdsl.lang.ir_expr`, re-exported here) come in two layers: the builder's
syntactic forms and the resolved forms the compiler consumes; a verified spec holds only resolved
expressions in its losses, connectors, functions and ``input``.
"""

from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import Field, PrivateAttr

from kdsl.core.span import Span
from kdsl.lang.ir_expr import (Attr, BatchRef, Bound, Call, ConnectorApply, Const, Expr, FunctionApply,  # noqa: F401
                               Item, Keyword, ListExpr, ModelApply, ModuleRef, Name, Node, RecordRef,
                               Scalar, Select, bound)
from kdsl.lang.ir_expr import META_FIELDS as META_FIELDS

# ------------------------------------------------------------------------------ record targets
class ModulePath(Node):
    """``student.layer2.0.bn1``: a model name and a path of attribute names and indices."""

    kind: Literal["module"] = "module"
    model: str
    path: Tuple[str, ...] = ()
    model_span: Optional[Span] = Field(default=None, repr=False)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return ".".join((self.model,) + self.path)


class MethodRef(Node):
    """``method "pkg.module:Class.method"`` (``in model`` for records)."""

    kind: Literal["method"] = "method"
    ref: str
    model: Optional[str] = None
    ref_span: Optional[Span] = Field(default=None, repr=False)
    model_span: Optional[Span] = Field(default=None, repr=False)

    def __str__(self) -> str:
        return f'method "{self.ref}"'


class FunctionRef(Node):
    """``function "pkg.module:function"`` (``in model`` for records)."""

    kind: Literal["function"] = "function"
    ref: str
    model: Optional[str] = None
    ref_span: Optional[Span] = Field(default=None, repr=False)
    model_span: Optional[Span] = Field(default=None, repr=False)

    def __str__(self) -> str:
        return f'function "{self.ref}"'


RecordTarget = Annotated[Union[ModulePath, MethodRef, FunctionRef], Field(discriminator="kind")]
CallableTarget = Annotated[Union[MethodRef, FunctionRef], Field(discriminator="kind")]


# ------------------------------------------------------------------------------ statements
class Factory(Node):
    """``model("pkg.module:factory", k=v)``."""

    ref: str
    args: Tuple[Expr, ...] = ()
    kwargs: Tuple[Keyword, ...] = ()
    ref_span: Optional[Span] = Field(default=None, repr=False)


class ModelDecl(Node):
    """A model of the run. A ``generator`` makes the models' input (data-free distillation); it is
    trained only where an ``optimize`` names it."""

    kind: Literal["model"] = "model"
    role: Literal["student", "teacher", "generator"]
    name: str
    factory: Optional[Factory] = None
    checkpoint: Optional[str] = None
    trainable: bool = False
    # `train_mode`: a frozen teacher run in train mode (BatchNorm on batch statistics), still untrained
    train_mode: bool = False
    override: bool = False
    name_span: Optional[Span] = Field(default=None, repr=False)
    checkpoint_span: Optional[Span] = Field(default=None, repr=False)

    @property
    def frozen(self) -> bool:
        return self.role == "teacher" and not self.trainable


class RecordDecl(Node):
    kind: Literal["record"] = "record"
    name: str
    what: Literal["output", "input", "param"]
    target: RecordTarget
    input: Union[int, str, None] = None
    invocation: Union[int, Literal["all"]] = 0
    override: bool = False
    name_span: Optional[Span] = Field(default=None, repr=False)

    @property
    def model(self) -> Optional[str]:
        return self.target.model

    def describe(self) -> str:
        if self.what == "param":
            return f"param {self.target}"
        sel = ""
        if self.what == "input":
            sel = f' "{self.input}"' if isinstance(self.input, str) else f" {self.input}"
        where = str(self.target) if isinstance(self.target, ModulePath) else \
            f"{self.target} in {self.target.model}"
        inv = "" if self.invocation == 0 else (
            " all calls" if self.invocation == "all" else f" call {self.invocation}")
        return f"{self.what}{sel} of {where}{inv}"


class DeliverDecl(Node):
    kind: Literal["deliver"] = "deliver"
    target: CallableTarget
    source: str
    dest: str
    keep: Optional[int] = None
    source_span: Optional[Span] = Field(default=None, repr=False)
    dest_span: Optional[Span] = Field(default=None, repr=False)
    keep_span: Optional[Span] = Field(default=None, repr=False)


class ConnectorDecl(Node):
    """``connector para = paraphraser(rate=0.5) [from "para.pt"] [frozen]``."""

    kind: Literal["connector"] = "connector"
    name: str
    call: Call
    checkpoint: Optional[str] = None
    frozen: bool = False
    override: bool = False
    name_span: Optional[Span] = Field(default=None, repr=False)
    checkpoint_span: Optional[Span] = Field(default=None, repr=False)

    @property
    def component(self) -> str:
        return self.call.func


class LossDecl(Node):
    kind: Literal["loss"] = "loss"
    name: str
    call: Call
    weight: Optional[Expr] = None  # a Const number, a Call to a schedule, or None for 1
    override: bool = False
    name_span: Optional[Span] = Field(default=None, repr=False)

    @property
    def component(self) -> str:
        return self.call.func


class TrainSetting(Node):
    key: str
    value: Expr
    key_span: Optional[Span] = Field(default=None, repr=False)


class TrainDecl(Node):
    kind: Literal["train"] = "train"
    settings: Tuple[TrainSetting, ...] = ()

    def get(self, key: str) -> Optional[TrainSetting]:
        return next((s for s in self.settings if s.key == key), None)


class ParamScope(Node):
    """A set of parameters ``optimize`` and ``freeze`` name: a whole model (``student``), a module of
    one (``student.layer1``) or a connector (``regressor``). The parser writes every target as
    ``what="module"``; the verifier settles ``what`` once names are known."""

    what: Literal["model", "module", "connector"] = "module"
    name: str
    path: Tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.name,) + self.path)


class OptimizeDecl(Node):
    """``optimize student.conv1, regressor [with adam(lr=0.1)]``: what a stage or phase trains, and
    its own optimizer (the train block's when absent)."""

    kind: Literal["optimize"] = "optimize"
    targets: Tuple[ParamScope, ...]
    optimizer: Optional[Call] = None


class FreezeDecl(Node):
    """``freeze student.layer1`` / ``freeze para``: never trained (in the enclosing stage, or the
    whole run at the top level)."""

    kind: Literal["freeze"] = "freeze"
    target: ParamScope


class InitDecl(Node):
    """``init student.layer2 from teacher.layer2``: copy parameters and buffers by module path when
    the run starts (shapes must match)."""

    kind: Literal["init"] = "init"
    target: ModulePath
    source: ModulePath


class InputDecl(Node):
    """``input = gen(noise(100))``: each step's model input comes from this expression, not from
    the data (the data, when given, is used for evaluation only)."""

    kind: Literal["input"] = "input"
    value: Expr


class GenerateDecl(Node):
    """``generate from MODEL(options)``: the batch's prompts completed by MODEL during training
    (:mod:`kdsl.lang.generation`); ``call.func`` names the model, its keywords are the options."""

    kind: Literal["generate"] = "generate"
    call: Call

    @property
    def model(self) -> str:
        return self.call.func


class ParamDecl(Node):
    """``param tau = 4``: a named literal of the spec. Its name stands wherever a literal may
    (``tau=tau``, ``* alpha``, ``epochs = n``, a model option); the verifier puts the value in its
    place, so the verified spec's expressions hold the literal."""

    kind: Literal["param"] = "param"
    name: str
    value: Expr
    override: bool = False
    # ``search uniform(1, 8)``: the space ``kdsl sweep`` draws the value from (kdsl.catalog.search)
    search: Optional[Call] = None
    # where a value given from outside the spec came from ("--set", "params="); None: the spec's
    given: Optional[str] = None
    name_span: Optional[Span] = Field(default=None, repr=False)


class PhaseDecl(Node):
    """``phase NAME [repeat N] { ... }``: phases run in order inside every step, each ``repeat``
    times, each with its own losses, ``optimize`` and optimizer state."""

    kind: Literal["phase"] = "phase"
    name: str
    repeat: int = 1
    statements: Tuple["PhaseStatement", ...] = ()
    name_span: Optional[Span] = Field(default=None, repr=False)
    repeat_span: Optional[Span] = Field(default=None, repr=False)


class StageDecl(Node):
    """``stage NAME [epochs N] [batch_size B] { ... }``: a run is a sequence of stages; a stage
    without ``epochs`` takes the rest of the run, one without ``batch_size`` the run's batch size.
    Statements outside any stage hold in every stage."""

    kind: Literal["stage"] = "stage"
    name: str
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    statements: Tuple["StageStatement", ...] = ()
    name_span: Optional[Span] = Field(default=None, repr=False)
    epochs_span: Optional[Span] = Field(default=None, repr=False)
    batch_size_span: Optional[Span] = Field(default=None, repr=False)


PhaseStatement = Annotated[Union[LossDecl, OptimizeDecl, FreezeDecl], Field(discriminator="kind")]
StageStatement = Annotated[Union[LossDecl, OptimizeDecl, FreezeDecl, PhaseDecl], Field(discriminator="kind")]


class IncludeDecl(Node):
    kind: Literal["include"] = "include"
    path: str
    path_span: Optional[Span] = Field(default=None, repr=False)


class ImportDecl(Node):
    kind: Literal["import"] = "import"
    module: str
    module_span: Optional[Span] = Field(default=None, repr=False)


Statement = Annotated[
    Union[ModelDecl, RecordDecl, DeliverDecl, ConnectorDecl, LossDecl, TrainDecl, IncludeDecl,
          ImportDecl, OptimizeDecl, FreezeDecl, InitDecl, InputDecl, ParamDecl, PhaseDecl, StageDecl,
          GenerateDecl],
    Field(discriminator="kind"),
]

class Spec(Node):
    """A verified spec: includes spliced in, overrides applied, names resolved.

    ``statements`` is the effective program in order. The views (``models``, ``records``, ...)
    select from it.
    """

    file: str
    statements: Tuple[Statement, ...] = ()
    includes: Tuple[str, ...] = ()
    _sources: Dict[str, str] = PrivateAttr(default_factory=dict)
    _warnings: List[Any] = PrivateAttr(default_factory=list)

    def _of(self, kind: type) -> List[Any]:
        return [s for s in self.statements if isinstance(s, kind)]

    @property
    def models(self) -> List[ModelDecl]:
        return self._of(ModelDecl)

    @property
    def student(self) -> Optional[ModelDecl]:
        return next((m for m in self.models if m.role == "student"), None)

    @property
    def teachers(self) -> List[ModelDecl]:
        return [m for m in self.models if m.role == "teacher"]

    @property
    def records(self) -> List[RecordDecl]:
        return self._of(RecordDecl)

    @property
    def deliveries(self) -> List[DeliverDecl]:
        return self._of(DeliverDecl)

    @property
    def connectors(self) -> List[ConnectorDecl]:
        return self._of(ConnectorDecl)

    @property
    def losses(self) -> List[LossDecl]:
        """Losses at the top level (they hold in every stage and phase-less step)."""
        return self._of(LossDecl)

    @property
    def all_losses(self) -> List[LossDecl]:
        """Every loss of the spec, those inside stages and phases included, in source order."""
        out: List[LossDecl] = []

        def collect(statements) -> None:
            for s in statements:
                if isinstance(s, LossDecl):
                    out.append(s)
                elif isinstance(s, (StageDecl, PhaseDecl)):
                    collect(s.statements)

        collect(self.statements)
        return out

    @property
    def stages(self) -> List[StageDecl]:
        return self._of(StageDecl)

    @property
    def phases(self) -> List[PhaseDecl]:
        """Phases at the top level (they run in every stage)."""
        return self._of(PhaseDecl)

    @property
    def generators(self) -> List[ModelDecl]:
        return [m for m in self.models if m.role == "generator"]

    @property
    def input(self) -> Optional[InputDecl]:
        found = self._of(InputDecl)
        return found[0] if found else None

    @property
    def generation(self) -> Optional[GenerateDecl]:
        found = self._of(GenerateDecl)
        return found[0] if found else None

    @property
    def params(self) -> List[ParamDecl]:
        return self._of(ParamDecl)

    @property
    def imports(self) -> List[ImportDecl]:
        return self._of(ImportDecl)

    @property
    def train(self) -> TrainDecl:
        found = self._of(TrainDecl)
        return found[0] if found else TrainDecl()

    def model(self, name: str) -> Optional[ModelDecl]:
        return next((m for m in self.models if m.name == name), None)

    def record(self, name: str) -> Optional[RecordDecl]:
        return next((r for r in self.records if r.name == name), None)

    def connector(self, name: str) -> Optional[ConnectorDecl]:
        return next((c for c in self.connectors if c.name == name), None)

    @property
    def warnings(self) -> List[Any]:
        """Warning diagnostics found while loading (the spec loaded, so there are no errors)."""
        return list(self._warnings)

    @property
    def sources(self) -> Dict[str, str]:
        """Source texts read while loading (file name -> text), for rendering diagnostics."""
        return self._sources

# Validators are built on first use, forward references resolved then (kdsl.core.frozen).
