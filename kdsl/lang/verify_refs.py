"""References into kdsl itself (``kdsl.data:digits``, ``kdsl.zoo:resnet8x4``), checked without
importing anything: the module's file is found under the installed package and read with ``ast``.

A misspelled ``kdsl.data:digitz`` is then a located error of ``kdsl check`` (and of every command,
since they all verify first), with a did-you-mean, instead of surfacing at ``kdsl train`` as an
unlocated KD503 after torch was imported. References to other packages are left to the commands
that import them: importing user code is what ``kdsl check`` without models never does.
"""

from __future__ import annotations

import functools
import os
import re
from typing import FrozenSet, Iterator, Optional, Sequence, Tuple

from kdsl.core.diagnostics import Diagnostics
from kdsl.core.resolve import REF_PATTERN
from kdsl.core.span import Span
from kdsl.core.suggest import did_you_mean
from kdsl.lang import ir

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module_file(module: str) -> Optional[str]:
    """The source file of ``kdsl.a.b`` (``kdsl/a/b.py`` or ``kdsl/a/b/__init__.py``), or None."""
    base = os.path.join(_PACKAGE, *module.split(".")[1:])
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _submodules(package: str) -> Sequence[str]:
    """The modules and packages directly inside kdsl package ``package``."""
    folder = os.path.join(_PACKAGE, *package.split(".")[1:])
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    names = [e[:-3] for e in entries if e.endswith(".py") and e != "__init__.py"]
    names += [e for e in entries if os.path.isfile(os.path.join(folder, e, "__init__.py"))]
    return [f"{package}.{n}" for n in names if not n.startswith("_")]


@functools.lru_cache(maxsize=None)
def _source(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _written_in(name: str, path: str) -> bool:
    """Whether ``name`` occurs in the module's source as a word: the cheap test that passes every
    name the module defines (parsing it, ~5 ms of a check's time, is left for a name that fails)."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", _source(path)) is not None


@functools.lru_cache(maxsize=None)
def _top_level_names(path: str) -> Optional[FrozenSet[str]]:
    """The names a module file binds at its top level; None when they cannot be known statically
    (a module ``__getattr__`` or a star import)."""
    import ast  # only for a name the word search did not find: most checks never parse

    tree = ast.parse(_source(path), path)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return None if "__getattr__" in names else frozenset(names)


def check_kdsl_reference(diags: Diagnostics, ref: str, what: str, span: Optional[Span]) -> None:
    """Report a ``kdsl.*`` reference whose module or first attribute does not exist, with the
    codes the importing resolver (:mod:`kdsl.core.resolve`) gives: KD404 and KD503."""
    if not ref.startswith("kdsl.") or not REF_PATTERN.match(ref):
        return
    module, _, attrs = ref.partition(":")
    path = _module_file(module)
    if path is None:
        parent = module.rpartition(".")[0]
        diags.error("KD404", f"cannot import \"{module}\" for {what} \"{ref}\": no module named '{module}'", span,
                    hint=did_you_mean(module, _submodules(parent)) or "is the package installed, or on PYTHONPATH?")
        return
    attr = attrs.split(".")[0]
    if _written_in(attr, path):
        return
    names = _top_level_names(path)
    if names is not None and attr not in names:
        public = sorted(n for n in names if not n.startswith("_"))
        diags.error("KD503", f"'{module}' has no attribute '{attr}'", span, hint=did_you_mean(attr, public))


def _references(statements: Sequence[ir.Node]) -> Iterator[Tuple[str, str, Optional[Span]]]:
    """(reference, what it is, where it is written) for each factory ``statements`` call: models and
    data. (Method and function targets are checked with the models, which say more about them.)"""
    for stmt in statements:
        if isinstance(stmt, ir.ModelDecl) and stmt.factory is not None:
            yield stmt.factory.ref, "model", stmt.factory.ref_span or stmt.span
        elif isinstance(stmt, ir.TrainDecl) and stmt.get("data") is not None:
            value = stmt.get("data").value
            if isinstance(value, ir.Call) and value.func == "dataset" and value.args:
                value = value.args[0]
            if isinstance(value, ir.Const) and isinstance(value.value, str):
                yield value.value, "data", value.span


def check_kdsl_references(diags: Diagnostics, statements: Sequence[ir.Node]) -> None:
    """Every ``kdsl.*`` reference of the verified ``statements``, checked without importing it."""
    for ref, what, span in _references(statements):
        check_kdsl_reference(diags, ref, what, span)
