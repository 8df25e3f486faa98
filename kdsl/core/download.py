"""Downloading a published file: resumable, checked against the publisher's checksum, atomic.

The bytes go to ``FILE.part`` beside the destination. A download that stops (a dropped connection,
Ctrl-C, a kill) leaves that file, and the next call asks the server for the rest only (an HTTP
``Range`` request; a server that ignores it sends the whole file again, which is written from the
start). The complete file is hashed and only a file whose checksum matches is renamed to its name,
so a file under the destination's name is always whole and verified; a mismatch removes the
partial file and says so. Only the standard library is used (no torch, no requests).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, TextIO

CHUNK = 1 << 20


class DownloadError(OSError):
    """A download that failed or whose bytes are not the published ones; the message says which."""


@dataclass(frozen=True)
class Remote:
    """A published file: where it is, its checksum as ``"ALGORITHM:HEX"`` (the publisher's:
    ``md5:...``, ``sha256:...``) and its size in bytes, when known."""

    url: str
    checksum: str
    size: Optional[int] = None

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): processes that download the same
    file at once (the ranks of a ``torchrun``) take turns, and the later ones find it done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, as before
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_checksum(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the URL is kdsl's or the user's
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing after `start`: the partial file is whole (or wrong)
            return None
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"downloading {url} failed: {reason}") from None


def _receive(remote: Remote, part: Path, timeout: float, log: TextIO) -> None:
    """Bring ``part`` up to the whole file, continuing from what it holds."""
    start = part.stat().st_size if part.exists() else 0
    response = _open(remote.url, start, timeout)
    if response is None:
        return
    with response:
        resumed = start and response.status == 206
        if start and not resumed:
            log.write(f"  the server sent the whole file again: starting {part.name} afresh\n")
        total = remote.size or (int(response.headers.get("Content-Length", 0)) + (start if resumed else 0))
        log.write(f"downloading {remote.url} ({total / 1e6:.1f} MB) to {part.parent}"
                  + (f", resuming at {start / 1e6:.1f} MB" if resumed else "") + "\n")
        with open(part, "ab" if resumed else "wb") as out:
            why = _copy(response, out)
            out.flush()
            os.fsync(out.fileno())
            if why is None and out.tell() < total:  # the connection closed early
                why = f"the server sent {out.tell():,} of {total:,} bytes"
            if why is not None:
                raise DownloadError(f"downloading {remote.url} stopped ({why}); run again to resume from {part}")


def _copy(response, out) -> Optional[str]:
    """Copy the response body to ``out``; what stopped it early, or None."""
    try:
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__} after {out.tell():,} bytes"
    return None


def fetch(remote: Remote, dest: Path, *, timeout: float = 60.0, log: TextIO = sys.stderr) -> Path:
    """``dest``, downloaded from ``remote`` unless it is already there and verified; resumed from
    ``dest.part`` when an earlier download stopped. Raises :class:`DownloadError`."""
    algorithm, _, expected = remote.checksum.partition(":")
    if dest.is_file() and file_checksum(dest, algorithm) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    _receive(remote, part, timeout, log)
    got = file_checksum(part, algorithm)
    if got != expected:
        size = part.stat().st_size
        part.unlink()
        raise DownloadError(f"{remote.url}: the {size:,} bytes received do not match the published "
                            f"checksum ({algorithm} {got}, expected {expected}); the partial file was "
                            "removed, so running again downloads it afresh")
    os.replace(part, dest)
    log.write(f"  {dest} verified ({algorithm} {expected})\n")
    return dest


def _safe_members(tar, dest: Path):
    """The archive's members, each refused unless it is a plain file or folder landing inside
    ``dest`` (an archive from the network is not trusted with absolute paths, ``..`` or links)."""
    root = dest.resolve()
    for member in tar.getmembers():
        target = (dest / member.name).resolve()
        if not (member.isfile() or member.isdir()) or os.path.commonpath([root, target]) != str(root):
            raise DownloadError(f"refusing to extract {member.name!r}: not a plain file inside {dest}")
        yield member


def extract_folder(archive: Path, folder: str, into: Path) -> Path:
    """Extract ``folder`` of the tar ``archive`` to ``into/folder``, whole or not at all: it is
    extracted beside it under a temporary name and renamed once complete."""
    import shutil
    import tarfile

    final = into / folder
    if final.exists():
        raise DownloadError(f"{final} exists but does not hold the files expected; move it away and run "
                            f"again to extract {archive.name}")
    staging = into / f".{folder}.extracting-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, members=list(_safe_members(tar, staging)))
        if not (staging / folder).is_dir():
            raise DownloadError(f"{archive} holds no folder {folder!r}")
        os.replace(staging / folder, final)
    except tarfile.TarError as exc:
        raise DownloadError(f"{archive}: not a readable tar archive ({exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
