"""Each ``from "FILE"`` of a spec looked for without reading it (one ``stat``, no torch): what plain
``kdsl check`` can say about weights. A missing file is a KD530 warning at the path, as in the dry
run (:mod:`kdsl.compiler.bind_models`): shapes and checks do not need weights, ``kdsl train`` does."""

from __future__ import annotations

import os
from typing import List, Optional

from kdsl.compiler.checkpoint_file import check_checkpoint_path
from kdsl.core.diagnostics import Diagnostic, KdslError
from kdsl.core.span import Span
from kdsl.lang import ir

NOT_LOADED_HINT = ("weights are not loaded here, so this is a warning; `kdsl train` needs the file "
                   "(paths in a spec are relative to the spec file)")


def _spec_relative(path: str, span: Optional[Span]) -> str:
    if os.path.isabs(path) or span is None or span.file.startswith("<"):
        return path
    return os.path.join(os.path.dirname(span.file), path)


def look_for_weights(spec: ir.Spec) -> List[Diagnostic]:
    """A KD530 warning for each model or connector checkpoint of ``spec`` that is not a readable
    regular file; nothing is opened."""
    found: List[Diagnostic] = []
    for decl in [*spec.models, *spec.connectors]:
        if decl.checkpoint is None:
            continue
        span = decl.checkpoint_span or decl.span
        try:
            check_checkpoint_path(_spec_relative(decl.checkpoint, span), span, code="KD530", hint=NOT_LOADED_HINT)
        except KdslError as exc:
            found += [d.model_copy(update={"severity": "warning"}) for d in exc.diagnostics]
    return found
