"""What the model-aware completion's worker process runs (:mod:`kdsl.lsp.model_paths`): a module
of its own, importing only what building a model needs, so that the worker, a fresh interpreter,
starts without the language server's modules (pygls, lsprotocol, the parser)."""

from __future__ import annotations

import os
import sys
from typing import List, Optional, Tuple

Paths = List[Tuple[str, str]]  # (dotted module path, class name)


def module_paths(ref: str, args: list, kwargs: dict, spec_dir: str) -> Optional[Paths]:
    """Run in the worker: every named module of the model ``ref(*args, **kwargs)`` built on the meta
    device, with its class name; None when the factory cannot be called."""
    import torch

    from kdsl.core.diagnostics import KdslError
    from kdsl.lang.refs import call_factory

    if spec_dir and spec_dir not in sys.path:  # a model module next to the spec, as the loader does
        sys.path.insert(0, spec_dir)
    try:
        with torch.device("meta"):
            model = call_factory(ref, args, kwargs, "model")
    except KdslError:
        return None
    if not isinstance(model, torch.nn.Module):
        return None
    return [(name, type(m).__name__) for name, m in model.named_modules() if name]


def quiet_stdout() -> None:
    """In the worker: stdout is the server's channel to the editor, so whatever a factory prints
    (from Python or C) goes to stderr, the server's log."""
    os.dup2(2, 1)
    sys.stdout = sys.stderr
