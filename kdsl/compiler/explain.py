"""``kdsl explain``: the compiled plan in words and tables (hooks, patches, connectors, losses,
order of evaluation, parameters added). Also the expression printer other views use."""

from __future__ import annotations

import inspect
from typing import Optional

from rich.table import Table

from kdsl.core.literals import literal_text
from kdsl.lang.printer import expr_text, weight_text
from kdsl.catalog.shapes import TensorInfo


# ------------------------------------------------------------------------------ printing IR
def shape_text(info: Optional[TensorInfo]) -> str:
    return f"{info.describe()} {info.dtype}" if info is not None else "-"


def _where(owner, name: str) -> str:
    if inspect.isclass(owner):
        return f"{owner.__module__}.{owner.__qualname__}.{name}"
    return f"{getattr(owner, '__name__', owner)}.{name}"


# ------------------------------------------------------------------------------ tables
def records_table(distiller) -> Table:
    from kdsl.runtime.hooks import CallRecorder, ModuleInputRecorder, ModuleOutputRecorder, ParamRecorder

    table = Table(title="records", title_justify="left")
    for col in ("record", "model", "what", "installed as", "shape", "dtype", "in-place"):
        table.add_column(col)
    for decl in distiller.spec.records:
        rec = distiller.recorders.get(decl.name)
        if isinstance(rec, ModuleOutputRecorder):
            how = f"forward hook on {decl.target}"
        elif isinstance(rec, ModuleInputRecorder):
            how = f"forward pre-hook on {decl.target}"
        elif isinstance(rec, CallRecorder):
            how = "patched " + ", ".join(_where(o, n) for o, n in getattr(rec, "places", []))
        elif isinstance(rec, ParamRecorder):
            how = "by reference"
        else:
            how = "-"
        info = distiller.shapes.get(decl.name)
        shape = info.describe() if info else distiller.value_descriptions.get(decl.name, "-")
        copied = "copied" if rec is not None and rec.copy else ""
        table.add_row(decl.name, decl.model, decl.describe(), how, shape, info.dtype if info else "-", copied)
    return table


def _options_text(built: dict) -> str:
    inferred = set(built.get("inferred", ()))
    parts = []
    for k, v in built.get("options", {}).items():
        parts.append(f"{k}={literal_text(v) if not hasattr(v, 'forward') else type(v).__name__}"
                     + (" (inferred)" if k in inferred else ""))
    return ", ".join(parts)


def connectors_table(distiller) -> Table:
    table = Table(title="connectors", title_justify="left")
    for col in ("connector", "type", "options", "params", "input", "output"):
        table.add_column(col)
    for decl in distiller.spec.connectors:
        module = distiller.connectors[decl.name]
        built = distiller.built.get(decl.name, {})
        table.add_row(decl.name, decl.component, _options_text(built),
                      f"{sum(p.numel() for p in module.parameters()):,}",
                      shape_text(built.get("input")), shape_text(built.get("output")))
    return table


def losses_table(distiller) -> Table:
    from kdsl.catalog.registry import REGISTRY

    table = Table(title="losses, in evaluation order (total = sum of the weighted terms)",
                  title_justify="left")
    for col in ("#", "loss", "component", "inputs", "weight", "shape rules"):
        table.add_column(col)
    for i, decl in enumerate(distiller.spec.losses, 1):
        component = REGISTRY.get("loss", decl.component)
        built = distiller.built.get(decl.name, {})
        infos = built.get("inputs", {})
        bound = dict(zip([p.name for p in component.inputs], decl.call.args))
        bound.update({k.name: k.value for k in decl.call.kwargs if component.input(k.name)})
        inputs = "\n".join(f"{name} = {expr_text(e)}" + (f"  {shape_text(infos.get(name))}" if infos.get(name) else "")
                           for name, e in bound.items())
        options = [f"{k.name}={expr_text(k.value)}" for k in decl.call.kwargs if component.option(k.name)]
        opts = _options_text({"options": {}, **built}) if built.get("inferred") else ""
        table.add_row(str(i), decl.name, decl.component + (f"({', '.join(options)})" if options else "")
                      + (f"\ninferred: {opts}" if opts else ""), inputs, weight_text(decl.weight),
                      "\n".join(r.describe() for r in component.rules) or "-")
    return table


def models_table(distiller) -> Table:
    table = Table(title="models", title_justify="left")
    for col in ("model", "role", "class", "params", "during the step", "checkpoint"):
        table.add_column(col)
    for decl in distiller.spec.models:
        m = distiller.model(decl.name)
        if decl.role == "student":
            mode = "trains"
        elif decl.frozen:
            mode = "frozen: eval mode, no grad" if decl.name in distiller.used_teachers else "frozen, never run"
        else:
            mode = "trains (trainable teacher)"
        table.add_row(decl.name, decl.role, type(m).__name__, f"{sum(p.numel() for p in m.parameters()):,}",
                      mode, decl.checkpoint or "-")
    return table


def explain(distiller, console) -> None:
    spec = distiller.spec
    console.print(f"[bold]{spec.file}[/bold]: what kdsl does with these models\n")
    console.print(models_table(distiller))
    console.print("[bold]each step[/bold]")
    n = 1
    for name in distiller.used_teachers:
        frozen = spec.model(name).frozen
        console.print(f"  {n}. teacher pass: {name}(*inputs)" + (" under torch.no_grad()" if frozen else " with grad"))
        n += 1
    console.print(f"  {n}. student pass: {distiller.student_name}(*inputs)")
    n += 1
    if distiller.deliveries:
        console.print(f"  {n}. deliveries checked: each teacher result consumed exactly once")
        n += 1
    console.print(f"  {n}. losses in order: " + ", ".join(t.name for t in distiller.terms) +
                  "; total = their weighted sum; records cleared")
    console.print()
    console.print(records_table(distiller))
    if distiller.deliveries:
        table = Table(title="deliveries", title_justify="left")
        for col in ("callable", "from", "to", "keep", "patched"):
            table.add_column(col)
        for decl, d in zip(spec.deliveries, distiller.deliveries):
            table.add_row(str(decl.target), decl.source, decl.dest, str(decl.keep or "unbounded"),
                          ", ".join(_where(o, nm) for o, nm in getattr(d, "places", [])))
        console.print(table)
    if distiller.connectors:
        console.print(connectors_table(distiller))
    console.print(losses_table(distiller))
    added = sum(p.numel() for name, p in distiller.named_parameters()
                if not name.startswith(f"models.{distiller.student_name}.") and p.requires_grad)
    student = sum(p.numel() for p in distiller.student.parameters())
    console.print(f"trainable parameters added to the student's {student:,}: {added:,} "
                  "(connectors, learning losses, trainable teachers)")
