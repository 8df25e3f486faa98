"""How fast ``kdsl lsp`` answers, measured over stdio as an editor sees it (one server process).

    python bench/lsp_latency.py [--edits 20] [--fuzz 2000] [--seed 1]

- re-check: for every spec under specs/, ``--edits`` edits (a character typed into a line, then
  taken out again), each timed from the edit sent to its diagnostics received (the server's
  debounce set to 0 so that the check itself is measured, not the pause);
- completion: a request at the start of a line, inside a call and after a setting, per spec;
- fuzz (``--fuzz N``): N of the spec fuzzer's mutations (tools/fuzz_specs.py) sent as edits,
  each timed to its diagnostics plus one request (hover or completion) at a random position.

Prints median, 99th percentile and maximum (ms) of each, and the load average: on a machine busy
with other work the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import statistics
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lsprotocol import types  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402


class Client:
    def __init__(self) -> None:
        self.lsp = LanguageClient("kdsl-bench", "1")
        self.waiting: Dict[int, asyncio.Future] = {}

        @self.lsp.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _published(ls, params: types.PublishDiagnosticsParams) -> None:
            future = self.waiting.pop(params.version, None) if params.version is not None else None
            if future is not None and not future.done():
                future.set_result(params.diagnostics)

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        await self.lsp.start_io(sys.executable, "-m", "kdsl", "lsp", env=env)
        caps = types.ClientCapabilities(general=types.GeneralClientCapabilities(
            position_encodings=[types.PositionEncodingKind.Utf32]))
        await self.lsp.initialize_async(types.InitializeParams(
            capabilities=caps, initialization_options={"debounceMs": 0}))
        self.lsp.initialized(types.InitializedParams())

    async def stop(self) -> None:
        await self.lsp.shutdown_async(None)
        self.lsp.exit(None)
        await self.lsp.stop()

    def diagnostics(self, version: int) -> asyncio.Future:
        self.waiting[version] = asyncio.get_running_loop().create_future()
        return self.waiting[version]

    async def open(self, uri: str, text: str, version: int) -> None:
        done = self.diagnostics(version)
        self.lsp.text_document_did_open(types.DidOpenTextDocumentParams(
            types.TextDocumentItem(uri=uri, language_id="kdsl", version=version, text=text)))
        await done

    async def edit(self, uri: str, text: str, version: int) -> float:
        started = time.perf_counter()
        done = self.diagnostics(version)
        self.lsp.text_document_did_change(types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangeWholeDocument(text=text)]))
        await done
        return time.perf_counter() - started

    async def complete(self, uri: str, position: types.Position) -> float:
        started = time.perf_counter()
        await self.lsp.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri), position=position))
        return time.perf_counter() - started


def _position(text: str, offset: int) -> types.Position:
    line = text.count("\n", 0, offset)
    return types.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


def _completion_points(text: str) -> List[types.Position]:
    points = [_position(text, len(text))]
    for needle in ("(", "= "):
        at = text.find(needle)
        if at >= 0:
            points.append(_position(text, at + len(needle)))
    return points


async def _recheck(client: Client, specs: List[str], edits: int):
    checks, completions = [], []
    for n, path in enumerate(specs):
        uri = f"file://{os.path.abspath(path)}"
        text = open(path, encoding="utf-8").read()
        version = 1
        await client.open(uri, text, version)
        lines = text.split("\n")
        for e in range(edits):
            line = (e // 2) % max(1, len(lines))
            edited = lines[:line] + [lines[line] + " "] + lines[line + 1:] if e % 2 == 0 else lines
            version += 1
            checks.append(await client.edit(uri, "\n".join(edited), version))
        for point in _completion_points(text):
            completions.append(await client.complete(uri, point))
        client.lsp.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))
    return checks, completions


async def _fuzz(client: Client, count: int, seed: int) -> List[float]:
    from tools import fuzz_specs

    rng = random.Random(seed)
    corpus = fuzz_specs.corpus()
    uri = f"file://{ROOT}/bench_fuzz.kd"
    text, version = rng.choice(corpus), 1
    await client.open(uri, text, version)
    times = []
    for i in range(count):
        text = rng.choice(corpus) if i % 25 == 0 else fuzz_specs.mutate(rng, text)[0]
        version += 1
        took = await client.edit(uri, text, version)
        started = time.perf_counter()
        await client.lsp.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri), position=_position(text, rng.randint(0, len(text)))))
        times.append(took + time.perf_counter() - started)
    return times


def _summary(name: str, times: List[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return (f"{name:<34} n={len(ms):<6} median {statistics.median(ms):7.1f} ms   p99 {p99:7.1f} ms   "
            f"max {ms[-1]:7.1f} ms")


async def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=20, help="edits per spec")
    parser.add_argument("--fuzz", type=int, default=0, help="fuzzer edits to time (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    specs = sorted(glob.glob(os.path.join(ROOT, "specs", "**", "*.kd"), recursive=True))
    client = Client()
    await client.start()
    try:
        checks, completions = await _recheck(client, specs, args.edits)
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, {os.cpu_count()} cores; "
              f"{len(specs)} specs under specs/")
        print(_summary("re-check after an edit", checks))
        print(_summary("completion", completions))
        if args.fuzz:
            print(_summary("fuzz edit + diagnostics + hover", await _fuzz(client, args.fuzz, args.seed)))
    finally:
        await client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
