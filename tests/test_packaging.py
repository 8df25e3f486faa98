"""Packaging: every package ships, and an installed (non-editable) kdsl finds its grammar."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "kdsl").rglob("__init__.py")}
    assert found | {"kdsl.grammar"} == listed
    assert config["package-dir"]["kdsl.grammar"] == "grammar"
    assert (ROOT / "grammar" / "kd.lark").is_file()


def test_wheel_carries_grammar_and_assets(tmp_path):
    import shutil
    import subprocess

    # build from a copy: setuptools writes build/ next to the sources
    src = tmp_path / "src"
    src.mkdir()
    for name in ("kdsl", "grammar"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    # the PEP 517 build_wheel hook of the backend pyproject.toml names, in a process of its own
    # and in the source tree, as `pip wheel --no-build-isolation` calls it (without pip's own
    # start-up and resolution: a second of CPU)
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["build-backend"]
    hook = "import importlib, sys; importlib.import_module(sys.argv[1]).build_wheel(sys.argv[2])"
    proc = subprocess.run([sys.executable, "-c", hook, backend, str(tmp_path)], capture_output=True, text=True,
                          cwd=src)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("kdsl-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kdsl/grammar/kd.lark" in names and "kdsl/assets/digits.bin.gz" in names
    assert "kdsl/catalog/logit_losses.py" in names and "kdsl/zoo/resnet.py" in names
