"""The IR's JSON round trip holds for every example spec, and its JSON Schema is printable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdsl

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").rglob("*.kd")) + sorted((ROOT / "examples").rglob("*.kd"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_json_round_trip(path: Path):
    spec = kdsl.load(path)
    text = spec.model_dump_json()
    again = kdsl.Spec.model_validate_json(text)
    assert again == spec
    assert again.model_dump_json() == text  # spans survive too
    assert not [w for w in spec.warnings if w.code != "KD250"], spec.warnings


def test_schema_command(cli):
    code, out, err = cli("schema")
    assert code == 0, err
    schema = json.loads(out)
    assert schema["title"] == "Spec"
    kinds = {d.get("properties", {}).get("kind", {}).get("const") for d in schema["$defs"].values()}
    assert {"model", "record", "deliver", "connector", "loss", "train", "include", "import"} <= kinds


def test_spec_equality_ignores_spans_only():
    a = kdsl.loads("student\nrecord s = output of student\nloss l = model_loss(s)\n")
    b = kdsl.loads("student\nrecord s = output of student.fc\nloss l = model_loss(s)\n")
    assert a != b
