"""Reference vectors for the losses (values and gradients computed in float64 by MMRazor), and
the contract between a catalog entry and its implementation.

The file is ``<repo>/../shared/reference/loss_vectors.json``; ``KDSL_SHARED`` names another
``shared`` directory. Without it the tests that need it are skipped, unless
``KDSL_REQUIRE_SHARED=1`` (as in CI), where a missing file is a failure.
"""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from kdsl.catalog.types import REQUIRED, Component

_REPO = Path(__file__).resolve().parents[2]


def reference_path() -> Path:
    shared = os.environ.get("KDSL_SHARED")
    root = Path(shared) if shared else _REPO.parent / "shared"
    return root / "reference" / "loss_vectors.json"


@functools.lru_cache(maxsize=1)
def _load(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def reference_cases(reference_class: str) -> List[Dict[str, Any]]:
    """The cases computed by MMRazor's ``reference_class`` (e.g. ``"KLDivergence"``)."""
    path = reference_path()
    if not path.is_file():
        message = (f"reference vectors not found at {path} (set KDSL_SHARED to the directory "
                   f"holding reference/loss_vectors.json)")
        if os.environ.get("KDSL_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cases = [c for c in _load(path)["cases"] if c["reference_class"] == reference_class]
    if not cases:
        pytest.fail(f"{path} has no case for {reference_class}")
    return cases


def to_tensor(entry: Dict[str, Any]) -> torch.Tensor:
    """A ``{"shape", "dtype", "data"}`` entry as a tensor: int64 for integer data (labels,
    indices), float64 otherwise."""
    dtype = torch.int64 if entry["dtype"].startswith(("int", "uint")) else torch.float64
    return torch.tensor(entry["data"], dtype=dtype).reshape(entry["shape"])


def assert_implements(component: Component) -> None:
    """The implementation's ``__init__`` takes exactly the declared options (same names, order
    and defaults) and its ``forward`` exactly the declared inputs, in order."""
    cls = component.load()

    def params(func):
        found = list(inspect.signature(func).parameters.values())[1:]  # without self
        for p in found:
            assert p.kind is p.POSITIONAL_OR_KEYWORD, f"{cls.__name__}: {p} is not plain"
        return found

    implemented = [(p.name, REQUIRED if p.default is p.empty else p.default)
                   for p in params(cls.__init__)]
    declared = [(p.name, p.default) for p in component.options]
    assert implemented == declared, f"{component.name}: options {declared}, __init__ {implemented}"
    implemented = [(p.name, p.default is not p.empty, None if p.default is p.empty else p.default)
                   for p in params(cls.forward)]
    declared = [(p.name, not p.required, None if p.required else p.default)
                for p in component.inputs]
    assert implemented == declared, f"{component.name}: inputs {declared}, forward {implemented}"
    for option in component.options:
        assert option.required or option.type.accepts(option.default), (
            f"{component.name}: default of {option.name} does not fit its type")
    for inferred in component.infer:
        assert component.option(inferred.option) is not None
        assert component.input(inferred.source) is not None
    for rule in component.rules:
        for name in rule.names:
            assert component.input(name) is not None, f"{component.name}: rule on {name}"
    assert component.summary and "\n" not in component.summary
    assert component.doc


def assert_imports_without_torch(module: str) -> None:
    """Importing ``module`` in a fresh interpreter does not import torch."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(_REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    result = subprocess.run([sys.executable, "-c", code], cwd=_REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---- float64 checks shared by the loss, connector and function tests -------------------------
F64 = torch.float64


def seeded(*shape, seed: int = 0, scale: float = 1.0, grad: bool = True) -> torch.Tensor:
    """A float64 normal tensor from its own seeded generator (independent of torch's global RNG)."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g, dtype=F64)).requires_grad_(grad)


def assert_same_value_and_grads(ours: torch.Tensor, theirs: torch.Tensor, wrt) -> None:
    """``ours`` equals ``theirs`` (a formula written out independently), and so do their gradients
    with respect to every tensor of ``wrt`` (an input neither depends on may have none)."""
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad(ours, wrt, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(theirs, wrt, allow_unused=True)
    for g, w in zip(got, want):
        if w is None:
            assert g is None or not g.abs().sum()
        else:
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-12)
