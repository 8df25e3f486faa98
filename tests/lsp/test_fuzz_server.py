"""Fuzz through the server: the spec fuzzer's mutations (tools/fuzz_specs.py) sent as edits, each
followed by its diagnostics and one request at a random position. A half-typed spec is the normal
case: no edit may crash the server, lose its diagnostics or get an error for a valid request.

How long each answer takes is measured here and printed; bench/lsp_latency.py reports latency.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import sys
import time

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")
pytest_lsp = pytest.importorskip("pytest_lsp", reason="end-to-end tests need pytest-lsp (pip install pytest-lsp)")

from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from tools import fuzz_specs  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
EDITS = int(os.environ.get("KDSL_LSP_FUZZ_EDITS", 5000))
COSTLY_RATE = 0.01  # the fuzzer's huge inputs (MBs of text): a few, to keep the run short
RESTART_EVERY = 25  # edits on one text before starting again from a fresh corpus spec
INTERNAL = "kdsl could not check this text"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "kdsl", "lsp"],
                                              server_env=ENV))
async def client(lsp_client: LanguageClient):
    capabilities = client_capabilities("visual-studio-code")
    # positions here count Python characters: the fuzzer's texts hold characters beyond UTF-16's plane
    capabilities.general.position_encodings = [types.PositionEncodingKind.Utf32]
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, initialization_options={"debounceMs": 0}))
    yield
    await lsp_client.shutdown_session()


def _mutated(rng: random.Random, text: str) -> str:
    op = rng.choice(fuzz_specs.COSTLY) if rng.random() < COSTLY_RATE else rng.choice(fuzz_specs.CHEAP)
    return op(rng, text)


def _position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


def _random_position(rng: random.Random, text: str) -> types.Position:
    return _position(text, rng.randint(0, len(text)))


async def _request(client: LanguageClient, rng: random.Random, uri: str, text: str):
    doc = types.TextDocumentIdentifier(uri=uri)
    pos = _random_position(rng, text)
    kind = rng.randrange(5)
    if kind == 0:
        return await client.text_document_hover_async(types.HoverParams(text_document=doc, position=pos))
    if kind == 1:
        return await client.text_document_completion_async(types.CompletionParams(text_document=doc, position=pos))
    if kind == 2:
        return await client.text_document_definition_async(types.DefinitionParams(text_document=doc, position=pos))
    if kind == 3:
        return await client.text_document_references_async(types.ReferenceParams(
            text_document=doc, position=pos, context=types.ReferenceContext(include_declaration=True)))
    return await client.text_document_document_symbol_async(types.DocumentSymbolParams(text_document=doc))


async def _diagnostics_of(client: LanguageClient, version: int):
    while True:
        params = await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.version == version:
            return params.diagnostics


@pytest.mark.slow(seconds=30)  # the server's process included
@pytest.mark.asyncio
async def test_fuzzed_edits_never_crash_the_server(client: LanguageClient, tmp_path):
    rng = random.Random(20261207)
    corpus = fuzz_specs.corpus()
    uri = (tmp_path / "fuzz.kd").as_uri()
    failures, slowest = [], 0.0
    text, version = "", 0
    text, version = rng.choice(corpus), 1
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="kdsl", version=version, text=text)))
    for edit in range(EDITS):
        if edit:
            # every RESTART_EVERY edits the editor's text becomes a fresh corpus spec
            new = rng.choice(corpus) if edit % RESTART_EVERY == 0 else _mutated(rng, text)
            text, version = new, version + 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.TextDocumentContentChangeWholeDocument(text=text)]))
        started = time.perf_counter()
        try:
            found = await asyncio.wait_for(_diagnostics_of(client, version), timeout=30)
            await asyncio.wait_for(_request(client, rng, uri, text), timeout=30)
        except Exception as exc:  # noqa: BLE001 - every failure is collected, with the edit that made it
            failures.append(f"edit {edit}: {type(exc).__name__}: {exc}")
            continue
        slowest = max(slowest, time.perf_counter() - started)
        failures += [f"edit {edit}: {d.message}" for d in found if d.message.startswith(INTERNAL)]
    print(f"{EDITS} edits; slowest edit + diagnostics + request: {slowest * 1000:.0f} ms")
    assert client.error is None
    assert not failures, "\n".join(failures[:20])
