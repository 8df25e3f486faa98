"""Shape rules: what a component needs of the shapes of its tensor inputs.

Rules are declared as data in the catalog (no torch here) and checked by the compiler on the
shapes that the dry run records. A failed rule is a message naming both shapes; the caller
locates it in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Mapping, Optional, Sequence, Tuple, Union

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class TensorInfo:
    """What the checker knows of one input: its shape and dtype name (``"float32"``, ``"int64"``)."""

    shape: Shape
    dtype: str = "float32"

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith(("int", "uint")) or self.dtype == "bool"

    def describe(self) -> str:
        return shape_text(self.shape)


def _dims_text(dims: Sequence[int]) -> str:
    return ", ".join(str(d) for d in dims)


def shape_text(shape: Sequence[int]) -> str:
    """``[2, 3, 4]``: a shape as the messages write it."""
    return f"[{_dims_text(shape)}]"


def not_integer(name: str, info: TensorInfo, what: str) -> Optional[str]:
    """The message for input ``name`` that must hold integer ``what`` (class indices, token
    labels) but does not; None when it does."""
    if info.is_integer:
        return None
    return f"'{name}' must hold integer {what}, got dtype {info.dtype} with shape {info.describe()}"


@dataclass(frozen=True)
class ShapeRule:
    """Base class. ``names`` are the inputs the rule looks at."""

    @property
    def names(self) -> Tuple[str, ...]:
        """The inputs the rule looks at: the values of its ``str`` fields, in order."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.type in ("str", str))

    def check(self, infos: Mapping[str, TensorInfo]) -> Optional[str]:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover
        raise NotImplementedError

    def under(self, options: Mapping[str, object]) -> "ShapeRule":
        """The rule that holds for a component built with ``options`` (most rules: itself)."""
        return self

    def partner_dim(self, name: str, dim: int) -> Optional[Tuple[str, int]]:
        """If this rule ties dimension ``dim`` of ``name`` to a dimension of another input,
        return that input and dimension (used to infer a connector's output channels)."""
        return None


@dataclass(frozen=True)
class PairRule(ShapeRule):
    """A rule between two inputs ``a`` and ``b`` whose tied dimensions correspond one to one, so
    that a connector's output size can be inferred from its partner (``ties`` says which)."""

    a: str
    b: str

    def ties(self, dim: int) -> bool:
        return True

    def partner_dim(self, name, dim):
        if not self.ties(dim):
            return None
        if name == self.a:
            return (self.b, dim)
        if name == self.b:
            return (self.a, dim)
        return None


@dataclass(frozen=True)
class SameShape(PairRule):
    """``a`` and ``b`` have the same shape; with the boolean option ``unless`` set, they need only
    broadcast against each other (:class:`Broadcastable`)."""

    unless: Optional[str] = None

    def check(self, infos):
        sa, sb = infos[self.a].shape, infos[self.b].shape
        if sa != sb:
            return (f"'{self.a}' and '{self.b}' must have the same shape, "
                    f"got {infos[self.a].describe()} and {infos[self.b].describe()}"
                    + (f" (or set {self.unless}=true: they broadcast)"
                       if self.unless and broadcast_shape(sa, sb) is not None else ""))
        return None

    def describe(self):
        return f"{self.a} and {self.b} have the same shape"

    def under(self, options: Mapping[str, object]) -> ShapeRule:
        return Broadcastable(self.a, self.b) if self.unless and options.get(self.unless) else self


