"""MMRazor (mmengine) Python configs, read without executing them.

Only module-level assignments are evaluated, and only of literals, ``dict(...)``/``list(...)``
calls, names assigned earlier, ``_base_.x`` and ``{{_base_.x}}`` references, subscripts of known
values and simple arithmetic. Any other statement or value is reported as dropped. ``_base_``
files are merged by mmengine's rules: the child's keys win, nested dicts merge key by key unless
the child's dict says ``_delete_=True``; a base named ``pkg::path`` lives in another package and is
reported as not read.
"""

from __future__ import annotations

import ast
import operator
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from kdsl.convert.report import ConversionReport, Where, config_error
from kdsl.core.files import SpecFileError


class Located(dict):
    """A config mapping that remembers where it and each of its keys were written."""

    def __init__(self, *args, where: Where = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.where: Where = where
        self.key_where: Dict[str, Where] = {}

    def at(self, key: str) -> Where:
        """Where ``key`` was written (the mapping's own place when unknown)."""
        return self.key_where.get(key) or self.where


class _Unsupported(Exception):
    def __init__(self, node: ast.AST, what: str) -> None:
        super().__init__(what)
        self.node, self.what = node, what


_BINARY: Dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_BASE_REF = re.compile(r"\{\{\s*_base_\.([A-Za-z_][\w.]*)\s*\}\}")
_SUPPORTED = ("literals, dict(...)/list(...) calls, names assigned earlier, _base_ references "
              "and arithmetic")


class _Evaluator:
    """Values of one file's expressions, in an environment of the names assigned above them."""

    def __init__(self, file: str, env: Dict[str, Any], base: Located) -> None:
        self.file, self.env, self.base = file, env, base

    def where(self, node: ast.AST) -> Where:
        return (self.file, node.lineno)

    def value(self, node: ast.AST) -> Any:
        method = getattr(self, "v_" + type(node).__name__, None)
        if method is None:
            raise _Unsupported(node, f"a {type(node).__name__} expression")
        return method(node)

    def v_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def v_List(self, node: ast.List) -> Any:
        return [self.value(e) for e in node.elts]

    def v_Tuple(self, node: ast.Tuple) -> Any:
        return [self.value(e) for e in node.elts]

    def v_Dict(self, node: ast.Dict) -> Located:
        out = Located(where=self.where(node))
        for key, value in zip(node.keys, node.values):
            if key is None:  # {**other}
                out.update(self._mapping(value))
                continue
            name = self.value(key)
            out[name] = self.value(value)
            out.key_where[name] = self.where(key)
        return out

    def _mapping(self, node: ast.AST) -> dict:
        value = self.value(node)
        if not isinstance(value, dict):
            raise _Unsupported(node, "** of a value that is not a dict")
        return value

    def v_Call(self, node: ast.Call) -> Any:
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func == "dict" and not node.args:
            out = Located(where=self.where(node))
            for kw in node.keywords:
                if kw.arg is None:
                    out.update(self._mapping(kw.value))
                else:
                    out[kw.arg] = self.value(kw.value)
                    out.key_where[kw.arg] = (self.file, kw.lineno)
            return out
        if func in ("list", "tuple") and len(node.args) <= 1 and not node.keywords:
            return list(self.value(node.args[0])) if node.args else []
        name = ast.unparse(node.func)
        raise _Unsupported(node, f"a call to '{name}'")

    def v_Name(self, node: ast.Name) -> Any:
        if node.id in self.env:
            return self.env[node.id]
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        raise _Unsupported(node, f"the name '{node.id}', not assigned above")

    def v_Attribute(self, node: ast.Attribute) -> Any:
        if isinstance(node.value, ast.Name) and node.value.id == "_base_":
            return self.base_value(node, node.attr)
        value = self.value(node.value)
        if isinstance(value, dict) and node.attr in value:
            return value[node.attr]
        raise _Unsupported(node, f"the attribute '{ast.unparse(node)}'")

    def base_value(self, node: ast.AST, dotted: str) -> Any:
        value: Any = self.base
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise _Unsupported(node, f"_base_.{dotted}, which no base defines")
            value = value[part]
        return value

    def v_Subscript(self, node: ast.Subscript) -> Any:
        value, key = self.value(node.value), self.value(node.slice)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError):
            raise _Unsupported(node, f"the subscript '{ast.unparse(node)}'") from None

    def v_BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        left, right = self.value(node.left), self.value(node.right)
        if op is None or not _arithmetic(left, right):
            raise _Unsupported(node, f"the operation '{ast.unparse(node)}'")
        try:
            result = op(left, right)
        except (ArithmeticError, TypeError, ValueError, OverflowError):
            raise _Unsupported(node, f"the operation '{ast.unparse(node)}'") from None
        if _too_large(result):
            raise _Unsupported(node, f"the operation '{ast.unparse(node)}', whose result is too large")
        return result

    def v_UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise _Unsupported(node, f"the operation '{ast.unparse(node)}'")
        return op(self.value(node.operand))


MAX_LENGTH = 100_000  # characters or items of a computed string or list
MAX_INT = 10 ** 100


