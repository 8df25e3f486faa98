"""The language server: pygls wiring of kdsl's checks and the editor features (stdio).

A half-typed spec is the normal case: every text gets diagnostics, never an error of the server.
Requests about a document that is not open, or a position outside its text, get an
InvalidParams error. Diagnostics follow an edit after a short pause (``DEBOUNCE_S``), so a burst
of keystrokes is checked once.
"""

from __future__ import annotations

import asyncio
import keyword
import os
import re
from typing import Dict, List, Optional

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from kdsl.lang import ir
from kdsl.lang.fmt import FormatError, format_text, lowered_statements
from kdsl.lang.loader import check_text
from kdsl.lang.statements import STATEMENT_KEYWORDS
from kdsl.lsp import complete, convert, hover
from kdsl.lsp.context import context_at
from kdsl.lsp.names import Index
from kdsl.lsp.text import Lines, token_at, tokens

DEBOUNCE_S = 0.15
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("kdsl")
    except metadata.PackageNotFoundError:
        return "unknown (a source tree never installed)"


class KdslServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("kdsl", _version(), text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.pending: Dict[str, asyncio.TimerHandle] = {}
        self.sources: Dict[str, Dict[str, str]] = {}  # uri -> the files its last check read

    # ---- documents --------------------------------------------------------------------------
    def document(self, uri: str):
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            raise JsonRpcInvalidParams(f"the document {uri} is not open (open it with didOpen first)")
        return doc

    def path_of(self, uri: str) -> str:
        path = to_fs_path(uri) if uri.startswith("file:") else None
        return os.path.abspath(path) if path else f"<{uri}>"

    def offset(self, uri: str, position: lsp.Position) -> int:
        doc = self.document(uri)
        lines = Lines(doc.source)
        if not lines.contains(position.line, position.character):
            raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is outside the "
                                       f"text of {uri} ({len(lines)} lines)")
        return lines.offset(position.line, position.character)

    def index(self, uri: str) -> Index:
        doc = self.document(uri)
        path = self.path_of(uri)
        texts = dict(self.sources.get(uri, {}))
        texts[path] = doc.source
        return Index(texts)

    # ---- diagnostics ------------------------------------------------------------------------
    def check(self, uri: str) -> None:
        self.pending.pop(uri, None)
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return
        path = self.path_of(uri)
        _, diagnostics, sources = check_text(doc.source, path)
        self.sources[uri] = sources
        found = convert.to_lsp(diagnostics, path, sources)
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=doc.version))

    def check_soon(self, uri: str) -> None:
        if uri in self.pending:
            self.pending.pop(uri).cancel()
        self.pending[uri] = asyncio.get_running_loop().call_later(DEBOUNCE_S, self.check, uri)

    def forget(self, uri: str) -> None:
        if uri in self.pending:
            self.pending.pop(uri).cancel()
        self.sources.pop(uri, None)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


server = KdslServer()


@server.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
def _did_open(ls: KdslServer, params: lsp.DidOpenTextDocumentParams) -> None:
    ls.check(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
def _did_change(ls: KdslServer, params: lsp.DidChangeTextDocumentParams) -> None:
    ls.check_soon(params.text_document.uri)


@server.feature(lsp.TEXT_DOCUMENT_DID_SAVE)
def _did_save(ls: KdslServer, params: lsp.DidSaveTextDocumentParams) -> None:
    ls.check(params.text_document.uri)  # an included file may have changed on disk


@server.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
def _did_close(ls: KdslServer, params: lsp.DidCloseTextDocumentParams) -> None:
    ls.forget(params.text_document.uri)


# ---- hover, completion ----------------------------------------------------------------------
@server.feature(lsp.TEXT_DOCUMENT_HOVER)
def _hover(ls: KdslServer, params: lsp.HoverParams) -> Optional[lsp.Hover]:
    offset = ls.offset(params.text_document.uri, params.position)
    found = hover.hover_text(ls.document(params.text_document.uri).source, offset,
                             ls.index(params.text_document.uri))
    if found is None:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=found))


