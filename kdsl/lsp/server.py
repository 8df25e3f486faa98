"""The language server: pygls wiring of kdsl's checks and the editor features (stdio).

The client sends the whole text on each edit (full sync): pygls splits lines as Python's
``str.splitlines`` does (form feeds and U+2028 too), which an editor does not, so an incremental edit
of such a text would land elsewhere. Lines are counted at ``\n`` as kdsl's spans count them;
characters are converted to and from the client's units (UTF-16 unless it asks for another).

A half-typed spec is the normal case: every text gets diagnostics, never an error of the server.
Requests about a document that is not open, or a position outside its text, get an
InvalidParams error. Diagnostics follow an edit after a short pause (``DEBOUNCE_S``), so a burst
of keystrokes is checked once.
"""

from __future__ import annotations

import asyncio
import keyword
import logging
import os
import re
from typing import Dict, List, Optional

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from kdsl.lang import ir
from kdsl.lang.fmt import FormatError, format_text
from kdsl.lang.loader import check_text
from kdsl.lang.statements import STATEMENT_KEYWORDS
from kdsl.lsp import complete, convert, fixes, hover
from kdsl.lsp.context import context_at
from kdsl.lsp.model_paths import ModelPaths
from kdsl.lsp.names import Index
from kdsl.lsp.text import (ClientUnits, Lines, line_tokens, parsed_statements, remember_parsed, token_at,
                           within_size_limit)

DEBOUNCE_S = 0.15  # the client may choose another: initializationOptions {"debounceMs": 0}
INTERNAL = "kdsl could not check this text"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("kdsl")
    except metadata.PackageNotFoundError:
        return "unknown (a source tree never installed)"


class KdslServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("kdsl", _version(), text_document_sync_kind=lsp.TextDocumentSyncKind.Full)
        self.debounce_s = DEBOUNCE_S
        self._split: tuple = (None, [])  # the last text to_client split into lines, and its lines
        self._lines: tuple = (None, None)  # the last text a request asked about, and its Lines
        self._units: Optional[tuple] = None  # (the client's position encoding, its ClientUnits)
        self.pending: Dict[str, asyncio.TimerHandle] = {}
        self.sources: Dict[str, Dict[str, str]] = {}  # uri -> the files its last check read
        self.indexes: Dict[str, tuple] = {}  # uri -> (the text it was built for, Index)
        self.model_paths = ModelPaths()  # opt-in: initializationOptions {"modelPaths": true}

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
        lines = self.lines(self.document(uri).source)
        line = position.line
        text = lines.line_text(line) if 0 <= line < len(lines) else None
        units = self.units()
        if text is None or not 0 <= position.character <= units.count(text):
            raise JsonRpcInvalidParams(f"position {position.line}:{position.character} is outside the "
                                       f"text of {uri} ({len(lines)} lines)")
        return lines.offset(line, units.characters(text, position.character))

    def units(self) -> ClientUnits:
        """How the client counts characters (the encoding initialize settled on)."""
        encoding = self.workspace.position_codec.encoding
        if self._units is None or self._units[0] != encoding:
            self._units = (encoding, ClientUnits(encoding))
        return self._units[1]

    def lines(self, text: str) -> Lines:
        """The line starts of ``text``, kept for the last text asked about (a request converts
        several positions, each edit brings a new text)."""
        if self._lines[0] is not text:
            self._lines = (text, Lines(text))
        return self._lines[1]

    def to_client(self, text: str, ranges: List[lsp.Range]) -> List[lsp.Range]:
        """Ranges in characters of ``text`` as the client counts them."""
        if self._split[0] is not text:
            self._split = (text, text.split("\n"))
        lines = self._split[1]
        units = self.units()

        def position(p: lsp.Position) -> lsp.Position:
            if p.line >= len(lines) or lines[p.line].isascii():
                return p
            return lsp.Position(p.line, units.count(lines[p.line][:p.character]))

        return [lsp.Range(position(r.start), position(r.end)) for r in ranges]

    def index(self, uri: str) -> Index:
        """The names of the document's text and of the files its last check included (kept until
        the next edit or check)."""
        doc = self.document(uri)
        cached = self.indexes.get(uri)
        if cached is None or cached[0] is not doc.source:
            texts = dict(self.sources.get(uri, {}))
            texts[self.path_of(uri)] = doc.source
            self.indexes[uri] = (doc.source, Index(texts))
        return self.indexes[uri][1]

    # ---- diagnostics ------------------------------------------------------------------------
    def check(self, uri: str) -> None:
        self.pending.pop(uri, None)
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return
        path = self.path_of(uri)
        try:
            parsed: Dict[str, list] = {}
            _, diagnostics, sources = check_text(doc.source, path, parsed=parsed)
            remember_parsed(sources, parsed)
            self.sources[uri] = sources
            self.indexes.pop(uri, None)  # its included files may have changed
            found = convert.to_lsp(diagnostics, path, sources)
            for d, r in zip(found, self.to_client(doc.source, [d.range for d in found])):
                d.range = r
        except Exception as exc:  # noqa: BLE001 - a bug in kdsl must not leave stale diagnostics
            found = [lsp.Diagnostic(range=convert.span_range(None), source=convert.SOURCE,
                                    message=f"{INTERNAL}: {type(exc).__name__}: {exc}. This is a bug in "
                                    "kdsl; please report it with this text.")]
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=doc.version))

    def check_soon(self, uri: str) -> None:
        if uri in self.pending:
            self.pending.pop(uri).cancel()
        self.pending[uri] = asyncio.get_running_loop().call_later(self.debounce_s, self.check, uri)

    def forget(self, uri: str) -> None:
        if uri in self.pending:
            self.pending.pop(uri).cancel()
        self.sources.pop(uri, None)
        self.indexes.pop(uri, None)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


