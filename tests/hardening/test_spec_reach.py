"""What a spec may execute (issue #13, item 7). ``method``/``function`` targets of records and
deliveries must lie in the models' own code (the packages of the models' classes, and kdsl) or in
a module the spec imports; anything else is a located KD520, and is never imported. ``kdsl check``
without models imports nothing. ``dataset(...)`` takes options by name only."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import kdsl
from kdsl.lang.loader import check_text

BASE = """student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher")
record s = output of student
record t = output of teacher
loss kd = kl_div(s, t)
"""

PROBE = '''
import pathlib

MARKER = pathlib.Path(__file__).with_name("imported")
MARKER.write_text("the module ran")


def helper(x):
    return x
'''


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A package whose import leaves a mark: ``kd_probe_pkg.ops:helper``."""
    pkg = tmp_path / "kd_probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text(textwrap.dedent(PROBE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg / "imported"
    for name in [n for n in sys.modules if n.startswith("kd_probe_pkg")]:
        del sys.modules[name]


def _compile(text: str, dry: bool = True):
    return kdsl.compile(kdsl.loads(text, "s.kd"), example_input=torch.zeros(2, 1, 8, 8) if dry else None)


@pytest.mark.parametrize("line, what", [
    ('record x = output of function "json:dumps" in student\n', 'function "json:dumps"'),
    ('record x = input 0 of function "textwrap:dedent" in student\n', 'function "textwrap:dedent"'),
    ('deliver output of method "json:JSONEncoder.encode" from teacher to student\n',
     'method "json:JSONEncoder.encode"'),
])
def test_targets_outside_the_models_code_are_refused(line, what):
    text = BASE + line
    with pytest.raises(kdsl.KdslError) as info:
        _compile(text)
    (diag,) = info.value.errors
    assert diag.code == "KD520" and diag.message == (
        f"{what} is outside the models' code, so the spec may not patch it")
    module = what.split('"')[1].split(":")[0]
    assert diag.span.line == 6 and text.splitlines()[5][diag.span.column - 1:].startswith(f'"{module}:')
    assert diag.hints[0] == f'if the spec means to reach it, import its module: import "{module}"'
    assert diag.hints[1] == "the models' code: the packages kdsl, torch"


@pytest.mark.parametrize("line", [
    'record x = output of function "os:system" in student\n',
    'record x = input 0 of function "builtins:open" in student\n',
    'deliver output of method "subprocess:Popen.__init__" from teacher to student\n',
])
def test_targets_in_system_modules_are_refused_even_when_imported(line):
    # os, builtins, subprocess: KD406 when the spec is read, whatever it imports (no KD520 hint
    # to `import "os"`, which is refused too)
    module = line.split('"')[1].split(":")[0]
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.loads(f'import "{module}"\n' + BASE + line, "s.kd")
    assert {d.code for d in info.value.errors} == {"KD406"}


def test_a_refused_target_is_never_imported(probe):
    with pytest.raises(kdsl.KdslError) as info:
        _compile(BASE + 'record x = output of function "kd_probe_pkg.ops:helper" in student\n')
    assert [d.code for d in info.value.errors] == ["KD520"]
    assert not probe.exists() and "kd_probe_pkg.ops" not in sys.modules


@pytest.mark.parametrize("imported", ["kd_probe_pkg.ops", "kd_probe_pkg"])
def test_importing_the_module_or_its_package_allows_it(probe, imported):
    text = f'import "{imported}"\n' + BASE + 'record x = output of function "kd_probe_pkg.ops:helper" in student\n'
    with _compile(text, dry=False) as d:  # (the digits models never call helper: no dry run)
        assert "x" in d.plan.records and probe.exists()


def test_the_models_own_packages_are_allowed():
    # torch defines the digits models' layers: its functions are the models' code
    text = BASE + 'record r = output of function "torch.nn.functional:relu" in student\n' \
        + 'record m = output of method "kdsl.zoo.digits:DigitsCNN.forward" in student\n'
    with _compile(text) as d:
        assert {"r", "m"} <= set(d.plan.records)


def test_check_without_models_imports_nothing(probe):
    # (an `import` line is imported by the checker itself: it may register components)
    text = BASE.replace("teacher = model(\"kdsl.zoo:digits_teacher\")",
                        'teacher = model("kd_probe_pkg.ops:helper")') \
        + 'record x = output of function "kd_probe_pkg.ops:helper" in student\n'
    spec, diags = check_text(text, "s.kd")[:2]
    assert spec is not None and not [d for d in diags if d.is_error]
    assert not probe.exists() and "kd_probe_pkg.ops" not in sys.modules


def test_positional_dataset_options_are_a_located_error():
    text = BASE + 'train {\n  data = dataset("kdsl.data:digits", 64, 0.2)\n}\n'
    _, diags = check_text(text, "s.kd")[:2]
    errors = [d for d in diags if d.is_error]
    assert [d.code for d in errors] == ["KD306"]
    assert errors[0].message == ("dataset(...) takes the data reference, then options by name; "
                                 "2 positional options here")
    assert (errors[0].span.line, errors[0].span.column) == (7, 38)
    assert errors[0].hints == ('write name=value, e.g. dataset("kdsl.data:digits", batch_size=64)',)
