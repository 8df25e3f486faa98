"""Model-aware completion: the module paths of a declared model (``student.layer2.0.conv1``).

Opt-in (``initializationOptions.modelPaths = true``): the model's factory is called on torch's
meta device (shapes without memory or weights) in a worker process, so the server never imports
torch and typing never waits: until the worker has answered, a completion is marked incomplete and
the editor asks again on the next keystroke. Each factory call (reference and options) is built
once per server. A factory that fails or is refused (:func:`kdsl.core.resolve.import_ref`: no
``os:system``) gives no paths; its error is the dry run's to report (``kdsl check --dry-run``).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
from typing import Dict, List, Optional, Tuple

from lsprotocol import types as lsp

from kdsl.lang import ir
from kdsl.lang.literal import try_literal
from kdsl.lsp.model_worker import module_paths, quiet_stdout
from kdsl.lsp.names import Index
from kdsl.lsp.text import tokens, window

# `student.layer2.0.co|`: a model name, the path typed so far, the part being typed
_PATH_BEFORE_CURSOR = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\.\w+)*)\.(\w*)\Z")

def typed_path(text: str, offset: int) -> Optional[Tuple[str, Tuple[str, ...], str]]:
    """(model name, path typed so far, part being typed) when the cursor ends a dotted name
    outside strings and comments; None otherwise."""
    start = text.rfind("\n", 0, offset) + 1
    found = _PATH_BEFORE_CURSOR.search(text, start, offset)
    if found is None:
        return None
    before = tokens(text, max(start, window(text, offset)[0]), found.start() + 1)
    if before and before[-1].kind in ("string", "comment"):
        return None
    model, path, prefix = found.groups()
    return model, tuple(p for p in path.split(".") if p), prefix


def _factory_call(decl: ir.ModelDecl) -> Optional[Tuple[str, tuple, tuple]]:
    """(reference, args, sorted kwargs) of a model's factory when every option is a literal."""
    factory = decl.factory
    if factory is None:
        return None
    values = [try_literal(a) for a in factory.args] + [try_literal(k.value) for k in factory.kwargs]
    if not all(ok for ok, _ in values):
        return None
    args = tuple(v for _, v in values[:len(factory.args)])
    kwargs = tuple(sorted((k.name, v) for k, (_, v) in zip(factory.kwargs, values[len(factory.args):])))
    return factory.ref, args, kwargs


class ModelPaths:
    """The module paths of each factory call, built by one worker process started on first need."""

    def __init__(self) -> None:
        self.enabled = False
        self.executor: Optional[concurrent.futures.Executor] = None
        self.built: Dict[str, concurrent.futures.Future] = {}

    def _future(self, call: Tuple[str, tuple, tuple], spec_dir: str) -> concurrent.futures.Future:
        key = repr(call + (spec_dir,))  # options may hold lists: the key is their text
        if key not in self.built:
            if self.executor is None:
                # spawn: a fresh interpreter, not a copy of the server's event loop and threads
                self.executor = concurrent.futures.ProcessPoolExecutor(
                    max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                    initializer=quiet_stdout)
            ref, args, kwargs = call
            self.built[key] = self.executor.submit(module_paths, ref, list(args), dict(kwargs), spec_dir)
        return self.built[key]

    def completions(self, text: str, offset: int, index: Index,
                    spec_file: str) -> Optional[Tuple[bool, List[lsp.CompletionItem]]]:
        """(complete?, items) when the cursor ends a declared model's dotted path; None otherwise."""
        typed = typed_path(text, offset) if self.enabled else None
        if typed is None:
            return None
        model, path, _ = typed
        declared = index.find(model)
        call = _factory_call(declared.node) if declared is not None and declared.kind == "model" else None
        if call is None:
            return None
        spec_dir = os.path.dirname(spec_file) if not spec_file.startswith("<") else ""
        future = self._future(call, spec_dir)
        if not future.done():
            return False, []
        found = future.result() if future.exception() is None else None
        parent = ".".join(path)
        items = [lsp.CompletionItem(label=name.rpartition(".")[2], kind=lsp.CompletionItemKind.Field,
                                    detail=f"{model}.{name}: {cls}")
                 for name, cls in found or () if name.rpartition(".")[0] == parent]
        return True, items

    def shutdown(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