server = KdslServer()


@server.feature(lsp.INITIALIZE)
def _initialize(ls: KdslServer, params: lsp.InitializeParams) -> None:
    options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
    debounce = options.get("debounceMs")
    if isinstance(debounce, (int, float)) and not isinstance(debounce, bool) and 0 <= debounce <= 10_000:
        ls.debounce_s = debounce / 1000
    ls.model_paths.enabled = options.get("modelPaths") is True


@server.feature(lsp.SHUTDOWN)
def _shutdown(ls: KdslServer, params: None) -> None:
    ls.model_paths.shutdown()


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
    paths = ls.model_paths.completions(text, offset, ls.index(uri), ls.path_of(uri))
    if paths is not None:  # incomplete while the worker builds the model: the editor asks again
        return lsp.CompletionList(is_incomplete=not paths[0], items=paths[1])
    ctx = context_at(text, offset)
    given = {setting.key for stmt in _statements(text, ls.path_of(uri)) if isinstance(stmt, ir.TrainDecl)
             for setting in stmt.settings} if ctx.block == "train" else set()
    return lsp.CompletionList(is_incomplete=False, items=complete.completions(ctx, ls.index(uri), given))


def _statements(text: str, path: str) -> List[ir.Node]:
    return parsed_statements(text, path)


# ---- names: definition, references, rename --------------------------------------------------
def _name_at(ls: KdslServer, uri: str, position: lsp.Position):
    offset = ls.offset(uri, position)
    text = ls.document(uri).source
    tok = token_at(line_tokens(text, offset), offset)
    return tok, ls.index(uri)


def _location(index: Index, file: str, start: int, end: int) -> lsp.Location:
    return lsp.Location(convert.uri_of(file), server.to_client(index.texts[file], [
        convert.offsets_range(index.lines[file], start, end)])[0])


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
    return lsp.Location(convert.uri_of(declared.span.file), ls.to_client(
        index.texts.get(declared.span.file, ""), [convert.span_range(declared.span)])[0])


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
    return ls.to_client(ls.document(uri).source, [convert.offsets_range(index.lines[ls.path_of(uri)],
                                                                        tok.start, tok.end)])[0]


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
            lsp.TextEdit(ls.to_client(index.texts[o.file], [convert.offsets_range(lines, o.start, o.end)])[0],
                         text))
    return lsp.WorkspaceEdit(changes=changes)


