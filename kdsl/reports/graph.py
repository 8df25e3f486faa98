"""``kdsl graph``: the loss graph (model -> record -> connector -> loss -> weighted total) as Mermaid
or Graphviz DOT source, drawn from the spec alone, with shapes when a dry run supplied them.

With stages or phases, each phase is a subgraph inside its stage's subgraph, holding its losses
and its own total; a generator's ``input`` is a node feeding the models."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.printer import expr_text, weight_text
from kdsl.lang.visit import Visitor, find


class Graph:
    """Nodes (id -> label, kind) and labelled edges, in the order they were added; clusters
    (stages, phases) as (id, label, parent id) with the nodes in each."""

    def __init__(self) -> None:
        self.nodes: Dict[str, Tuple[str, str]] = {}  # id -> (label, kind)
        self.edges: List[Tuple[str, str, str]] = []
        self.clusters: List[Tuple[str, str, Optional[str]]] = []
        self.member: Dict[str, str] = {}  # node id -> cluster id

    def node(self, key: str, label: str, kind: str, cluster: Optional[str] = None) -> str:
        nid = re.sub(r"\W", "_", f"{kind}_{key}")
        self.nodes.setdefault(nid, (label, kind))
        if cluster is not None:
            self.member.setdefault(nid, cluster)
        return nid

    def cluster(self, key: str, label: str, parent: Optional[str] = None) -> str:
        cid = re.sub(r"\W", "_", f"cluster_{key}")
        if all(c[0] != cid for c in self.clusters):
            self.clusters.append((cid, label, parent))
        return cid

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
        name = expr.connector + (f".{expr.method}" if expr.method else "")
        cid = self.g.node(expr_text(expr), f"{name} ({self.spec.connector(expr.connector).component})",
                          "connector")
        self.edges_into(cid, list(expr.args) + [k.value for k in expr.kwargs])
        return cid

    def visit_function_apply(self, expr: ir.FunctionApply) -> str:
        fid = self.g.node(expr_text(expr), expr.function, "function")
        self.edges_into(fid, list(expr.args) + [k.value for k in expr.kwargs])
        return fid

    def visit_model_apply(self, expr: ir.ModelApply) -> str:
        return self.g.node(expr.model, expr.model, "model")

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
    procedure = plan.procedure if plan is not None else _procedure_of(spec)
    if not procedure.declared:
        total = g.node("total", "total loss", "total")
        for loss in spec.losses:
            _loss_node(g, sources, loss, loss.name, total)
    else:
        _draw_procedure(spec, g, sources, procedure)
    for d in spec.deliveries:
        did = g.node(d.target.ref, f"deliver {d.target.ref}", "delivery")
        g.edge(g.node(d.source, d.source, "model"), did, "teacher pass")
        g.edge(did, g.node(d.dest, d.dest, "model"), "student pass")
    if spec.generation is not None:  # the generated batch every model runs on
        made = g.node("generate", "batch: prompts + generated completions", "delivery")
        g.edge(g.node(spec.generation.model, spec.generation.model, "model"), made, "generate (no grad)")
        for m in spec.models:
            if m.role != "generator":
                g.edge(made, g.node(m.name, m.name, "model"), "input")
    return g


def _procedure_of(spec: ir.Spec):
    """The stages and phases of ``spec``, without models (the same pass as compiling)."""
    from kdsl.compiler.plan import Plan, Request
    from kdsl.compiler.procedure import build_procedure
    from kdsl.core.diagnostics import Diagnostics

    return build_procedure(Plan(request=Request(spec), diags=Diagnostics(dict(spec.sources)))).procedure


def _loss_node(g: Graph, sources: _Sources, loss: ir.LossDecl, key: str, total: str,
               cluster: Optional[str] = None) -> None:
    lid = g.node(key, f"{loss.name}: {loss.component}", "loss", cluster)
    sources.edges_into(lid, list(loss.call.args) + [k.value for k in loss.call.kwargs])
    g.edge(lid, total, "x " + weight_text(loss.weight))


def _draw_procedure(spec: ir.Spec, g: Graph, sources: _Sources, procedure) -> None:
    """A subgraph per stage, one per phase inside it with its losses and its total."""
    losses = {loss.name: loss for loss in spec.all_losses}
    if spec.input is not None:
        iid = g.node("input", f"input = {expr_text(spec.input.value)}", "batch")
        for app in find(spec.input.value, ir.ModelApply):
            g.edge(g.node(app.model, app.model, "model"), iid)
        fed = {m for s in procedure.stages for p in s.phases if p.needs_input for m in p.models_run}
        for m in spec.models:
            if m.name in fed and m.role != "generator":
                g.edge(iid, g.node(m.name, m.name, "model"), "input")
    for stage in procedure.stages:
        epochs = "rest of the run" if stage.epochs is None else \
            f"{stage.epochs} epoch{'s' if stage.epochs != 1 else ''}"
        batch = "" if stage.batch_size is None else f", batch_size {stage.batch_size}"
        sid = g.cluster(stage.name, f"stage {stage.name} ({epochs}{batch})")
        for phase in stage.phases:
            key = f"{stage.name}_{phase.name}"
            pid = g.cluster(key, f"phase {phase.name}" + (f" x{phase.repeat}" if phase.repeat != 1 else "")
                            + (f": optimize {', '.join(phase.optimize)}" if phase.optimize else ""), sid)
            total = g.node(key, f"total {stage.name}/{phase.name}", "total", pid)
            for name in phase.losses:
                _loss_node(g, sources, losses[name], f"{key}_{name}", total, pid)


_MERMAID_SHAPE = {"model": ("[", "]"), "record": ("([", "])"), "batch": ("[/", "/]"),
                  "connector": ("[[", "]]"), "loss": ("{{", "}}"), "total": ("((", "))"),
                  "delivery": (">", "]"), "function": ("(", ")")}
_DOT_SHAPE = {"model": "box3d", "record": "ellipse", "batch": "parallelogram", "connector": "box",
              "loss": "hexagon", "total": "doublecircle", "delivery": "cds", "function": "invtrapezium"}


def _esc(text: str) -> str:
    return text.replace('"', "'")


def _mermaid_node(g: Graph, nid: str, indent: str) -> str:
    label, kind = g.nodes[nid]
    a, b = _MERMAID_SHAPE[kind]
    return f'{indent}{nid}{a}"{_esc(label)}"{b}'


def _mermaid_cluster(g: Graph, cid: str, label: str, indent: str) -> List[str]:
    lines = [f'{indent}subgraph {cid}["{_esc(label)}"]']
    for child, child_label, parent in g.clusters:
        if parent == cid:
            lines += _mermaid_cluster(g, child, child_label, indent + "    ")
    lines += [_mermaid_node(g, nid, indent + "    ") for nid in g.nodes if g.member.get(nid) == cid]
    return lines + [f"{indent}end"]


def to_mermaid(g: Graph) -> str:
    lines = ["flowchart LR"]
    lines += [_mermaid_node(g, nid, "    ") for nid in g.nodes if nid not in g.member]
    for cid, label, parent in g.clusters:
        if parent is None:
            lines += _mermaid_cluster(g, cid, label, "    ")
    for a, b, label in g.edges:
        lines.append(f'    {a} -->|"{_esc(label)}"| {b}' if label else f"    {a} --> {b}")
    return "\n".join(lines) + "\n"


def to_dot(g: Graph) -> str:
    lines = ["digraph kdsl {", "    rankdir=LR;", '    node [fontname="Helvetica", fontsize=10];',
             '    edge [fontname="Helvetica", fontsize=9];']
    lines += [_dot_node(g, nid, "    ") for nid in g.nodes if nid not in g.member]
    for cid, label, parent in g.clusters:
        if parent is None:
            lines += _dot_cluster(g, cid, label, "    ")
    for a, b, label in g.edges:
        lines.append(f'    {a} -> {b}' + (f' [label="{_esc(label)}"];' if label else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_node(g: Graph, nid: str, indent: str) -> str:
    label, kind = g.nodes[nid]
    return f'{indent}{nid} [label="{_esc(label)}", shape={_DOT_SHAPE[kind]}];'


def _dot_cluster(g: Graph, cid: str, label: str, indent: str) -> List[str]:
    lines = [f"{indent}subgraph {cid} {{", f'{indent}    label="{_esc(label)}";']
    for child, child_label, parent in g.clusters:
        if parent == cid:
            lines += _dot_cluster(g, child, child_label, indent + "    ")
    lines += [_dot_node(g, nid, indent + "    ") for nid in g.nodes if g.member.get(nid) == cid]
    return lines + [f"{indent}}}"]
