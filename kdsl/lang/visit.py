"""Walking the IR: one visitor that every pass uses, so a new node kind is added in one place.

``Visitor.visit(node)`` calls ``visit_<kind>`` (the node's ``kind`` literal, or its class name in
snake case for nodes without one: ``keyword``, ``factory``, ``train_setting``, ``spec``), falling back
to ``generic_visit``, which visits the children in field order. ``children`` and ``walk`` serve
passes that only need to find nodes (the records an expression reads, say).
"""

from __future__ import annotations

import re
from typing import Any, Generic, Iterator, Type, TypeVar

from kdsl.lang.ir import Node
from kdsl.lang.ir_expr import META_FIELDS

T = TypeVar("T")
N = TypeVar("N", bound=Node)

_KIND_CACHE: dict = {}


def kind_of(node: Node) -> str:
    """The name ``Visitor`` dispatches on."""
    kind = getattr(node, "kind", None)
    if isinstance(kind, str):
        return kind
    cls = type(node)
    if cls not in _KIND_CACHE:
        _KIND_CACHE[cls] = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return _KIND_CACHE[cls]


def children(node: Node) -> Iterator[Node]:
    """The nodes directly below ``node``, in field order (tuples of nodes flattened)."""
    for name in type(node).model_fields:
        if name in META_FIELDS:
            continue  # what a stage learned about the node, not a part of it
        value = getattr(node, name)
        if isinstance(value, Node):
            yield value
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    yield item


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every node below it, pre-order."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(list(children(current))))


def find(node: Node, cls: Type[N]) -> Iterator[N]:
    """Every node of class ``cls`` at or below ``node``, pre-order."""
    return (n for n in walk(node) if isinstance(n, cls))


class Visitor(Generic[T]):
    """Dispatch by node kind; subclasses define ``visit_<kind>`` for the kinds they care about."""

    def visit(self, node: Any) -> T:
        method = getattr(self, "visit_" + kind_of(node), None)
        if method is None:
            return self.generic_visit(node)
        return method(node)

    def generic_visit(self, node: Any) -> Any:
        for child in children(node):
            self.visit(child)
        return None
