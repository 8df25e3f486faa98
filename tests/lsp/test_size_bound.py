"""A text past the spec size limit (1.4-2.8 MB from the fuzzer, issue #23) is answered with the size
error alone: no request parses or scans the whole text, so every answer stays quick. Counted, not
timed: the characters that the parser and the editor's tokenizer read over every request."""

from __future__ import annotations

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")

from lsprotocol import types  # noqa: E402
from pygls.workspace import Workspace  # noqa: E402

from kdsl.core.files import MAX_SPEC_BYTES  # noqa: E402
from kdsl.lang import fmt, loader  # noqa: E402
from kdsl.lsp import server as srv  # noqa: E402
from kdsl.lsp import text as lsp_text  # noqa: E402

URI = "file:///tmp/big.kd"
SPEC = 'student = model("kdsl.models:mlp")\nteacher = model("kdsl.models:mlp")\n'


class _CountingPattern:
    """The editor tokenizer's pattern, counting the characters it is asked to scan."""

    def __init__(self, pattern, counts):
        self.pattern, self.counts = pattern, counts

    def finditer(self, text, start, end):
        self.counts["tokenized"] += end - start
        return self.pattern.finditer(text, start, end)


@pytest.fixture
def counted(monkeypatch):
    counts = {"parsed": 0, "tokenized": 0}

    def count_parse(original):
        def parse(source, *args, **kwargs):
            counts["parsed"] += len(source.text)
            return original(source, *args, **kwargs)
        return parse

    monkeypatch.setattr(fmt, "lower_file", count_parse(fmt.lower_file))
    monkeypatch.setattr(loader, "build_statements", count_parse(loader.build_statements))
    monkeypatch.setattr(lsp_text, "_TOKEN", _CountingPattern(lsp_text._TOKEN, counts))
    return counts


def _server(text: str, published: list, monkeypatch) -> srv.KdslServer:
    """A server with ``text`` open, its handlers called in this process."""
    ls = srv.KdslServer()
    monkeypatch.setattr(srv, "server", ls)  # the handlers' own helpers use the module's server
    ls.protocol._workspace = Workspace(None, sync_kind=types.TextDocumentSyncKind.Full,
                                       position_encoding=types.PositionEncodingKind.Utf32)
    ls.workspace.put_text_document(types.TextDocumentItem(uri=URI, language_id="kdsl", version=1, text=text))
    ls.text_document_publish_diagnostics = published.append
    return ls


def _ask_everything(ls: srv.KdslServer, text: str, line: int) -> None:
    doc = types.TextDocumentIdentifier(uri=URI)
    for pos in (types.Position(0, 1), types.Position(line, 0), types.Position(1, 3),
                types.Position(0, len(text.partition("\n")[0]))):
        at = {"text_document": doc, "position": pos}
        srv._hover(ls, types.HoverParams(**at))
        srv._completion(ls, types.CompletionParams(**at))
        srv._definition(ls, types.DefinitionParams(**at))
        srv._references(ls, types.ReferenceParams(**at, context=types.ReferenceContext(include_declaration=True)))
        srv._prepare_rename(ls, types.PrepareRenameParams(**at))
    srv._document_symbols(ls, types.DocumentSymbolParams(text_document=doc))
    srv._formatting(ls, types.DocumentFormattingParams(
        text_document=doc, options=types.FormattingOptions(tab_size=4, insert_spaces=True)))


def test_a_text_past_the_size_limit_is_never_read_whole(counted, monkeypatch):
    filler = "# " + "y" * 98 + "\n"
    text = SPEC + filler * (3 * MAX_SPEC_BYTES // len(filler))  # 1.5 MB: three times the limit
    published: list = []
    ls = _server(text, published, monkeypatch)
    codec = ls.workspace.position_codec
    for walk in ("client_num_units", "position_from_client_units"):  # character by character, in Python
        monkeypatch.setattr(codec, walk, lambda *a, _w=walk: pytest.fail(f"{_w} walked an ASCII line"))
    ls.check(URI)
    (params,) = published
    assert [d.code for d in params.diagnostics] == ["KD401"]
    _ask_everything(ls, text, text.count("\n") // 2)
    # requests about a position read a window around it; nothing reads the text whole
    assert counted["parsed"] == 0
    assert counted["tokenized"] <= 16 * 2 * lsp_text.WINDOW < len(text)


def test_a_spec_within_the_limit_is_still_read_whole(counted, monkeypatch):
    published: list = []
    ls = _server(SPEC, published, monkeypatch)
    ls.check(URI)
    _ask_everything(ls, SPEC, 1)
    assert counted["parsed"] >= 2 * len(SPEC)  # the check, and the names and outline
