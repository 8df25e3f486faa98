"""What a conversion could not carry over exactly: one :class:`Finding` per key, located in the
config (file and line where the format has lines), printed on stderr and as comments in the spec."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Literal, Optional, Tuple

from kdsl.core.diagnostics import KdslError, make
from kdsl.core.span import Span

Status = Literal["approximated", "dropped"]
Where = Optional[Tuple[str, int]]  # (file, 1-based line) of a config key


@dataclass(frozen=True)
class Finding:
    """A key translated approximately (``approximated``) or not at all (``dropped``), and why."""

    key: str
    status: Status
    reason: str
    where: Where = None

    def __str__(self) -> str:
        place = f"{self.where[0]}:{self.where[1]}: " if self.where else ""
        return f"{place}{self.status}: {self.key}: {self.reason}"

    def comment(self) -> str:
        """The finding as a comment line of the converted spec (the config file by its name:
        a key may come from a base file)."""
        place = f" ({os.path.basename(self.where[0])}:{self.where[1]})" if self.where else ""
        return f"# {self.status}: {self.key}{place}: {self.reason}"


@dataclass
class ConversionReport:
    """Every finding of one conversion, in the order the converter met them."""

    source_format: str
    findings: List[Finding] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.findings

    def add(self, key: str, status: Status, reason: str, where: Where = None) -> Finding:
        finding = Finding(key, status, reason, where)
        self.findings.append(finding)
        return finding

    def render(self) -> str:
        if self.exact:
            return f"converted from {self.source_format}: exact"
        counts = {s: sum(f.status == s for f in self.findings) for s in ("approximated", "dropped")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return "\n".join([str(f) for f in self.findings] +
                         [f"converted from {self.source_format}: {summary}"])


def located(where: Where, column: int = 1, width: int = 1) -> Optional[Span]:
    """A span at ``where`` (a config line) for diagnostics."""
    if where is None:
        return None
    return Span(file=where[0], line=where[1], column=column, end_line=where[1],
                end_column=column + max(1, width))


def config_error(code: str, message: str, where: Where = None, *, column: int = 1,
                 width: int = 1, hint: Optional[str] = None,
                 sources: Optional[dict] = None) -> KdslError:
    """A located error about the config being converted (never a traceback)."""
    return KdslError([make(code, message, located(where, column, width), hint=hint)], sources)
