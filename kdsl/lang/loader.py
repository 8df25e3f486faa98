"""Files -> verified :class:`~kdsl.lang.ir.Spec`: reading, includes, plugin imports, then the verify pass.

``include "base.kd"`` splices the statements of another file (relative to the including file) in
place; ``import "pkg.module"`` imports a Python module that registers components. Nothing here
imports torch unless a spec's own ``import`` does.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Tuple

from kdsl.lang import ir
from kdsl.lang.lower import build_statements
from kdsl.core.diagnostics import Diagnostic, Diagnostics, KdslError, Note, sorted_diagnostics
from kdsl.core.frozen import trusted_construction
from kdsl.core.files import MAX_SPEC_BYTES, SpecFileError, check_spec_size, read_spec_text
from kdsl.core.resolve import MODULE_PATTERN, import_module
from kdsl.core.suggest import suggestion_budget
from kdsl.core.span import SourceText, Span
from kdsl.lang.params import GivenValues
from kdsl.lang.verify import Verifier



class _Loader:
    def __init__(self) -> None:
        self.sources: Dict[str, str] = {}
        self.diags = Diagnostics(self.sources)
        self.includes: List[str] = []
        self.broken: List[Tuple[str, str]] = []
        self.size = 0  # bytes read so far: a spec and its includes share MAX_SPEC_BYTES
        self.parsed: Dict[str, List[ir.Node]] = {}  # each file's statements, includes not spliced

    def read(self, path: str, span=None, text: Optional[str] = None) -> Optional[str]:
        """The text of spec file ``path`` (or ``text``, a spec given as text), within the size
        limit; None after reporting why it cannot be read."""
        try:
            if text is None:
                text = read_spec_text(path, included=span is not None, limit=MAX_SPEC_BYTES - self.size)
            else:
                check_spec_size(path, text)
        except SpecFileError as exc:
            if span is None and exc.position is not None:  # where reading stopped
                span = Span.point(path, *exc.position)
            self.diags.error("KD401", exc.message, span, hint=exc.hint)
            return None
        self.size += len(text)
        return text

    def statements(self, name: str, text: str, chain: Tuple[str, ...]) -> List[ir.Node]:
        self.sources[name] = text
        out: List[ir.Node] = []
        here = os.path.dirname(name) if not name.startswith("<") else ""
        self.parsed[name] = build_statements(SourceText(name, text), self.diags, self.broken)
        for stmt in self.parsed[name]:
            if isinstance(stmt, ir.IncludeDecl):
                path = os.path.normpath(os.path.join(here, stmt.path))
                key = os.path.abspath(path)
                if key in chain:
                    self.diags.error(
                        "KD402", f"include cycle: {path} is already being included", stmt.path_span,
                        notes=[Note(message="the cycle runs through "
                                    + " -> ".join(os.path.relpath(c) for c in chain + (key,)))])
                    continue
                text2 = self.read(path, stmt.path_span)
                if text2 is None:
                    continue
                self.includes.append(path)
                out.extend(self.statements(path, text2, chain + (key,)))
            else:
                out.append(stmt)
        return out

    def import_plugins(self, statements: List[ir.Node], spec_dir: str) -> None:
        # A plugin module may sit next to the spec, as a script's modules sit next to it.
        added = bool(spec_dir) and spec_dir not in sys.path
        if added:
            sys.path.insert(0, spec_dir)
        try:
            self._import_each(statements)
        finally:
            if added:
                sys.path.remove(spec_dir)

    def _import_each(self, statements: List[ir.Node]) -> None:
        for stmt in statements:
            if not isinstance(stmt, ir.ImportDecl):
                continue
            if not MODULE_PATTERN.match(stmt.module):
                self.diags.error("KD403", f"malformed import path \"{stmt.module}\"", stmt.module_span,
                                 hint='import takes a dotted module path such as "my_project.kd_parts"')
                continue
            try:
                import_module(stmt.module, span=stmt.module_span)
            except KdslError as exc:
                self.diags.extend(exc.diagnostics)

    def spec(self, name: str, text: str, params=None) -> Optional[ir.Spec]:
        from kdsl.lang.params import given_params

        given = given_params(params, self.diags, self.sources)
        start = (os.path.abspath(name),) if not name.startswith("<") else ()
        statements = self.statements(name, text, start)
        self.import_plugins(statements, os.path.dirname(os.path.abspath(name))
                            if not name.startswith("<") else "")
        verified = Verifier(self.diags, file=name, broken=self.broken, given=given).run(statements)
        if self.diags.has_errors:
            return None
        spec = ir.Spec(file=name, statements=tuple(verified), includes=tuple(self.includes))
        spec._sources.update(self.sources)
        return spec


def check_text(text: str, filename: str = "<string>", params: GivenValues = None,
               parsed: Optional[Dict[str, List[ir.Node]]] = None,
               ) -> Tuple[Optional[ir.Spec], List[Diagnostic], Dict[str, str]]:
    """Every diagnostic for a spec's text, and the spec when there are no errors. ``params``:
    values for the spec's params (``--set``'s NAME=VALUE texts, or ``{NAME: value}``). ``parsed``,
    when given, receives the statements of each file read (as ``lowered_statements`` gives them):
    the language server answers requests about the checked text without parsing it again."""
    loader = _Loader()
    loader.parsed = parsed if parsed is not None else loader.parsed
    with trusted_construction():  # the front end's nodes are well-typed by construction
        if loader.read(filename, text=text) is None:
            return None, loader.diags.items, loader.sources
        with suggestion_budget():  # all the check's did-you-means together are bounded
            spec = loader.spec(filename, text, params)
    return spec, sorted_diagnostics(loader.diags.items), loader.sources


def check_file(path: str, params: GivenValues = None) -> Tuple[Optional[ir.Spec], List[Diagnostic], Dict[str, str]]:
    loader = _Loader()
    with trusted_construction():
        text = loader.read(path)
        if text is None:
            return None, loader.diags.items, loader.sources
        with suggestion_budget():
            spec = loader.spec(path, text, params)
    return spec, sorted_diagnostics(loader.diags.items), loader.sources


def _finish(result) -> ir.Spec:
    spec, diagnostics, sources = result
    if spec is None:
        raise KdslError(diagnostics, sources)
    spec._warnings = [d for d in diagnostics if not d.is_error]  # type: ignore[attr-defined]
    return spec


def loads(text: str, filename: str = "<string>", params: GivenValues = None) -> ir.Spec:
    """Parse and verify a spec from text. Raises :class:`kdsl.KdslError` listing every error;
    warnings are on ``spec.warnings``. ``params`` (``{"tau": 2}``) replaces the values of the
    spec's params, checked as the spec's own are."""
    return _finish(check_text(text, filename, params))


def load(path: "str | os.PathLike[str]", params: GivenValues = None) -> ir.Spec:
    """Parse and verify a spec file (and the files it includes); ``params`` as for :func:`loads`."""
    return _finish(check_file(os.fspath(path), params))


def with_params(spec: ir.Spec, params: GivenValues) -> ir.Spec:
    """``spec`` verified again with ``params`` in place of its params' values (a loaded spec
    keeps its source text, so a value is checked as if given when it was loaded)."""
    if not params:
        return spec
    if spec.file.startswith("<"):  # a spec given as text
        return loads(spec.sources[spec.file], spec.file, params)
    return load(spec.file, params)


def check(path: "str | os.PathLike[str]") -> List[Diagnostic]:
    """Every diagnostic (errors and warnings) for a spec file, without raising."""
    return check_file(os.fspath(path))[1]
