"""``kdsl graph``: the loss graph (model -> record -> connector -> loss -> weighted total) as Mermaid
or Graphviz DOT source, drawn from the spec alone, with shapes when a dry run supplied them."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.printer import expr_text, weight_text
from kdsl.lang.visit import Visitor


class Graph:
    """Nodes (id -> label, kind) and labelled edges, in the order they were added."""

    def __init__(self) -> None:
        self.nodes: Dict[str, Tuple[str, str]] = {}  # id -> (label, kind)
        self.edges: List[Tuple[str, str, str]] = []

    def node(self, key: str, label: str, kind: str) -> str:
        nid = re.sub(r"\W", "_", f"{kind}_{key}")
        self.nodes.setdefault(nid, (label, kind))
        return nid

    def edge(self, a: str, b: str, label: str = "") -> None:
        if (a, b, label) not in self.edges:
            self.edges.append((a, b, label))


def _record_label(r: ir.RecordDecl) -> str:
    """What a record takes from its model, without repeating the model's name."""
    text = r.describe()
    prefix = f" of {r.model}"
    if isinstance(r.target, ir.ModulePath):
        text = text.replace(prefix + ".", " of ", 1) if r.target.path else text.replace(prefix, "", 1)
    else:
        text = text.replace(f" in {r.model}", "", 1)
    return text


class _Sources(Visitor[Optional[str]]):
    """The graph node an expression's value comes from (adding connector nodes on the way)."""

    def __init__(self, spec: ir.Spec, g: Graph) -> None:
        self.spec, self.g = spec, g

    def visit_record_ref(self, expr: ir.RecordRef) -> str:
        return self.g.node(expr.record, expr.record, "record")

    def visit_batch_ref(self, expr: ir.BatchRef) -> str:
        return self.g.node(f"batch_{expr.field}", f"batch.{expr.field}", "batch")

    def visit_select(self, expr: ir.Select) -> Optional[str]:
        return self.visit(expr.value)

    def visit_connector_apply(self, expr: ir.ConnectorApply) -> str:
        cid = self.g.node(expr_text(expr), f"{expr.connector} ({self.spec.connector(expr.connector).component})",
                          "connector")
        self.edges_into(cid, list(expr.args) + [k.value for k in expr.kwargs])
        return cid

    def visit_list(self, expr: ir.ListExpr) -> None:
        for item in expr.items:
            self.visit(item)
        return None

    def generic_visit(self, node) -> None:
        return None  # constants and module references: no node of their own

    def edges_into(self, target: str, exprs) -> None:
        for e in exprs:
            src = self.visit(e)
            if src:
                self.g.edge(src, target)


def build(spec: ir.Spec, plan=None) -> Graph:
    """The loss graph of ``spec``; with a compiled plan (``distiller.plan``), records show the
    shapes the dry run saw."""
    shapes = plan.record_shapes if plan is not None else {}
    g = Graph()
    for m in spec.models:
        g.node(m.name, f"{m.role} {m.name}" if m.name != m.role else m.name, "model")
    for r in spec.records:
        info = shapes.get(r.name)
        label = r.name + (f" {info.describe()}" if info is not None else "")
        rid = g.node(r.name, label, "record")
        g.edge(g.node(r.model, r.model, "model"), rid, _record_label(r))
    sources = _Sources(spec, g)
    total = g.node("total", "total loss", "total")
    for loss in spec.losses:
        lid = g.node(loss.name, f"{loss.name}: {loss.component}", "loss")
        sources.edges_into(lid, list(loss.call.args) + [k.value for k in loss.call.kwargs])
        g.edge(lid, total, "x " + weight_text(loss.weight))
    for d in spec.deliveries:
        did = g.node(d.target.ref, f"deliver {d.target.ref}", "delivery")
        g.edge(g.node(d.source, d.source, "model"), did, "teacher pass")
        g.edge(did, g.node(d.dest, d.dest, "model"), "student pass")
    return g


_MERMAID_SHAPE = {"model": ("[", "]"), "record": ("([", "])"), "batch": ("[/", "/]"),
                  "connector": ("[[", "]]"), "loss": ("{{", "}}"), "total": ("((", "))"),
                  "delivery": (">", "]")}
_DOT_SHAPE = {"model": "box3d", "record": "ellipse", "batch": "parallelogram", "connector": "box",
              "loss": "hexagon", "total": "doublecircle", "delivery": "cds"}


def _esc(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(g: Graph) -> str:
    lines = ["flowchart LR"]
    for nid, (label, kind) in g.nodes.items():
        a, b = _MERMAID_SHAPE[kind]
        lines.append(f'    {nid}{a}"{_esc(label)}"{b}')
    for a, b, label in g.edges:
        lines.append(f'    {a} -->|"{_esc(label)}"| {b}' if label else f"    {a} --> {b}")
    return "\n".join(lines) + "\n"


def to_dot(g: Graph) -> str:
    lines = ["digraph kdsl {", "    rankdir=LR;", '    node [fontname="Helvetica", fontsize=10];',
             '    edge [fontname="Helvetica", fontsize=9];']
    for nid, (label, kind) in g.nodes.items():
        lines.append(f'    {nid} [label="{_esc(label)}", shape={_DOT_SHAPE[kind]}];')
    for a, b, label in g.edges:
        lines.append(f'    {a} -> {b}' + (f' [label="{_esc(label)}"];' if label else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"
