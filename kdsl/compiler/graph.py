"""``kdsl graph``: the loss graph (model -> record -> connector -> loss -> weighted total) as Mermaid
or Graphviz DOT source, drawn from the spec alone, with shapes when a dry run supplied them."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.printer import expr_text, weight_text


class Graph:
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


def build(spec: ir.Spec, shapes: Optional[Dict[str, object]] = None) -> Graph:
    shapes = shapes or {}
    g = Graph()
    for m in spec.models:
        g.node(m.name, f"{m.role} {m.name}" if m.name != m.role else m.name, "model")
    for r in spec.records:
        info = shapes.get(r.name)
        label = r.name + (f" {info.describe()}" if info is not None else "")
        rid = g.node(r.name, label, "record")
        g.edge(g.node(r.model, r.model, "model"), rid, _record_label(r))

    def value(expr) -> Optional[str]:
        if isinstance(expr, ir.RecordRef):
            return g.node(expr.record, expr.record, "record")
        if isinstance(expr, ir.BatchRef):
            return g.node(f"batch_{expr.field}", f"batch.{expr.field}", "batch")
        if isinstance(expr, ir.Select):
            return value(expr.value)
        if isinstance(expr, ir.ConnectorApply):
            text = expr_text(expr)
            cid = g.node(text, f"{expr.connector} ({spec.connector(expr.connector).component})", "connector")
            for a in list(expr.args) + [k.value for k in expr.kwargs]:
                src = value(a)
                if src:
                    g.edge(src, cid)
            return cid
        if isinstance(expr, ir.ListExpr):
            for i in expr.items:
                value(i)
        return None

    total = g.node("total", "total loss", "total")
    for loss in spec.losses:
        lid = g.node(loss.name, f"{loss.name}: {loss.component}", "loss")
        for a in list(loss.call.args) + [k.value for k in loss.call.kwargs]:
            src = value(a)
            if src:
                g.edge(src, lid)
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
