"""The IR's expressions and the base of every node (re-exported by :mod:`kdsl.lang.ir`).

Expressions come in two layers. The builder produces the syntactic forms (``name``, ``attr``,
``item``, ``call``, ``const``, ``list``); the verifier resolves names and produces the forms the
compiler consumes (``record_ref``, ``module_ref``, ``batch_ref``, ``connector_apply``,
``function_apply``, ``model_apply``, ``select``).
"""

from __future__ import annotations

from typing import Annotated, Any, Dict, Literal, Optional, Tuple, Union

from pydantic import Field

from kdsl.core.frozen import FrozenModel
from kdsl.core.span import Span


# Fields that carry what a later stage learned about a node (torch.fx's ``node.meta``): serialized
# with it, but never compared, hashed, fingerprinted or walked, like its spans.
# ``given``: where a param's value came from (--set, params=); the value itself is compared.
META_FIELDS = ("bound", "given")


def _carried_only(key: str) -> bool:
    return key == "span" or key.endswith("_span") or key in META_FIELDS


def _compared_fields(node: "Node"):
    return [k for k in type(node).model_fields if not _carried_only(k)]


class Node(FrozenModel):
    span: Optional[Span] = Field(default=None, repr=False)

    def __eq__(self, other: Any) -> bool:
        if type(self) is not type(other):
            return False
        return all(getattr(self, k) == getattr(other, k) for k in _compared_fields(self))

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + tuple(_hashable(getattr(self, k))
                                                    for k in _compared_fields(self)))

    def canonical_json(self) -> str:
        """The node as JSON without its spans, keys sorted: equal nodes give equal text (the
        trainer fingerprints specs with it)."""
        import json

        def strip(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: strip(x) for k, x in v.items() if not _carried_only(k)}
            if isinstance(v, list):
                return [strip(x) for x in v]
            return v

        return json.dumps(strip(self.model_dump(mode="json")), sort_keys=True)


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


Scalar = Union[bool, int, float, str, None]


# ------------------------------------------------------------------------------ expressions
class Const(Node):
    """A literal: number, string, ``true``/``false``, ``none``."""

    kind: Literal["const"] = "const"
    value: Scalar


class ListExpr(Node):
    kind: Literal["list"] = "list"
    items: Tuple["Expr", ...] = ()


class Name(Node):
    """A bare name before resolution: a record, connector, model, or ``batch``."""

    kind: Literal["name"] = "name"
    name: str


class Attr(Node):
    """``value.attr`` before resolution (``x.logits``, ``student.layer1``, ``student.layer2.0``)."""

    kind: Literal["attr"] = "attr"
    value: "Expr"
    attr: str


class Item(Node):
    """``value[key]`` before resolution."""

    kind: Literal["item"] = "item"
    value: "Expr"
    key: Union[int, str]


class Keyword(Node):
    name: str
    value: "Expr"


class Bound(Node):
    """A call's arguments bound by name to its component's parameters, as the verifier bound them
    (:func:`kdsl.catalog.binding.bind`): ``inputs`` and ``options`` in the order they were given,
    positional ones first. The verified IR carries one on every call of a catalog component (loss,
    connector, schedule, optimizer and train-setting calls, connector and function applications)
    so that later stages read the binding instead of binding again."""

    inputs: Tuple[Keyword, ...] = ()
    options: Tuple[Keyword, ...] = ()

    @property
    def input_values(self) -> Dict[str, Any]:
        return {k.name: k.value for k in self.inputs}

    @property
    def option_values(self) -> Dict[str, Any]:
        return {k.name: k.value for k in self.options}

    @classmethod
    def of(cls, inputs: Dict[str, Any], options: Dict[str, Any]) -> "Bound":
        """From a binding's name -> expression maps."""
        return cls(inputs=tuple(Keyword(name=n, value=v) for n, v in inputs.items()),
                   options=tuple(Keyword(name=n, value=v) for n, v in options.items()))


def bound(node: "Node") -> Bound:
    """The verifier's binding of a call's arguments (see :class:`Bound`); a node that did not
    come out of the verifier has none, which is a bug in its caller."""
    found = getattr(node, "bound", None)
    if found is None:
        raise ValueError(f"{node!r} carries no binding: only a verified spec (kdsl.load, kdsl.loads) "
                         "can be compiled")
    return found


class Call(Node):
    """``func(args, k=v)``: a loss, connector, schedule, function or connector application, by
    context. ``para.encode(x)`` is a call with ``func="para"`` and ``method="encode"`` (only a
    declared connector's methods can be applied; the verifier makes it a ConnectorApply)."""

    kind: Literal["call"] = "call"
    func: str
    args: Tuple["Expr", ...] = ()
    kwargs: Tuple[Keyword, ...] = ()
    method: Optional[str] = None
    bound: Optional[Bound] = Field(default=None, repr=False)  # set by the verifier
    func_span: Optional[Span] = Field(default=None, repr=False)
    method_span: Optional[Span] = Field(default=None, repr=False)

    def keyword(self, name: str) -> Optional[Keyword]:
        return next((k for k in self.kwargs if k.name == name), None)


class RecordRef(Node):
    kind: Literal["record_ref"] = "record_ref"
    record: str


class ModuleRef(Node):
    """A module (or the whole model when ``path`` is empty) of a declared model."""

    kind: Literal["module_ref"] = "module_ref"
    model: str
    path: Tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        return ".".join((self.model,) + self.path)


class BatchRef(Node):
    """A field of the batch: ``batch.target``, ``batch.index``, or any keyword given to ``step``."""

    kind: Literal["batch_ref"] = "batch_ref"
    field: str


class ConnectorApply(Node):
    """``p1(x)``, or ``para.encode(x)`` when ``method`` names one of the connector's methods."""

    kind: Literal["connector_apply"] = "connector_apply"
    connector: str
    args: Tuple["Expr", ...] = ()
    kwargs: Tuple[Keyword, ...] = ()
    method: Optional[str] = None
    bound: Optional[Bound] = Field(default=None, repr=False)  # set by the verifier (not for a method)


class FunctionApply(Node):
    """A tensor function of the catalog (kind ``function``): ``detach(x)``, ``argmax(t, dim=1)``,
    ``noise(100)``. Produced by the verifier from a :class:`Call` whose name is a function."""

    kind: Literal["function_apply"] = "function_apply"
    function: str
    args: Tuple["Expr", ...] = ()
    kwargs: Tuple[Keyword, ...] = ()
    bound: Optional[Bound] = Field(default=None, repr=False)  # set by the verifier


class ModelApply(Node):
    """Running a declared model on values: ``gen(noise(100))`` (only in ``input = ...``)."""

    kind: Literal["model_apply"] = "model_apply"
    model: str
    args: Tuple["Expr", ...] = ()
    kwargs: Tuple[Keyword, ...] = ()


class Select(Node):
    """Element (``x[0]``, ``x["k"]``) or attribute (``x.logits``) selection on a resolved value."""

    kind: Literal["select"] = "select"
    value: "Expr"
    key: Union[int, str]
    by: Literal["item", "attr"] = "item"


Expr = Annotated[
    Union[Const, ListExpr, Name, Attr, Item, Call, RecordRef, ModuleRef, BatchRef,
          ConnectorApply, FunctionApply, ModelApply, Select],
    Field(discriminator="kind"),
]

# No model_rebuild() here: the forward references ("Expr") resolve when a class's validator is
# first built, which the loader never needs (kdsl.core.frozen).
