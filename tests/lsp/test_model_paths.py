"""Model-aware completion (issue #23): `student.layer1.0.` completes the model's module paths when
the editor opts in (initializationOptions.modelPaths); the model is built on the meta device in a
worker process, and until it has answered a completion is marked incomplete instead of waiting."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pathlib
import sys

import pytest

pytest.importorskip("pygls", reason="the language server needs pygls (pip install 'kdsl[lsp]')")
pytest_lsp = pytest.importorskip("pytest_lsp", reason="end-to-end tests need pytest-lsp (pip install pytest-lsp)")

from lsprotocol import types  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402

from kdsl.lsp.model_paths import ModelPaths, typed_path  # noqa: E402
from kdsl.lsp.names import Index  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
SPEC = 'student = model("kdsl.zoo:resnet8", num_classes=10)\nrecord r = output of student.layer1.0.\n'
# completions asked while the worker (a fresh interpreter) starts torch and builds the model: a few
# seconds, ten times that on a loaded machine; five minutes at most, a hang detector, not a bound
ASKS, APART_S = 1200, 0.25


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "kdsl", "lsp"],
                                              server_env=ENV))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={"modelPaths": True, "debounceMs": 0}))
    yield
    await lsp_client.shutdown_session()


async def _complete(client: LanguageClient, tmp_path, text: str, line: int, character: int):
    uri = (tmp_path / "kd.kd").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id="kdsl", version=1, text=text)))
    params = types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                    position=types.Position(line, character))
    return await client.text_document_completion_async(params)


@pytest.mark.asyncio
async def test_module_paths_of_a_model_built_on_the_meta_device(client: LanguageClient, tmp_path):
    end = len(SPEC.splitlines()[1])
    for _ in range(ASKS):
        found = await _complete(client, tmp_path, SPEC, 1, end)
        if not found.is_incomplete:
            break
        await asyncio.sleep(APART_S)
    labels = {item.label: item.detail for item in found.items}
    assert not found.is_incomplete
    assert labels == {"conv1": "student.layer1.0.conv1: Conv2d", "bn1": "student.layer1.0.bn1: BatchNorm2d",
                      "conv2": "student.layer1.0.conv2: Conv2d", "bn2": "student.layer1.0.bn2: BatchNorm2d",
                      "relu": "student.layer1.0.relu: ReLU"}
    top = await _complete(client, tmp_path, SPEC.replace("layer1.0.", "la"), 1, end - len("yer1.0."))
    assert not top.is_incomplete and {"layer1", "layer2", "layer3"} <= {i.label for i in top.items}


def test_without_the_setting_no_model_is_built():
    paths = ModelPaths()  # the server's, before initializationOptions ask for more
    assert paths.completions(SPEC, len(SPEC) - 1, Index({"/p/kd.kd": SPEC}), "/p/kd.kd") is None
    assert paths.executor is None and paths.built == {}


class _NeverDone(concurrent.futures.Executor):
    """A worker still busy starting torch."""

    def submit(self, fn, *args, **kwargs):
        return concurrent.futures.Future()


def test_a_completion_never_waits_for_the_worker():
    paths = ModelPaths()
    paths.enabled, paths.executor = True, _NeverDone()
    index = Index({"/p/kd.kd": SPEC})
    assert paths.completions(SPEC, len(SPEC) - 1, index, "/p/kd.kd") == (False, [])
    assert len(paths.built) == 1  # asked once, built once
    paths.completions(SPEC, len(SPEC) - 1, index, "/p/kd.kd")
    assert len(paths.built) == 1


@pytest.mark.parametrize("text,expected", [
    ("x = student.layer2.0.co", ("student", ("layer2", "0"), "co")),
    ("x = student.", ("student", (), "")),
    ('m = model("kdsl.zoo.', None),      # inside a string
    ("# student.layer1.", None),         # inside a comment
    ("x = 3.5", None),                   # a number
    ("x = student", None),               # no dot yet: a name being typed
])
def test_the_typed_path_before_the_cursor(text, expected):
    assert typed_path(text, len(text)) == expected
