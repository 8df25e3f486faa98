"""`kdsl list` prints values as the language writes them (issue #27.10: `weights=None`,
`pretrained=False` were rejected when pasted into a spec)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kdsl.cli.app import app
from kdsl.cli.list_cmd import INTEGRATIONS, _arguments
from kdsl.lang.refs import parse_call


def test_arguments_are_printed_in_the_language():
    def factory(num_classes=10, pretrained=False, weights=None, name="x", sizes=(1, 2)):
        return None

    assert _arguments(factory) == '(num_classes=10, pretrained=false, weights=none, name="x", sizes=[1, 2])'


@pytest.mark.parametrize("package, example", [(p, e) for p, e, _ in INTEGRATIONS if "..." not in e])
def test_the_hub_examples_parse_as_references(package, example):
    ref, _, kwargs = parse_call(example, "--student")
    assert ref.startswith(package) and kwargs  # e.g. weights=none reads as None


def test_list_models_shows_no_python_literals():
    result = CliRunner().invoke(app, ["list", "models"], env={"NO_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "weights=none" in result.output and "pretrained=false" in result.output
    for python in ("=None", "=False", "=True"):
        assert python not in result.output
