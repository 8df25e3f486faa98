"""Module paths of a spec (``student.layer2.0.bn1``) found in real models, with suggestions when
a path is wrong: the closest existing path (ties broken by module order), and a parameter or
buffer of that name pointed out as such."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

from torch import nn

from kdsl.core.diagnostics import Diagnostic, KdslError, make
from kdsl.core.span import Span
from kdsl.core.suggest import rank_candidates
from kdsl.lang import ir


def module_candidates(model: nn.Module) -> List[str]:
    """Every submodule's dotted path (the model itself left out)."""
    return [n for n, _ in model.named_modules() if n]


def suggest_path(path: str, candidates: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """Best suggestion for a wrong module path (ties broken by module order), and close others."""
    best = rank_candidates(path, candidates, limit=6)
    if not best:
        return None, []
    order = {c: i for i, c in enumerate(candidates)}
    prefix = lambda c: -len(os.path.commonprefix([c, path]))  # noqa: E731
    best.sort(key=lambda c: (prefix(c), order.get(c, 0)))
    return best[0], best[1:3]


def _no_module(model_name: str, model: nn.Module, dotted: str, span: Optional[Span],
               what: str) -> Diagnostic:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    hints = []
    if dotted in params or dotted in buffers:
        hints.append(f"'{dotted}' is a {'parameter' if dotted in params else 'buffer'}: "
                     f"record it with `param {model_name}.{dotted}`")
    else:
        best, others = suggest_path(dotted, module_candidates(model))
        if best:
            hints.append(f"did you mean '{best}'?")
            if others:
                hints.append("also close: " + ", ".join(f"'{o}'" for o in others))
        else:
            top = [n for n, _ in model.named_children()]
            hints.append(f"{model_name}'s top-level modules: " + ", ".join(top[:12]))
    return make("KD501", f"{model_name} ({type(model).__name__}) has no {what} '{dotted}'", span,
                hints=hints)


def find_module(model_name: str, model: nn.Module, path: Sequence[str], span: Optional[Span],
                what: str = "module") -> nn.Module:
    """The submodule at ``path`` (the model itself for an empty path); KD501 if there is none."""
    dotted = ".".join(path)
    if not dotted:
        return model
    try:
        return model.get_submodule(dotted)
    except AttributeError:
        raise KdslError([_no_module(model_name, model, dotted, span, what)]) from None


def resolve_module_ref(models, ref: ir.ModuleRef) -> nn.Module:
    """The module a resolved ``model.path`` expression names, in ``models`` (name -> model)."""
    return find_module(ref.model, models[ref.model], ref.path, ref.span)
