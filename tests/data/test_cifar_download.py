"""`kdsl.data:cifar10(download=true)` (issue #27, item 15): the release is fetched from a server on
127.0.0.1 serving a small fake archive (nothing here reaches outside), checked against the
checksum, resumed after a dropped connection, and extracted whole or not at all."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import kdsl.data
from kdsl.core.download import DownloadError, Remote

FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _archive(members=None) -> bytes:
    """A tar.gz shaped like the CIFAR-10 python release, three images per batch file."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in FILES if members is None else members:
            batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [0, 1, 9]}
            content = pickle.dumps(batch)
            info = tarfile.TarInfo(name if members is not None else f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


class Server:
    """Serves ``body`` at /cifar-10-python.tar.gz, honouring Range unless ``ranges`` is off; with
    ``cut_after`` set, the next response stops after that many bytes (a dropped connection)."""

    def __init__(self, body: bytes):
        self.body, self.ranges, self.cut_after = body, True, None
        self.requests = []  # (path, Range header), one per request
        self.sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Range")))
                if not self.path.endswith("/cifar-10-python.tar.gz"):
                    self.send_error(404)
                    return
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].rstrip("-"))
                    if start >= len(server.body):
                        self.send_error(416)
                        return
                part = server.body[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut_after is not None:
                    part, server.cut_after = part[:server.cut_after], None
                # counted before the write: the client can have every byte, and the test its
                # assertion, before this thread runs again after writing them
                server.sent += len(part)
                self.wfile.write(part)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def remote(self, body: bytes = None) -> Remote:
        body = self.body if body is None else body
        return Remote(f"{self.base}/kriz/cifar-10-python.tar.gz", "md5:" + hashlib.md5(body).hexdigest(), len(body))


@pytest.fixture
def server(monkeypatch):
    served = Server(_archive())
    monkeypatch.setitem(kdsl.data.CIFAR_ARCHIVES, "CIFAR-10", served.remote())
    monkeypatch.delenv(kdsl.data.MIRROR_ENV, raising=False)
    yield served
    served.httpd.shutdown()


def test_download_fetches_verifies_and_extracts_once(server, tmp_path):
    splits = kdsl.data.cifar10(root=str(tmp_path / "c10"), download=True)
    assert len(splits.train) == 15 and len(splits.val) == 3 and splits.num_classes == 10
    assert sorted(p.name for p in (tmp_path / "c10" / "cifar-10-batches-py").iterdir()) == sorted(FILES)
    assert sorted(p.name for p in (tmp_path / "c10").iterdir()) == [".cifar-10-python.tar.gz.lock", "cifar-10-batches-py",
                                                                   "cifar-10-python.tar.gz"]
    kdsl.data.cifar10(root=str(tmp_path / "c10"), download=True)
    assert len(server.requests) == 1  # found the second time: nothing fetched


def test_a_dropped_download_resumes_where_it_stopped(server, tmp_path):
    half = len(server.body) // 2
    server.cut_after = half
    with pytest.raises(DownloadError, match="run again to resume"):
        kdsl.data.cifar10(root=str(tmp_path), download=True)
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == half and not (tmp_path / "cifar-10-python.tar.gz").exists()
    assert not (tmp_path / "cifar-10-batches-py").exists()
    splits = kdsl.data.cifar10(root=str(tmp_path), download=True)
    assert len(splits.train) == 15
    assert server.requests[1][1] == f"bytes={half}-" and server.sent == len(server.body)
    assert not part.exists()


def test_a_server_that_ignores_ranges_sends_it_again_from_the_start(server, tmp_path):
    server.cut_after, server.ranges = 100, False
    with pytest.raises(DownloadError):
        kdsl.data.cifar10(root=str(tmp_path), download=True)
    assert len(kdsl.data.cifar10(root=str(tmp_path), download=True).train) == 15


def test_a_checksum_mismatch_keeps_nothing(server, tmp_path, monkeypatch):
    monkeypatch.setitem(kdsl.data.CIFAR_ARCHIVES, "CIFAR-10", server.remote(b"other bytes"))
    with pytest.raises(DownloadError, match="do not match the published checksum") as caught:
        kdsl.data.cifar10(root=str(tmp_path), download=True)
    assert "runs again" not in str(caught.value) and "afresh" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == [".cifar-10-python.tar.gz.lock"]


def test_without_download_nothing_is_fetched_and_the_message_offers_it(server, tmp_path):
    with pytest.raises(FileNotFoundError, match="download=true"):
        kdsl.data.cifar10(root=str(tmp_path))
    assert server.requests == []


def test_a_mirror_serves_the_same_checked_archive(server, tmp_path, monkeypatch):
    monkeypatch.setenv(kdsl.data.MIRROR_ENV, f"{server.base}/mirror/")
    kdsl.data.cifar10(root=str(tmp_path), download=True)
    assert server.requests[0][0] == "/mirror/cifar-10-python.tar.gz"


def test_an_archive_reaching_outside_its_folder_is_refused(server, tmp_path, monkeypatch):
    hostile = _archive(["cifar-10-batches-py/data_batch_1", "../escaped"])
    server.body = hostile
    monkeypatch.setitem(kdsl.data.CIFAR_ARCHIVES, "CIFAR-10", server.remote(hostile))
    with pytest.raises(DownloadError, match="refusing to extract '../escaped'"):
        kdsl.data.cifar10(root=str(tmp_path / "root"), download=True)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_the_published_checksums_are_the_releases():
    """The MD5s published at https://www.cs.toronto.edu/~kriz/cifar.html, with the archives' sizes."""
    assert kdsl.data.CIFAR_ARCHIVES["CIFAR-10"] == Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a", 170_498_071)
    assert kdsl.data.CIFAR_ARCHIVES["CIFAR-100"] == Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5:eb9058c3a382ffc7106e4002c42a8d85", 169_001_437)


def test_every_cifar_spec_says_how_to_get_its_teacher_and_data():
    """Each spec whose teacher loads CIFAR weights names the teacher spec that trains them (which
    exists, downloads its data and passes `kdsl check`) and how to get the data."""
    import re

    from kdsl.lang.loader import check_file

    root = Path(__file__).resolve().parents[2]
    teachers = set()
    for spec in sorted((root / "specs").glob("*.kd")):
        text = spec.read_text()
        for name in set(re.findall(r'from "checkpoints/(\w+_cifar\d+)\.pt"', text)):
            assert f"`kdsl train specs/teachers/{name}.kd`" in text, (spec.name, name)
            assert f"runs/{name}/student.pt to specs/checkpoints/{name}.pt" in text, (spec.name, name)
            assert "download=true" in text, spec.name
            teachers.add(name)
    assert teachers == {"resnet32x4_cifar100", "wrn_40_2_cifar100", "wrn_40_2_cifar10"}
    for name in teachers:
        path = root / "specs" / "teachers" / f"{name}.kd"
        loaded, diags, _ = check_file(str(path))
        assert loaded is not None and not diags, [d.message for d in diags]
        assert "download=true" in path.read_text()


def test_processes_downloading_at_once_take_turns(server, tmp_path):
    """The ranks of a torchrun all call the reader: one downloads, the others wait and find it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=3) as pool:
        sizes = list(pool.map(lambda _: len(kdsl.data.cifar10(root=str(tmp_path), download=True).train), range(3)))
    assert sizes == [15, 15, 15] and len(server.requests) == 1
