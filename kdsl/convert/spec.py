"""The converted spec, built as IR statements and printed by the language's one printer
(:func:`kdsl.lang.printer.statement_text`); each finding is a comment above the statement it
concerns, or in the header when it concerns none."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from kdsl.convert.report import Finding
from kdsl.lang import ir
from kdsl.lang.printer import statement_text

_NAME = re.compile(r"[^A-Za-z0-9_]+")
_RESERVED = {"batch", "true", "false", "none", "student", "teacher", "generator", "record", "loss",
             "connector", "model", "output", "input", "of", "param", "train", "stage", "phase"}


def expr(value: Any) -> ir.Node:
    """A Python config value (number, string, bool, None, list) as a spec expression."""
    if isinstance(value, (list, tuple)):
        return ir.ListExpr(items=tuple(expr(v) for v in value))
    if isinstance(value, dict):
        raise TypeError("a mapping has no spec literal")
    return ir.Const(value=value)


def call(func: str, args: Sequence[ir.Node] = (), **options: Any) -> ir.Call:
    """``func(args..., k=v...)`` with literal options (None options are left out)."""
    kwargs = tuple(ir.Keyword(name=k, value=expr(v)) for k, v in options.items() if v is not None)
    return ir.Call(func=func, args=tuple(args), kwargs=kwargs)


def identifier(text: str, prefix: str = "") -> str:
    """A spec name made from a config key (``loss_s4.sfeat`` -> ``loss_s4_sfeat``)."""
    name = _NAME.sub("_", prefix + text).strip("_") or "x"
    if name[0].isdigit():
        name = "_" + name
    return name + "_" if name in _RESERVED else name


def module_path(model: str, dotted: str) -> ir.ModulePath:
    parts = tuple(p for p in dotted.split(".") if p)
    return ir.ModulePath(model=model, path=parts)


class SpecWriter:
    """Statements in sections (models, records, ...), each with the findings that concern it."""

    SECTIONS = ("models", "input", "records", "deliveries", "connectors", "losses", "procedure",
                "train")

    def __init__(self, title: str) -> None:
        self.title = title
        self.header: List[Finding] = []
        self.parts: Dict[str, List[Tuple[ir.Node, List[Finding]]]] = {s: [] for s in self.SECTIONS}
        self.names: Dict[str, int] = {}

    def unique(self, name: str) -> str:
        """``name``, or ``name_2``, ``name_3``... when it is taken (one namespace, as in specs)."""
        count = self.names.get(name, 0) + 1
        self.names[name] = count
        return name if count == 1 else f"{name}_{count}"

    def add(self, section: str, stmt: ir.Node, findings: Sequence[Optional[Finding]] = ()) -> None:
        self.parts[section].append((stmt, [f for f in findings if f is not None]))

    def note(self, finding: Optional[Finding]) -> None:
        if finding is not None:
            self.header.append(finding)

    def text(self) -> str:
        marked = self.header or any(f for part in self.parts.values() for _, f in part)
        lines = [f"# {self.title}", "# Written by `kdsl convert`; each comment below marks a key "
                 "that was translated approximately or not at all." if marked else
                 "# Written by `kdsl convert`: an exact translation."]
        lines += [f.comment() for f in self.header]
        for section in self.SECTIONS:
            if not self.parts[section]:
                continue
            lines.append("")
            for stmt, findings in self.parts[section]:
                lines += [f.comment() for f in findings]
                lines.append(statement_text(stmt))
        return "\n".join(lines) + "\n"
