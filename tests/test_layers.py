"""The pipeline's layering, checked on the source: no import cycles, no import upwards.

Every module in ``kdsl/`` belongs to a stage with a rank; a module may import modules of its own
stage or of a lower rank, never a higher one, and the module graph (imports inside functions
included) has no cycle. The package facade ``kdsl/__init__.py`` sits above everything: nothing
inside the package imports it.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "kdsl"

# Lowest first. zoo and data are leaves that specs name by reference ("kdsl.zoo:resnet8x4").
RANKS = {
    "core": 0,
    "catalog": 1,
    "lang": 2,
    "components": 3,
    "convert": 3,  # kdsl convert: reads configs, prints specs through lang's printer (torch-free)
    "zoo": 3,
    "data": 3,
    "text_data": 3,
    "prompt_tasks": 3,
    "prompt_batches": 3,
    "prompt_data": 3,
    "hub": 3,
    "lora": 3,
    "io": 3,
    "runtime": 4,
    "compiler": 5,
    "training": 6,
    "reports": 6,
    "cli": 7,
    "integrations": 7,  # kdsl.integrations: Hugging Face Trainer, Lightning (beside the CLI)
    "lsp": 7,  # the language server: beside the CLI (it shows catalog entries as `kdsl list` does)
}
FACADE = 8  # kdsl/__init__.py and kdsl/__main__.py
SIZE_LIMIT = 500  # lines per module (the restructure's rule)
FUNCTION_LIMIT = 80  # lines per function


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> Dict[str, pathlib.Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}


def _stage(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return FACADE
    return RANKS[parts[1]]


def _imports(path: pathlib.Path, module: str, known: Set[str]) -> List[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "kdsl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "kdsl":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            found += subs if len(subs) == len(node.names) else [target] + subs
    return [t for t in found if t in known]


def _graph() -> Dict[str, List[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, m, known) for m, p in modules.items()}


def test_every_module_has_a_stage():
    for module in _modules():
        _stage(module)  # KeyError names a subpackage missing from RANKS


def test_no_import_goes_upwards():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if target == "kdsl" and module != "kdsl":
                upward.append(f"{module} imports the package facade 'kdsl'")
            elif _stage(target) > _stage(module):
                upward.append(f"{module} (rank {_stage(module)}) imports {target} (rank {_stage(target)})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = _graph()
    state: Dict[str, int] = {}
    stack: List[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if t == m:
                continue
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(cycles)


def test_modules_and_functions_stay_small():
    too_big = []
    for module, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > SIZE_LIMIT:
            too_big.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LIMIT:
                    too_big.append(f"{module}.{node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)


def test_the_compiler_package_holds_only_the_passes_and_what_they_use():
    """Every module of ``kdsl/compiler/`` is reached from the pass list (``compiler.py``); reports
    (check, explain, graph) live in ``kdsl/reports/``, file reading in ``kdsl/io/``."""
    graph = _graph()
    reached, todo = set(), ["kdsl.compiler.compiler"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [t for t in graph.get(module, []) if t.startswith("kdsl.compiler.")]
    stray = sorted(m for m in graph if m.startswith("kdsl.compiler.") and m not in reached)
    assert not stray, "not used by any pass: " + ", ".join(stray)
