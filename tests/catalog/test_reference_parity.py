"""Every case of the reference vector files reproduced by kdsl losses with documented options.

The vector files (``torchdistill_vectors.json``: torchdistill's losses; ``loss_vectors.json``:
MMRazor's) are read from ``$KDSL_REFERENCE_DIR`` (default ``../shared/reference`` from the
repository root), so that ``KDSL_REFERENCE_DIR=DIR python -m pytest -m reference`` checks other
vectors with the same file names and case ids. Missing files skip these tests, unless
``KDSL_REQUIRE_SHARED=1`` (CI), where they fail. Values must agree to rtol 1e-9 and gradients to
rtol 1e-7; :mod:`tests.catalog.parity_table` says which loss and options each case maps to.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict

import pytest

from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY
from tests.catalog.parity_table import FAMILIES, terms_for

# torch (and tests.catalog.reference, which imports it) is imported by the tests that read vectors:
# without the files every test skips before, and tests/test_skip_summary.py's nested pytest run
# of this file then starts no torch

pytestmark = pytest.mark.reference

_REPO = Path(__file__).resolve().parents[2]
FILES = ("torchdistill_vectors.json", "loss_vectors.json")
EXPECTED_CASES = {"torchdistill_vectors.json": 71, "loss_vectors.json": 33}


def reference_dir() -> Path:
    configured = os.environ.get("KDSL_REFERENCE_DIR")
    return Path(configured) if configured else _REPO.parent / "shared" / "reference"


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cases_of(file: str):
    path = reference_dir() / file
    if not path.is_file():
        message = f"reference vectors not found at {path} (set KDSL_REFERENCE_DIR)"
        if os.environ.get("KDSL_REQUIRE_SHARED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return _load(path)["cases"]


def evaluate(file: str, case: Dict[str, Any]):
    """(value, {case input name: gradient}) of the case's kdsl terms, in float64."""
    import torch

    from tests.catalog.reference import to_tensor

    tensors = {name: to_tensor(entry) for name, entry in case["inputs"].items()}
    for t in tensors.values():
        if t.is_floating_point():
            t.requires_grad_()
    total = None
    for term in terms_for(file, case):
        loss = instantiate(REGISTRY.get("loss", term.loss), **term.options).double()
        for attribute, source in term.state.items():
            if attribute in loss._parameters:
                # the case input stands for this learnable parameter, so that its gradient is
                # the parameter's
                del loss._parameters[attribute]
                setattr(loss, attribute, tensors[source])
            else:
                with torch.no_grad():
                    getattr(loss, attribute).copy_(tensors[source])
        # an optional input whose source the case lacks (KDLoss without targets) is left out
        args = [tensors[term.inputs[p.name]] for p in loss_inputs(term.loss)
                if term.inputs.get(p.name) in tensors]
        value = term.weight * loss(*args).reshape(())
        total = value if total is None else total + value
    wanted = list(case["grads"])
    grads = torch.autograd.grad(total, [tensors[n] for n in wanted], allow_unused=True)
    return total, dict(zip(wanted, grads))


def loss_inputs(name: str):
    return REGISTRY.get("loss", name).inputs


def _case_ids(file: str):
    # ids are read at collection only when the file is there; otherwise one test reports it
    path = reference_dir() / file
    if not path.is_file():
        return ["<missing>"]
    return [c["id"] for c in _load(path)["cases"]]


def _params():
    return [pytest.param(file, case_id, id=f"{file.split('_')[0]}:{case_id}")
            for file in FILES for case_id in _case_ids(file)]


@pytest.mark.parametrize("file,case_id", _params())
def test_case_is_reproduced(file, case_id):
    cases = {c["id"]: c for c in cases_of(file)}
    import torch

    from tests.catalog.reference import to_tensor

    case = cases[case_id]
    value, grads = evaluate(file, case)
    torch.testing.assert_close(value, torch.tensor(case["value"], dtype=torch.float64).reshape(()),
                               rtol=1e-9, atol=0.0, msg=lambda m: f"{case_id}: value: {m}")
    assert grads, f"{case_id}: the case has no gradients to compare"
    for name, got in grads.items():
        assert got is not None, f"{case_id}: no gradient reaches {name}"
        torch.testing.assert_close(got, to_tensor(case["grads"][name]), rtol=1e-7, atol=1e-13,
                                   equal_nan=True, msg=lambda m: f"{case_id}: grad {name}: {m}")


@pytest.mark.parametrize("file", FILES)
def test_every_case_is_in_the_table(file):
    cases = cases_of(file)
    assert len(cases) == EXPECTED_CASES[file] or os.environ.get("KDSL_REFERENCE_DIR")
    families = {c["id"].split("/", 1)[0] for c in cases}
    assert families <= set(FAMILIES[file]), families - set(FAMILIES[file])
    for case in cases:
        for term in terms_for(file, case):
            component = REGISTRY.get("loss", term.loss)
            assert component is not None, term.loss
            # every option the table uses is a documented option of the entry
            documented = {p.name: p for p in component.options}
            for option in term.options:
                assert option in documented and documented[option].doc, (case["id"], option)
            assert set(term.inputs) <= {p.name for p in component.inputs}, case["id"]
            for p in component.inputs:
                if p.required:
                    assert term.inputs.get(p.name) in case["inputs"], (case["id"], p.name)


def test_mmrazor_dkd_teacher_gradients_are_nan_and_the_default_form_finite():
    case = next(c for c in cases_of("loss_vectors.json") if c["id"].startswith("dkd/"))
    import torch

    from tests.catalog.reference import to_tensor

    assert to_tensor(case["grads"]["preds_T"]).isnan().all()
    s = to_tensor(case["inputs"]["preds_S"])
    t = to_tensor(case["inputs"]["preds_T"]).requires_grad_()
    kw = case["kwargs"]
    loss = instantiate(REGISTRY.get("loss", "dkd"), alpha=kw["alpha"], beta=kw["beta"],
                       tau=kw["tau"], detach_teacher=False)(s, t, to_tensor(case["inputs"]["gt_labels"]))
    torch.testing.assert_close(loss, torch.tensor(case["value"], dtype=torch.float64), rtol=1e-9,
                               atol=0.0)
    assert torch.autograd.grad(loss, t)[0].isfinite().all()