# ---- outline, formatting, code actions ------------------------------------------------------
_SYMBOL_KIND = {ir.ModelDecl: lsp.SymbolKind.Module, ir.RecordDecl: lsp.SymbolKind.Variable,
                ir.ConnectorDecl: lsp.SymbolKind.Class, ir.LossDecl: lsp.SymbolKind.Function,
                ir.ParamDecl: lsp.SymbolKind.Constant, ir.TrainDecl: lsp.SymbolKind.Struct,
                ir.StageDecl: lsp.SymbolKind.Namespace, ir.PhaseDecl: lsp.SymbolKind.Namespace,
                ir.IncludeDecl: lsp.SymbolKind.File}


def _symbol(node: ir.Node, text: str) -> Optional[lsp.DocumentSymbol]:
    kind = _SYMBOL_KIND.get(type(node))
    if kind is None or node.span is None:
        return None
    name = getattr(node, "name", None) or (f'include "{node.path}"' if isinstance(node, ir.IncludeDecl)
                                           else node.kind)
    children = [c for c in (_symbol(s, text) for s in getattr(node, "statements", ())) if c is not None]
    full, selection = server.to_client(text, [convert.span_range(node.span),
                                              convert.span_range(getattr(node, "name_span", None) or node.span)])
    if not (full.start.line, full.start.character) <= (selection.start.line, selection.start.character):
        selection = full
    return lsp.DocumentSymbol(name=name, kind=kind, range=full, selection_range=lsp.Range(selection.start, selection.start),
                              detail=node.kind, children=children or None)


@server.feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def _document_symbols(ls: KdslServer, params: lsp.DocumentSymbolParams) -> List[lsp.DocumentSymbol]:
    uri = params.text_document.uri
    text = ls.document(uri).source
    return [s for s in (_symbol(n, text) for n in _statements(text, ls.path_of(uri))) if s is not None]


@server.feature(lsp.TEXT_DOCUMENT_FORMATTING)
def _formatting(ls: KdslServer, params: lsp.DocumentFormattingParams) -> List[lsp.TextEdit]:
    uri = params.text_document.uri
    text = ls.document(uri).source
    if not within_size_limit(text):
        return []  # the diagnostics say why: a spec file this large is not read
    try:
        formatted = format_text(text, ls.path_of(uri))
    except FormatError as exc:
        raise JsonRpcInternalError(str(exc)) from exc
    if not formatted.changed:
        return []  # unchanged, or syntax errors (the diagnostics show them): nothing to do
    lines = ls.lines(text)
    return [lsp.TextEdit(ls.to_client(text, [convert.offsets_range(lines, 0, len(text))])[0], formatted.text)]


@server.feature(lsp.TEXT_DOCUMENT_CODE_ACTION)
def _code_actions(ls: KdslServer, params: lsp.CodeActionParams) -> List[lsp.CodeAction]:
    uri = params.text_document.uri
    text = ls.document(uri).source
    actions = convert.quick_fixes(uri, params.context.diagnostics)
    lines = ls.lines(text)
    for d in params.context.diagnostics:
        if not isinstance(d.code, str) or d.code not in fixes.FIXES:
            continue
        found = fixes.fix_for(d.code, text, ls.path_of(uri), lines.position(ls.offset(uri, d.range.start)))
        if found is not None:
            title, (start, end, new) = found
            edit = lsp.TextEdit(ls.to_client(text, [convert.offsets_range(lines, start, end)])[0], new)
            actions.append(lsp.CodeAction(title=title, kind=lsp.CodeActionKind.QuickFix, diagnostics=[d],
                                          edit=lsp.WorkspaceEdit(changes={uri: [edit]})))
    return actions


def _not_a_server_failure(record: logging.LogRecord) -> bool:
    """pygls logs every error answer with its traceback; an InvalidParams answer (a closed
    document, a position outside the text) is the client's mistake and the answer says so."""
    return not (record.exc_info and isinstance(record.exc_info[1], JsonRpcInvalidParams))


def main() -> None:
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_not_a_server_failure)
    server.start_io()
