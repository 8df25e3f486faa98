"""The verifier's usage warnings: records, connectors and teachers that nothing reads, losses
that read no record, a spec without a loss.

:class:`UsageWarnings` is a mixin of :class:`~kdsl.lang.verify.Verifier`.
"""

from __future__ import annotations

from typing import Dict, List, Set

from kdsl.catalog.registry import REGISTRY
from kdsl.core.span import Span
from kdsl.lang import ir
from kdsl.lang.statements import walk_statements
from kdsl.lang.verify_names import Use


class UsageWarnings:
    """Warnings about what the spec declares but never uses (a mixin of the Verifier)."""

    def _check_usage(self, result: List[ir.Node], uses: Dict[str, Use]) -> None:
        if self.diags.has_errors:
            return  # usage is incomplete where resolution failed: warnings would be noise
        used_records: Set[str] = set()
        used_connectors: Set[str] = set()
        losses = [s for s in walk_statements(result) if isinstance(s, ir.LossDecl)]
        for stmt in losses:
            use = uses.get(stmt.name)
            if use is None:
                continue
            records = set(use.records)
            for c in use.connectors:  # records reached through connector options count too
                records |= uses[c].records if c in uses else set()
            used_records |= records
            used_connectors |= use.connectors
            if not records and REGISTRY.get("loss", stmt.component) is not None:
                self.diags.warning("KD251", f"loss '{stmt.name}' reads no record", stmt.name_span,
                                   hint="its value does not depend on the models")
        if not losses:
            self.diags.warning("KD255", "the spec declares no loss: training would not change the student",
                               Span.point(self.file, 1, 1),
                               hint="add e.g. loss task = cross_entropy(LOGITS, batch.target)")
        for name, rec in self.records.items():
            if name not in used_records:
                self.diags.warning("KD250", f"record '{name}' is never used", rec.name_span,
                                   hint="remove it, or use it in a loss")
        for name, con in self.connectors.items():
            if name not in used_connectors:
                self.diags.warning("KD252", f"connector '{name}' is never used", con.name_span)
        read = {r.model for r in self.records.values()}
        read |= {s.source for s in result if isinstance(s, ir.DeliverDecl)}
        read |= {s.model for s in result if isinstance(s, ir.GenerateDecl)}  # it writes the batch
        for name, model in self.models.items():
            if model.role == "teacher" and name not in read:
                self.diags.warning("KD253", f"teacher '{name}' is never used", model.name_span,
                                   hint="no record or delivery reads it, so its forward pass is skipped")
