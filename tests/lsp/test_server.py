"""``kdsl lsp`` end to end: a pytest-lsp client talks to the server over stdio, as an editor does.

One server serves the whole module, as one serves an editor's session: each test opens its own
files (under its own tmp_path) and waits for the diagnostics of its own documents."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")
pytest_lsp = pytest.importorskip("pytest_lsp", reason="end-to-end tests need pytest-lsp (pip install pytest-lsp)")

from lsprotocol import types  # noqa: E402
from pygls.exceptions import JsonRpcInvalidParams  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

SPEC = """student = model("kdsl.zoo:resnet8x4", num_classes=100)
teacher = model("kdsl.zoo:resnet32x4", num_classes=100)

param tau = 4
record s_logits = output of student
record t_logits = output of teacher

loss kd = kl_div(s_logits, t_logits, tau=tau)

train {
  epochs = 2
}
"""


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "kdsl", "lsp"], server_env=ENV))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
    yield
    await lsp_client.shutdown_session()


def _pos(text: str, needle: str, delta: int = 0, nth: int = 0) -> types.Position:
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    offset += delta
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


async def _published(client: LanguageClient, uri: str) -> types.PublishDiagnosticsParams:
    """The next diagnostics published for ``uri`` (the shared server's other documents' skipped)."""
    while True:
        params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.uri == uri:
            return params


async def _open(client: LanguageClient, path: pathlib.Path, text: str) -> str:
    uri = path.absolute().as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="kdsl", version=1, text=text)))
    await _published(client, uri)
    return uri


def _doc(uri: str) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


@pytest.mark.asyncio(loop_scope="module")
async def test_open_edit_diagnostics_match_kdsl_check(client: LanguageClient, tmp_path):
    from kdsl.lang.loader import check_text

    uri = await _open(client, tmp_path / "a.kd", SPEC)
    assert [d.code for d in client.diagnostics[uri]] == ["KD258"]  # a teacher without weights: a warning
    assert client.diagnostics[uri][0].severity == types.DiagnosticSeverity.Warning
    broken = SPEC.replace("kl_div(s_logits", "kl_div(s_logit")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        [types.TextDocumentContentChangeWholeDocument(text=broken)]))
    await _published(client, uri)
    found = client.diagnostics[uri]
    expected = [d for d in check_text(broken, str(tmp_path / "a.kd"))[1]]
    assert [(d.code, d.range.start.line + 1, d.range.start.character + 1) for d in found] == \
        [(d.code, d.span.line, d.span.column) for d in expected]
    first = found[0]
    assert first.code == "KD201" and first.message.startswith(expected[0].message)
    assert "hint: did you mean 's_logits'?" in first.message
    # the quick fix replaces the name
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=_doc(uri), range=first.range, context=types.CodeActionContext(diagnostics=[first])))
    assert [a.title for a in actions] == ["replace with 's_logits'"]
    assert actions[0].edit.changes[uri][0].new_text == "s_logits"


@pytest.mark.asyncio(loop_scope="module")
async def test_related_locations_and_errors_in_included_files(client: LanguageClient, tmp_path):
    (tmp_path / "base.kd").write_text("student\nrecord s = output of student\nrecord s = output of student\n")
    uri = await _open(client, tmp_path / "top.kd", 'include "base.kd"\n')
    found = [d for d in client.diagnostics[uri] if d.code == "KD203"]
    assert found, client.diagnostics[uri]
    assert found[0].range.start == types.Position(0, 8)  # on the include's path
    assert found[0].message.startswith(f"in {tmp_path / 'base.kd'}:3:")
    locations = [r.location.uri for r in found[0].related_information]
    assert (tmp_path / "base.kd").as_uri() in locations


@pytest.mark.asyncio(loop_scope="module")
async def test_hover_entry_setting_and_record(client: LanguageClient, tmp_path):
    uri = await _open(client, tmp_path / "a.kd", SPEC)

    async def hover(pos):
        found = await client.text_document_hover_async(types.HoverParams(_doc(uri), pos))
        return found.contents.value

    entry = await hover(_pos(SPEC, "kl_div", 2))
    assert "kl_div(preds_S: tensor" in entry and "paper: Hinton" in entry and "tau^2" in entry
    setting = await hover(_pos(SPEC, "epochs", 1))
    assert "number of epochs" in setting and "default: 10" in setting and "at least 1" in setting
    record = await hover(_pos(SPEC, "s_logits", 1, nth=1))
    assert "(record) s_logits" in record and "module output" in record


@pytest.mark.asyncio(loop_scope="module")
async def test_completion_keywords_settings_entries_options_names(client: LanguageClient, tmp_path):
    text = SPEC.replace("  epochs = 2\n", "  epochs = 2\n  \n") + "\nloss x = kl_div(s_logits, t_logits, )\n"
    uri = await _open(client, tmp_path / "a.kd", text)

    async def labels(pos):
        found = await client.text_document_completion_async(types.CompletionParams(_doc(uri), pos))
        return {i.label: i for i in found.items}

    top = await labels(types.Position(text.count("\n"), 0))
    assert {"record", "connector", "loss", "param", "student", "train", "override"} <= set(top)
    in_train = await labels(_pos(text, "  \n", 2))
    assert "seed" in in_train and "optimizer" in in_train and "epochs" not in in_train  # already given
    in_call = await labels(_pos(text, ", )", 2))
    assert "tau=" in in_call and "reduction=" in in_call
    assert "s_logits" in in_call and "tau" in in_call  # declared names (a record, a param)
    assert in_call["kl_div"].insert_text == "kl_div(${1:preds_S}, ${2:preds_T})"


@pytest.mark.asyncio(loop_scope="module")
async def test_definition_references_rename(client: LanguageClient, tmp_path):
    uri = await _open(client, tmp_path / "a.kd", SPEC)
    use = _pos(SPEC, "tau)", 1)
    found = await client.text_document_definition_async(types.DefinitionParams(_doc(uri), use))
    assert found.range.start == _pos(SPEC, "tau = 4")
    refs = await client.text_document_references_async(types.ReferenceParams(
        text_document=_doc(uri), position=use, context=types.ReferenceContext(include_declaration=True)))
    assert sorted(r.range.start.line for r in refs) == [3, 7]  # not the option name tau=
    edit = await client.text_document_rename_async(types.RenameParams(text_document=_doc(uri), position=use, new_name="temperature"))
    edits = edit.changes[uri]
    assert len(edits) == 2 and {e.new_text for e in edits} == {"temperature"}
    model = await client.text_document_rename_async(types.RenameParams(
        text_document=_doc(uri), position=_pos(SPEC, "student", 1, nth=1), new_name="s"))
    assert sorted(e.new_text for e in model.changes[uri]) == ["s", "student s"]
    with pytest.raises(JsonRpcInvalidParams):
        await client.text_document_rename_async(types.RenameParams(text_document=_doc(uri), position=use, new_name="not a name"))


@pytest.mark.asyncio(loop_scope="module")
async def test_format_symbols_and_shutdown(client: LanguageClient, tmp_path):
    from kdsl.lang.fmt import format_text

    messy = SPEC.replace("loss kd = kl_div(s_logits, t_logits, tau=tau)", "loss   kd=kl_div( s_logits,t_logits,tau=tau )")
    uri = await _open(client, tmp_path / "a.kd", messy)
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        text_document=_doc(uri), options=types.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert len(edits) == 1 and edits[0].new_text == format_text(messy).text
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(_doc(uri)))
    assert [s.name for s in symbols] == ["student", "teacher", "tau", "s_logits", "t_logits", "kd", "train"]


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_requests_get_lsp_errors(client: LanguageClient, tmp_path):
    uri = await _open(client, tmp_path / "a.kd", SPEC)
    with pytest.raises(JsonRpcInvalidParams, match="outside the text"):
        await client.text_document_hover_async(types.HoverParams(_doc(uri), types.Position(999, 0)))
    with pytest.raises(JsonRpcInvalidParams, match="outside the text"):
        await client.text_document_completion_async(types.CompletionParams(_doc(uri), types.Position(0, 500)))
    unknown = (tmp_path / "never_opened.kd").as_uri()
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await client.text_document_hover_async(types.HoverParams(_doc(unknown), types.Position(0, 0)))
    client.text_document_did_close(types.DidCloseTextDocumentParams(_doc(uri)))
    with pytest.raises(JsonRpcInvalidParams, match="not open"):
        await client.text_document_formatting_async(types.DocumentFormattingParams(
            text_document=_doc(uri), options=types.FormattingOptions(tab_size=2, insert_spaces=True)))


@pytest.mark.asyncio(loop_scope="module")
async def test_a_burst_of_edits_is_checked_once(client: LanguageClient, tmp_path):
    uri = await _open(client, tmp_path / "a.kd", SPEC)
    text = SPEC
    for version in range(2, 7):  # typing "studen" then "t" ... faster than the debounce
        text = text + "x"
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangeWholeDocument(text=text)]))
    published = await _published(client, uri)
    assert published.version == 6  # the earlier versions were never checked


@pytest.mark.asyncio(loop_scope="module")
async def test_definition_of_an_include_opens_the_file(client: LanguageClient, tmp_path):
    (tmp_path / "base.kd").write_text("student\nrecord s = output of student\n")
    text = 'include "base.kd"\nrecord t = output of student\n'
    uri = await _open(client, tmp_path / "top.kd", text)
    found = await client.text_document_definition_async(types.DefinitionParams(
        text_document=_doc(uri), position=_pos(text, "base.kd")))
    assert found.uri == (tmp_path / "base.kd").as_uri()
    model = await client.text_document_definition_async(types.DefinitionParams(
        text_document=_doc(uri), position=_pos(text, "student", 1)))
    assert model.uri == (tmp_path / "base.kd").as_uri() and model.range.start == types.Position(0, 0)


@pytest.mark.asyncio(loop_scope="module")
async def test_positions_count_utf16_units(client: LanguageClient, tmp_path):
    # U+1F600 is one Python character but two UTF-16 units (VS Code's unit): what follows it shifts
    line = 'loss z = mse(s_logits, t_logits, reduction="\U0001F600") * s_logitz\n'
    uri = await _open(client, tmp_path / "a.kd", SPEC + line)
    weight = [d for d in client.diagnostics[uri] if d.code == "KD213"]
    assert weight and weight[0].range.start == types.Position(SPEC.count("\n"), line.index("s_logitz") + 1)
    record = 'record q = input "\U0001F600" of student\n'
    uri = await _open(client, tmp_path / "b.kd", SPEC + record)
    end_of_student = types.Position(SPEC.count("\n"), len(record) - 1 + 1)  # + 1: the second unit
    hover = await client.text_document_hover_async(types.HoverParams(text_document=_doc(uri), position=end_of_student))
    assert hover is not None and "(model) student" in hover.contents.value


@pytest.mark.asyncio(loop_scope="module")
async def test_quick_fixes_for_fixable_warnings(client: LanguageClient, tmp_path):
    text = SPEC.replace("num_classes=100)\n", "num_classes=100) trainable\n", 1).replace(
        "\nloss kd", "\nrecord spare = output of teacher\nloss kd")
    uri = await _open(client, tmp_path / "a.kd", text)
    fixed = text
    for code in ("KD250", "KD254"):
        found = [d for d in client.diagnostics[uri] if d.code == code]
        assert found, client.diagnostics[uri]
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=_doc(uri), range=found[0].range, context=types.CodeActionContext(diagnostics=found)))
        assert len(actions) == 1, actions
        edit = actions[0].edit.changes[uri][0]
        lines = text.split("\n")
        start = sum(len(x) + 1 for x in lines[:edit.range.start.line]) + edit.range.start.character
        end = sum(len(x) + 1 for x in lines[:edit.range.end.line]) + edit.range.end.character
        removed = text[start:end]
        fixed = fixed.replace(removed, edit.new_text, 1)
    assert fixed == SPEC
