"""Reading the files a spec names (the spec itself, includes), defensively.

A spec can name any path, so reading one must never block, never read without limit and never
echo a file that is not a spec: only regular files are opened (a FIFO or ``/dev/stdin`` would
block forever, ``/dev/zero`` never ends), at most ``MAX_SPEC_BYTES`` are read, and a file with NUL
bytes or invalid UTF-8 is refused as "not a spec file" without quoting it (``/proc/self/environ``
would print the environment). A UTF-8 byte-order mark is accepted and dropped; CRLF line ends are
read as LF.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

MAX_SPEC_BYTES = 8 * 1024 * 1024


class SpecFileError(Exception):
    """A spec file that cannot be read, with what to tell the user (the caller locates it: KD401)."""

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def read_spec_text(path: str, *, included: bool = False) -> str:
    """The text of the spec file at ``path``; :class:`SpecFileError` when it cannot be one."""
    hint = "includes are relative to the including file" if included else None
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
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecFileError(f"{path} is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB: not a spec file")
    if b"\x00" in data:
        raise SpecFileError(f"{path} is not a spec file (it holds binary data)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecFileError(f"{path} is not a spec file (not UTF-8 text: byte {exc.start} is "
                    f"0x{data[exc.start]:02x})") from None
    return text.replace("\r\n", "\n")