@server.feature(lsp.TEXT_DOCUMENT_COMPLETION, lsp.CompletionOptions(trigger_characters=["(", ","]))
def _completion(ls: KdslServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    uri = params.text_document.uri
    offset = ls.offset(uri, params.position)
    text = ls.document(uri).source
    ctx = context_at(text, offset)
    given = {s.key for s in _statements(text, ls.path_of(uri)) if isinstance(s, ir.TrainDecl)
             for s in s.settings} if ctx.block == "train" else set()
    return lsp.CompletionList(is_incomplete=False, items=complete.completions(ctx, ls.index(uri), given))


def _statements(text: str, path: str) -> List[ir.Node]:
    return lowered_statements(text, path)[0]


# ---- names: definition, references, rename --------------------------------------------------
def _name_at(ls: KdslServer, uri: str, position: lsp.Position):
    offset = ls.offset(uri, position)
    text = ls.document(uri).source
    tok = token_at(tokens(text), offset)
    return tok, ls.index(uri)


def _location(index: Index, file: str, start: int, end: int) -> lsp.Location:
    return lsp.Location(convert.uri_of(file), convert.offsets_range(index.lines[file], start, end))


@server.feature(lsp.TEXT_DOCUMENT_DEFINITION)
def _definition(ls: KdslServer, params: lsp.DefinitionParams) -> Optional[lsp.Location]:
    uri = params.text_document.uri
    tok, index = _name_at(ls, uri, params.position)
    if tok is None:
        return None
    if tok.kind == "string":
        for stmt in _statements(ls.document(uri).source, ls.path_of(uri)):
            if isinstance(stmt, ir.IncludeDecl) and stmt.path_span.line - 1 == params.position.line:
                target = os.path.join(os.path.dirname(ls.path_of(uri)), stmt.path)
                return lsp.Location(convert.uri_of(target), lsp.Range(lsp.Position(0, 0), lsp.Position(0, 0)))
        return None
    declared = index.find(tok.text) if tok.kind == "name" else None
    if declared is None:
        return None
    return lsp.Location(convert.uri_of(declared.span.file), convert.span_range(declared.span))


@server.feature(lsp.TEXT_DOCUMENT_REFERENCES)
def _references(ls: KdslServer, params: lsp.ReferenceParams) -> List[lsp.Location]:
    tok, index = _name_at(ls, params.text_document.uri, params.position)
    if tok is None or tok.kind != "name" or index.find(tok.text) is None:
        return []
    return [_location(index, o.file, o.start, o.end) for o in index.occurrences(tok.text)]


@server.feature(lsp.TEXT_DOCUMENT_PREPARE_RENAME)
def _prepare_rename(ls: KdslServer, params: lsp.PrepareRenameParams) -> Optional[lsp.Range]:
    uri = params.text_document.uri
    tok, index = _name_at(ls, uri, params.position)
    if tok is None or tok.kind != "name" or index.find(tok.text) is None:
        return None
    return convert.offsets_range(index.lines[ls.path_of(uri)], tok.start, tok.end)


@server.feature(lsp.TEXT_DOCUMENT_RENAME)
def _rename(ls: KdslServer, params: lsp.RenameParams) -> Optional[lsp.WorkspaceEdit]:
    new = params.new_name
    if not _IDENTIFIER.match(new) or new in STATEMENT_KEYWORDS or keyword.iskeyword(new):
        raise JsonRpcInvalidParams(f"'{new}' cannot be a name: a name is a letter or '_' followed by "
                                   "letters, digits or '_', and not a keyword")
    tok, index = _name_at(ls, params.text_document.uri, params.position)
    declared = index.find(tok.text) if tok is not None and tok.kind == "name" else None
    if declared is None:
        return None
    changes: Dict[str, List[lsp.TextEdit]] = {}
    for o in index.occurrences(tok.text):
        lines = index.lines[o.file]
        bare = declared.bare_role and o.file == declared.span.file \
            and lines.position(o.start) == (declared.span.line - 1, declared.span.column - 1)
        text = f"{declared.node.role} {new}" if bare else new  # `student = ...` -> `student s2 = ...`
        changes.setdefault(convert.uri_of(o.file), []).append(
            lsp.TextEdit(convert.offsets_range(lines, o.start, o.end), text))
    return lsp.WorkspaceEdit(changes=changes)


# ---- outline, formatting, code actions ------------------------------------------------------
_SYMBOL_KIND = {ir.ModelDecl: lsp.SymbolKind.Module, ir.RecordDecl: lsp.SymbolKind.Variable,
                ir.ConnectorDecl: lsp.SymbolKind.Class, ir.LossDecl: lsp.SymbolKind.Function,
                ir.ParamDecl: lsp.SymbolKind.Constant, ir.TrainDecl: lsp.SymbolKind.Struct,
                ir.StageDecl: lsp.SymbolKind.Namespace, ir.PhaseDecl: lsp.SymbolKind.Namespace,
                ir.IncludeDecl: lsp.SymbolKind.File}


def _symbol(node: ir.Node) -> Optional[lsp.DocumentSymbol]:
    kind = _SYMBOL_KIND.get(type(node))
    if kind is None or node.span is None:
        return None
    name = getattr(node, "name", None) or (f'include "{node.path}"' if isinstance(node, ir.IncludeDecl)
                                           else node.kind)
    children = [c for c in (_symbol(s) for s in getattr(node, "statements", ())) if c is not None]
    full = convert.span_range(node.span)
    selection = convert.span_range(getattr(node, "name_span", None) or node.span)
    if not (full.start.line, full.start.character) <= (selection.start.line, selection.start.character):
        selection = full
    return lsp.DocumentSymbol(name=name, kind=kind, range=full, selection_range=lsp.Range(selection.start, selection.start),
                              detail=node.kind, children=children or None)


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def _document_symbols(ls: KdslServer, params: lsp.DocumentSymbolParams) -> List[lsp.DocumentSymbol]:
    uri = params.text_document.uri
    statements = _statements(ls.document(uri).source, ls.path_of(uri))
    return [s for s in (_symbol(n) for n in statements) if s is not None]


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def _formatting(ls: KdslServer, params: lsp.DocumentFormattingParams) -> List[lsp.TextEdit]:
    uri = params.text_document.uri
    text = ls.document(uri).source
    try:
        formatted = format_text(text, ls.path_of(uri))
    except FormatError as exc:
        raise JsonRpcInternalError(str(exc)) from exc
    if not formatted.changed:
        return []  # unchanged, or syntax errors (the diagnostics show them): nothing to do
    lines = Lines(text)
    return [lsp.TextEdit(convert.offsets_range(lines, 0, len(text)), formatted.text)]


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION)
def _code_actions(ls: KdslServer, params: lsp.CodeActionParams) -> List[lsp.CodeAction]:
    ls.document(params.text_document.uri)
    return convert.quick_fixes(params.text_document.uri, params.context.diagnostics)


def main() -> None:
    server.start_io()