def broadcast_shape(a: Shape, b: Shape) -> Optional[Shape]:
    """The shape torch broadcasts ``a`` and ``b`` to (dimensions aligned from the last, each
    pair equal or one of them 1), or None when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            return None
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


@dataclass(frozen=True)
class Broadcastable(PairRule):
    """``a`` and ``b`` broadcast against each other as torch broadcasts tensors (BYOT's feature
    loss compares them so); no size of one is inferred from the other."""

    def check(self, infos):
        if broadcast_shape(infos[self.a].shape, infos[self.b].shape) is None:
            return (f"'{self.a}' and '{self.b}' must broadcast against each other, "
                    f"got {infos[self.a].describe()} and {infos[self.b].describe()}")
        return None

    def describe(self):
        return f"{self.a} and {self.b} broadcast (torch's rules)"

    def ties(self, dim: int) -> bool:
        return False


_DIM_WORDS = {(0,): "batch size", (1,): "channels", (-1,): "last dimension"}


@dataclass(frozen=True)
class SameDims(PairRule):
    """Dimensions ``dims`` of ``a`` and ``b`` agree. ``dims`` may be ``"spatial"`` (all from 2 on)."""

    dims: Tuple[int, ...] = (0,)
    spatial: bool = False

    def _select(self, shape: Shape):
        if self.spatial:
            return tuple(shape[2:])
        try:
            return tuple(shape[d] for d in self.dims)
        except IndexError:
            return None

    def what(self) -> str:
        if self.spatial:
            return "spatial size"
        return _DIM_WORDS.get(self.dims, f"size in dimension(s) {_dims_text(self.dims)}")

    def check(self, infos):
        ia, ib = infos[self.a], infos[self.b]
        da, db = self._select(ia.shape), self._select(ib.shape)
        if da is None or db is None or da != db:
            return (f"'{self.a}' and '{self.b}' must have the same {self.what()}, "
                    f"got {ia.describe()} and {ib.describe()}")
        return None

    def describe(self):
        return f"{self.a} and {self.b} have the same {self.what()}"

    def ties(self, dim: int) -> bool:
        return not self.spatial and dim in self.dims


@dataclass(frozen=True)
class Rank(ShapeRule):
    """``a`` has one of the ranks ``ranks`` (number of dimensions)."""

    a: str
    ranks: Tuple[int, ...]

    def _ranks_text(self):
        if len(self.ranks) == 1:
            return f"{self.ranks[0]} dimensions"
        return " or ".join(str(r) for r in self.ranks) + " dimensions"

    def check(self, infos):
        info = infos[self.a]
        if len(info.shape) not in self.ranks:
            return f"'{self.a}' must have {self._ranks_text()}, got {info.describe()}"
        return None

    def describe(self):
        return f"{self.a} has {self._ranks_text()}"


@dataclass(frozen=True)
class LabelsFor(ShapeRule):
    """``labels`` are class indices for ``logits``: integer dtype, shape ``logits.shape[:1]``
    (or, for dense prediction, ``logits.shape`` without dimension 1)."""

    labels: str
    logits: str
    probabilities: bool = False  # class probabilities of the logits' shape also do (soft labels)

    def check(self, infos):
        lab, log = infos[self.labels], infos[self.logits]
        if self.probabilities and not lab.is_integer and tuple(lab.shape) == tuple(log.shape):
            return None
        wrong_dtype = not_integer(self.labels, lab, "class indices")
        if wrong_dtype:
            return wrong_dtype
        dense = tuple(log.shape[:1]) + tuple(log.shape[2:])
        if tuple(lab.shape) != dense:
            return (f"'{self.labels}' must have shape {shape_text(dense)} to label "
                    f"'{self.logits}' of shape {log.describe()}, got {lab.describe()}")
        return None

    def describe(self):
        return f"{self.labels} holds a class index per row of {self.logits}"


# Short constructors used by the catalog.
def same_shape(a: str, b: str, unless: Optional[str] = None) -> SameShape:
    return SameShape(a, b, unless)


def same_batch(a: str, b: str) -> SameDims:
    return SameDims(a, b, (0,))


def same_channels(a: str, b: str) -> SameDims:
    return SameDims(a, b, (1,))


def same_spatial(a: str, b: str) -> SameDims:
    return SameDims(a, b, (), spatial=True)


def rank(a: str, *ranks: int) -> Rank:
    return Rank(a, tuple(ranks))


def labels_for(labels: str, logits: str, probabilities: bool = False) -> LabelsFor:
    return LabelsFor(labels, logits, probabilities)


class Problem(str):
    """A failed rule's message, with the code it is reported with: a rule's ``check`` returns a
    plain message for KD505 (the shape mismatch), or a Problem for a more particular code."""

    code: str

    def __new__(cls, message: str, code: str = "KD505") -> "Problem":
        problem = super().__new__(cls, message)
        problem.code = code
        return problem

    @property
    def message(self) -> str:
        return str(self)


def check_rules(rules: Sequence[ShapeRule], infos: Mapping[str, TensorInfo]) -> List[Problem]:
    """Every rule that fails; rules about inputs with no known shape are skipped."""
    problems = []
    for rule in rules:
        if all(n in infos for n in rule.names):
            found: Union[str, Problem, None] = rule.check(infos)
            if found:
                problems.append(found if isinstance(found, Problem) else Problem(found))
    return problems
