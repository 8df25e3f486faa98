"""Each ``from "FILE"`` of a spec looked for without reading it (one ``stat``, no torch): what plain
``kdsl check`` can say about weights. A missing file is a KD530 warning at the path, as in the dry
run (:mod:`kdsl.compiler.bind_models`): shapes and checks do not need weights, ``kdsl train`` does."""

from __future__ import annotations

from typing import List

from kdsl.core.diagnostics import Diagnostic
from kdsl.io.checkpoint_file import missing_weights, spec_relative
from kdsl.lang import ir


def look_for_weights(spec: ir.Spec) -> List[Diagnostic]:
    """A KD530 warning for each model or connector checkpoint of ``spec`` that is not a readable
    regular file; nothing is opened."""
    found: List[Diagnostic] = []
    for decl in [*spec.models, *spec.connectors]:
        if decl.checkpoint is not None:
            span = decl.checkpoint_span or decl.span
            found += missing_weights(spec_relative(decl.checkpoint, span), span)
    return found
