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


# What the trainer or the interpreter passes an implementation besides the declared options and
# inputs (training/stages.py, runtime/interpret.py): not part of the spec's signature.
SUPPLIED_FIRST = {"optimizer": ("params",), "lr_schedule": ("optimizer",)}
SUPPLIED_KEYWORDS = {"lr_schedule": ("epochs", "steps_per_epoch")}


def _plain(value: Any) -> Any:
    # an implementation keeps a list default as a tuple (immutable); a spec writes a list
    return list(value) if isinstance(value, tuple) else value


def _same_default(declared: Any, implemented: Any) -> bool:
    declared, implemented = _plain(declared), _plain(implemented)
    return declared is implemented or (type(declared) is type(implemented) and declared == implemented)


def _parameters(func: Any, skip: int) -> List[inspect.Parameter]:
    found = list(inspect.signature(func).parameters.values())[skip:]
    # nn.Module's own (*args, **kwargs) and the open options of torch_nn are not declared options
    return [p for p in found if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _compare(what: str, declared: List[Any], implemented: List[inspect.Parameter]) -> List[str]:
    declared_names = [p.name for p in declared]
    implemented_names = [p.name for p in implemented]
    if declared_names != implemented_names:
        return [f"{what}: declared {declared_names}, implemented {implemented_names}"]
    problems = []
    # options are passed by keyword (binding.instantiate), inputs by position (the interpreter)
    unusable = inspect.Parameter.POSITIONAL_ONLY if what == "option" else inspect.Parameter.KEYWORD_ONLY
    for decl, impl in zip(declared, implemented):
        if impl.kind is unusable:
            problems.append(f"{what} {decl.name}: cannot be passed {impl.kind.description}")
        default = REQUIRED if impl.default is impl.empty else impl.default
        if (decl.default is REQUIRED) != (default is REQUIRED) or (
                decl.default is not REQUIRED and not _same_default(decl.default, default)):
            problems.append(f"{what} {decl.name}: declared default {decl.default!r}, "
                            f"implemented {default!r}")
    return problems


def signature_disagreements(component: Component) -> List[str]:
    """How ``component``'s implementation differs from its declaration: its constructor (or
    factory) takes exactly the declared options, in order, with equal defaults of the same type,
    and its ``forward`` exactly the declared inputs; arguments the trainer supplies (an
    optimizer's parameters, a step's context) come first and are not declared. Empty: they agree.
    A :class:`~kdsl.components._common.Declared` class agrees by construction (its signature is
    made from its entry); its ``forward`` is still compared."""
    impl = component.load()
    is_class = inspect.isclass(impl)
    supplied = SUPPLIED_FIRST.get(component.kind, ())
    options = _parameters(impl, 0)  # a class's signature is its constructor's, without self
    if [p.name for p in options[:len(supplied)]] != list(supplied):
        return [f"options: the first arguments must be {list(supplied)}"]
    options = [p for p in options[len(supplied):]
               if p.name not in SUPPLIED_KEYWORDS.get(component.kind, ())]
    problems = _compare("option", list(component.options), options)
    if is_class and hasattr(impl, "forward"):
        inputs = _parameters(impl.forward, 1 + bool(getattr(impl, "needs_context", False)))
        problems += _compare("input", list(component.inputs), inputs)
    elif component.inputs:
        problems.append(f"inputs {[p.name for p in component.inputs]} declared, but no forward")
    return problems


def assert_implements(component: Component) -> None:
    """The implementation takes what the entry declares (:func:`signature_disagreements`) and the
    entry is well formed: defaults fit their types, rules and inferences name real parameters."""
    problems = signature_disagreements(component)
    assert not problems, f"{component.name}: " + "; ".join(problems)
    for option in component.options:
        assert option.required or option.type.accepts(option.default), (
            f"{component.name}: default of {option.name} does not fit its type")
    for inferred in component.infer:
        assert component.option(inferred.option) is not None
        assert inferred.source in ("input", "target") or component.input(inferred.source) is not None
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
