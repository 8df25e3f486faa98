"""The loader builds its nodes without pydantic validation (kdsl.core.frozen; issue #27, item 5b):
building the IR's validators cost as much as a whole `kdsl check`. What validation would have
checked is pinned here instead: every spec and every golden case gives, built both ways, the same
IR (types, tuples and all) and the same diagnostics; a spec the loader built still validates and
round-trips; outside the loader, constructors validate as ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

import kdsl
from kdsl.core import frozen
from kdsl.core.span import Span
from kdsl.lang import ir, loader

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((ROOT / "specs").rglob("*.kd")) + sorted((ROOT / "tests" / "diagnostics").rglob("*.kd"))


def _both_ways(path: Path, monkeypatch):
    trusted = loader.check_file(str(path))
    with monkeypatch.context() as m:
        m.setattr(loader, "trusted_construction", lambda: frozen.trusted_construction(False))
        validated = loader.check_file(str(path))
    return trusted, validated


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_trusted_nodes_equal_validated_nodes(case: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (spec, diags, _), (spec_v, diags_v, _) = _both_ways(case.relative_to(ROOT), monkeypatch)
    # repr shows every non-span field with its type (1 vs 1.0, a list vs a tuple); dumps compare spans
    assert [repr(d) for d in diags] == [repr(d) for d in diags_v]
    assert [d.model_dump() for d in diags] == [d.model_dump() for d in diags_v]
    assert (spec is None) == (spec_v is None)
    if spec is not None:
        assert repr(spec) == repr(spec_v) and spec.model_dump() == spec_v.model_dump()
        assert ir.Spec.model_validate_json(spec.model_dump_json()) == spec


def test_trusted_constructors_still_refuse_unknown_and_missing_fields():
    with frozen.trusted_construction():
        with pytest.raises(TypeError, match="no field colour"):
            Span(file="a", line=1, column=1, end_line=1, end_column=2, colour="red")
        with pytest.raises(TypeError, match="needs field end_column"):
            Span(file="a", line=1, column=1, end_line=1)
        call = ir.Call(func="kd", args=[ir.Name(name="x")])
    assert call.args == (ir.Name(name="x"),) and isinstance(call.args, tuple) and call.kwargs == ()


def test_constructors_outside_the_loader_validate():
    with pytest.raises(pydantic.ValidationError):
        Span(file="a", line="one", column=1, end_line=1, end_column=2)
    with pytest.raises(pydantic.ValidationError):
        ir.ModelDecl(role="pupil", name="s")


def test_checking_builds_no_validator():
    """A fresh interpreter checks a spec without building a pydantic validator (nor loading
    pydantic's plugin machinery, which reads every installed package's metadata)."""
    program = ("import sys, kdsl\nassert not kdsl.check(%r)\n"
               "print(kdsl.Spec.__pydantic_complete__, kdsl.Diagnostic.__pydantic_complete__,\n"
               "      'pydantic.plugin._loader' in sys.modules)") % str(ROOT / "specs" / "digits" / "kd.kd")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_a_loaded_spec_is_a_pydantic_model():
    spec = kdsl.load(ROOT / "specs" / "digits" / "kd.kd")
    again = ir.Spec.model_validate(spec.model_dump())
    assert again == spec and again.models[0].span == spec.models[0].span