def _too_large(value: Any) -> bool:
    """Bounds what chains of assignments can build (``x = x + x`` on every line doubles it)."""
    if isinstance(value, (str, list)):
        return len(value) > MAX_LENGTH
    return isinstance(value, int) and abs(value) > MAX_INT


def _arithmetic(left: Any, right: Any) -> bool:
    """Numbers with numbers, or + of two strings or two lists (never huge repetitions)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    if numbers:
        return not (isinstance(right, int) and abs(right) > 64 and isinstance(left, int))
    return type(left) is type(right) and isinstance(left, (str, list))


# ---------------------------------------------------------------------------- files and bases
class ConfigReader:
    """Reads a config and its bases. ``read_text(path)`` gives a file's text or None when the
    file does not exist (the converter's only access to the file system)."""

    def __init__(self, report: ConversionReport, read_text: Callable[[str], Optional[str]]) -> None:
        self.report, self.read_text = report, read_text
        self.sources: Dict[str, str] = {}

    def read(self, text: str, file: str, chain: Tuple[str, ...] = ()) -> Located:
        self.sources[file] = text
        text = _BASE_REF.sub(lambda m: "_base_." + m.group(1), text)
        try:
            tree = ast.parse(text, filename=file)
        except SyntaxError as exc:
            raise config_error("KD760", f"the config is not valid Python: {exc.msg}",
                               (file, exc.lineno or 1), column=exc.offset or 1,
                               sources=self.sources) from None
        base = self._bases(tree, file, chain)
        env: Dict[str, Any] = {}
        own = Located(where=(file, 1))
        evaluator = _Evaluator(file, env, base)
        for stmt in tree.body:
            self._statement(stmt, evaluator, own)
        return merge(base, own)

    def _statement(self, stmt: ast.stmt, evaluator: _Evaluator, own: Located) -> None:
        where = (evaluator.file, stmt.lineno)
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            return  # a docstring
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            kind = type(stmt).__name__.lower()
            self.report.add(ast.unparse(stmt).split("\n")[0][:60], "dropped",
                            f"a statement ({kind}) the converter does not execute", where)
            return
        name = stmt.targets[0].id
        if name == "_base_":
            return
        try:
            value = evaluator.value(stmt.value)
        except _Unsupported as exc:
            self.report.add(name, "dropped", f"not evaluated: {exc.what} (the converter reads "
                            f"{_SUPPORTED})", (evaluator.file, exc.node.lineno))
            return
        evaluator.env[name] = value
        own[name] = value
        own.key_where[name] = where

    def _bases(self, tree: ast.Module, file: str, chain: Tuple[str, ...]) -> Located:
        merged = Located(where=(file, 1))
        for path, node in _base_paths(tree, file):
            if "::" in path:
                self.report.add("_base_", "dropped", f"'{path}' is a config of another package "
                                "(not read: its models, data and schedules are not converted)",
                                (file, node.lineno))
                continue
            full = os.path.normpath(os.path.join(os.path.dirname(file), path))
            if full in chain + (file,):
                loop = " -> ".join(chain + (file, full))
                raise config_error("KD762", f"the config's bases form a cycle: {loop}",
                                   (file, node.lineno), column=node.col_offset + 1,
                                   width=len(path) + 2, sources=self.sources)
            try:
                text = self.read_text(full)
            except SpecFileError as exc:
                raise config_error("KD760", f"base config '{path}' cannot be read: {exc.message}",
                                   (file, node.lineno), column=node.col_offset + 1,
                                   width=len(path) + 2, hint=exc.hint,
                                   sources=self.sources) from None
            if text is None:
                raise config_error("KD761", f"base config '{path}' not found (looked for {full})",
                                   (file, node.lineno), column=node.col_offset + 1,
                                   width=len(path) + 2, hint="_base_ paths are relative to the "
                                   "config that names them", sources=self.sources)
            merged = merge(merged, self.read(text, full, chain + (file,)))
        return merged


def _base_paths(tree: ast.Module, file: str) -> List[Tuple[str, ast.Constant]]:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_"
                                                for t in stmt.targets):
            nodes = stmt.value.elts if isinstance(stmt.value, (ast.List, ast.Tuple)) else [stmt.value]
            found = []
            for node in nodes:
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                    raise config_error("KD760", "_base_ must be a string or a list of strings",
                                       (file, node.lineno), column=node.col_offset + 1)
                found.append((node.value, node))
            return found
    return []


def merge(base: Any, child: Any) -> Any:
    """mmengine's merge: the child's value wins, dicts merge key by key unless the child's dict
    holds ``_delete_=True`` (which is removed)."""
    if not isinstance(child, dict):
        return child
    delete = bool(child.get("_delete_", False))
    if not isinstance(base, dict) or delete:
        out = Located({k: v for k, v in child.items() if k != "_delete_"},
                      where=getattr(child, "where", None))
        out.key_where.update(getattr(child, "key_where", {}))
        return out
    out = Located(base, where=getattr(child, "where", None) or getattr(base, "where", None))
    out.key_where.update(getattr(base, "key_where", {}))
    for key, value in child.items():
        if key == "_delete_":
            continue
        out[key] = merge(base.get(key), value)
        if key in getattr(child, "key_where", {}):
            out.key_where[key] = child.key_where[key]
    return out
