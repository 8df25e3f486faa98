"""Reading the files a spec names (the spec itself, includes), defensively.

A spec can name any path, so reading one must never block, never read without limit and never
echo a file that is not a spec: only regular files are opened (a FIFO or ``/dev/stdin`` would
block forever, ``/dev/zero`` never ends), at most ``MAX_SPEC_BYTES`` are read (a spec and its
includes together), an included file must be named ``*.kd`` (an included ``.env`` once had its
lines quoted in ``kdsl check``'s output), and a file with NUL bytes or invalid UTF-8 is refused
as "not a spec file" without quoting it (``/proc/self/environ`` would print the environment). A
UTF-8 byte-order mark is accepted and dropped; CRLF line ends are read as LF.

:func:`read_regular_file` is the same guard for the other small text files kdsl reads on its own
(a repository's ``.git/HEAD`` for a run's provenance).
"""

from __future__ import annotations

import os
import stat
from typing import Optional, Tuple

# 200 times the largest spec shipped: checking stays within seconds and a few hundred MB (a 4 MB
# spec of 100,000 statements once took 71 s and 1.28 GB to reject).
MAX_SPEC_BYTES = 512 * 1024
SPEC_SUFFIX = ".kd"


class SpecFileError(Exception):
    """A spec file that cannot be read, with what to tell the user (the caller locates it: KD401).

    ``position`` is the (line, column) where reading stopped, for a file cut at the size limit.
    """

    def __init__(self, message: str, hint: Optional[str] = None,
                 position: Optional[Tuple[int, int]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.position = position


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit >= 1024 else f"{limit} bytes"


def _position(data: bytes, offset: int) -> Tuple[int, int]:
    """(line, column) of byte ``offset``, both 1-based."""
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _regular_file(path: str, hint: Optional[str]) -> None:
    """Raise :class:`SpecFileError` unless ``path`` names a regular file (never opened here)."""
    if "\x00" in path:
        raise SpecFileError(f"the path {path!r} contains a NUL character", hint=hint)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SpecFileError(f"file not found: {path}", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecFileError(f"{path} is a directory, not a spec file")
    if not stat.S_ISREG(info.st_mode):
        raise SpecFileError(f"{path} is not a regular file (a device, pipe or socket)",
                            hint="a spec is read from a regular .kd file")


def read_regular_file(path: str, limit: int) -> Optional[bytes]:
    """The first ``limit`` bytes of ``path`` when it is a regular file, else None: a FIFO, a
    device or a missing file is never opened (a FIFO would block the reader forever)."""
    try:
        _regular_file(path, None)
        with open(path, "rb") as fh:
            return fh.read(limit)
    except (SpecFileError, OSError):
        return None


def read_spec_text(path: str, *, included: bool = False, limit: int = MAX_SPEC_BYTES) -> str:
    """The text of the spec file at ``path``; :class:`SpecFileError` when it cannot be one.
    ``limit`` is what is left of :data:`MAX_SPEC_BYTES` after the files read before."""
    hint = "includes are relative to the including file" if included else None
    _regular_file(path, hint)
    if included and not path.endswith(SPEC_SUFFIX):
        raise SpecFileError(f"{path} is not a spec file (its name does not end in {SPEC_SUFFIX}); "
                            "it was not read", hint='include names another spec: include "parts/common.kd"')
    try:
        with open(path, "rb") as fh:
            data = fh.read(max(limit, 0) + 1)
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _too_large(path, data, limit, included)
    if b"\x00" in data:
        raise SpecFileError(f"{path} is not a spec file (it holds binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecFileError(f"{path} is not a spec file (not UTF-8 text: byte {exc.start} is "
                            f"0x{data[exc.start]:02x})") from None
    return text.replace("\r\n", "\n")


def check_spec_size(name: str, text: str) -> None:
    """:class:`SpecFileError`, located where the limit falls, for a spec given as text (``kdsl.loads``)
    that is larger than a spec file may be."""
    if len(text) * 4 <= MAX_SPEC_BYTES:  # no character takes more than 4 bytes
        return
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_SPEC_BYTES:
        raise _too_large(name, data, MAX_SPEC_BYTES, False)


def _too_large(path: str, data: bytes, limit: int, included: bool) -> SpecFileError:
    whole = _size(MAX_SPEC_BYTES)
    if included and limit < MAX_SPEC_BYTES:
        return SpecFileError(f"including {path} makes the spec larger than {whole} with its "
                             "includes", hint="no real spec comes near this: is an include repeated?")
    return SpecFileError(f"{path} is larger than {whole}, the most a spec may be",
                         hint="no real spec comes near this size: is it a spec file?",
                         position=_position(data, max(limit, 0)))
