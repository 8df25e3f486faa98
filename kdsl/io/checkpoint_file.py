"""Opening and loading a checkpoint file that a spec or a flag names, defensively.

A spec can name any path (``teacher = model(...) from "x.pt"``, a connector's ``from``,
``--teacher-ckpt``), so, as for spec files (:mod:`kdsl.core.files`): only a regular file is
opened (a FIFO or ``/dev/stdin`` would block, ``/dev/zero`` never ends, opening some devices has
effects), its size is bounded, and it is loaded with ``torch.load(weights_only=True)`` only, so no
code in it runs. When loading fails, the message says what the file is (empty, text, a truncated
archive, a pickle that would run code) in a line of its own, never quoting the file's content.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from typing import Any, BinaryIO, List, Optional, Tuple

from kdsl.core.diagnostics import Diagnostic, KdslError, error
from kdsl.core.span import Span

# Far above any model kdsl distils; what it stops is a sparse or runaway file read into memory.
MAX_CHECKPOINT_BYTES = 64 * 1024 ** 3

SAVE_HINT = "save a state dict: torch.save(model.state_dict(), path)"
_WEIGHTS_ONLY = ("kdsl loads checkpoints with torch.load(weights_only=True), which runs no code "
                 "from the file; " + SAVE_HINT)


def check_checkpoint_path(path: str, span: Optional[Span] = None, code: str = "KD509",
                          hint: Optional[str] = None) -> os.stat_result:
    """The ``stat`` of ``path`` if it can be a checkpoint (an existing regular file of bounded
    size); a located error otherwise. Nothing is opened, so nothing blocks."""
    if "\x00" in path:
        raise error(code, f"the checkpoint path {path!r} contains a NUL character", span)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if hint is None and span is not None:
            hint = "paths in a spec are relative to the spec file"
        raise error(code, f"checkpoint not found: {path}", span, hint=hint) from None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise error(code, f"cannot read checkpoint {path}: {why}", span) from None
    if stat.S_ISDIR(info.st_mode):
        raise error(code, f"{path} is a directory, not a checkpoint file", span,
                    hint="name the .pt file itself (a run directory holds student.pt)")
    if not stat.S_ISREG(info.st_mode):
        raise error(code, f"{path} is not a regular file (a device, pipe or socket), so it is not "
                    "read as a checkpoint", span, hint="a checkpoint is read from a regular file")
    if info.st_size > MAX_CHECKPOINT_BYTES:
        raise error(code, f"{path} is larger than {MAX_CHECKPOINT_BYTES // 1024 ** 3} GiB "
                    f"({info.st_size:,} bytes): not read as a checkpoint", span)
    return info


def spec_relative(path: str, span: Optional[Span]) -> str:
    """``path`` as a spec means it: relative to the spec file that wrote it."""
    if os.path.isabs(path):
        return path
    base = os.path.dirname(span.file) if span and not span.file.startswith("<") else ""
    return os.path.join(base, path)


NOT_LOADED_HINT = ("weights are not loaded here, so this is a warning; `kdsl train` needs the file "
                   "(paths in a spec are relative to the spec file)")


def missing_weights(path: str, span: Optional[Span]) -> List[Diagnostic]:
    """A KD530 warning when ``path`` is not a readable regular file (one ``stat``, nothing
    opened): what inspection without weights says where ``kdsl train`` would fail."""
    try:
        check_checkpoint_path(path, span, code="KD530", hint=NOT_LOADED_HINT)
    except KdslError as exc:
        return [d.model_copy(update={"severity": "warning"}) for d in exc.diagnostics]
    return []


def open_checkpoint(path: str, span: Optional[Span] = None, code: str = "KD509") -> BinaryIO:
    """``path`` opened for reading, after :func:`check_checkpoint_path`; the file descriptor is
    checked again once open, so a file swapped for a FIFO in between is refused, not read."""
    check_checkpoint_path(path, span, code)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(code, f"cannot read checkpoint {path}: {exc.strerror or exc}", span) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(code, f"{path} is not a regular file, so it is not read as a checkpoint", span)
    return os.fdopen(fd, "rb")


def load_checkpoint(path: str, span: Optional[Span] = None, code: str = "KD509",
                    map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` of a checked regular file; a located ``code``
    error that says what is wrong with the file when it cannot be loaded."""
    import torch

    with open_checkpoint(path, span, code) as fh:
        head = fh.read(512)
        if not head:
            raise error(code, f"cannot read checkpoint {path}: it is empty (0 bytes)", span,
                        hint="was it written completely? " + SAVE_HINT)
        fh.seek(0)
        try:
            with warnings.catch_warnings():
                # torch warns about pickle protocols on stderr; the refusal below says it all
                warnings.simplefilter("ignore")
                return torch.load(fh, map_location=map_location, weights_only=True)
        except KdslError:
            raise
        except Exception as exc:  # noqa: BLE001 - any damaged or hostile file ends here
            message, hint = describe_load_failure(exc, head)
            raise error(code, f"cannot read checkpoint {path}: it {message}", span, hint=hint) from None


def describe_load_failure(exc: BaseException, head: bytes = b"") -> Tuple[str, str]:
    """(what is wrong with the file, a hint) for a failed ``torch.load(weights_only=True)`` of a
    file that starts with ``head``: the message completes "PATH ..."."""
    detail = load_error_text(exc)
    refused = _weights_only_detail(exc)
    if refused is not None:
        found = re.search(r"GLOBAL ([\w.]+)", refused)
        if found:
            return (f"tries to run code when loaded, and is refused (torch.load(weights_only=True): "
                    f"{refused})",
                    f"kdsl loads checkpoints with torch.load(weights_only=True): tensors only, no "
                    f"code. The file names '{found.group(1)}'; if it holds a whole model saved with "
                    "torch.save(model) and you trust it, load it in Python and " + SAVE_HINT)
        if head.startswith(b"\x80"):
            return (f"is a pickle that cannot be loaded safely (torch.load(weights_only=True) "
                    f"refused it: {refused})", _WEIGHTS_ONLY)
    if head.startswith(b"PK\x03\x04") or "zip archive" in detail or "PytorchStreamReader" in detail:
        first = detail.split(". ", 1)[0]
        return (f"is a damaged or truncated checkpoint archive ({first})",
                "the file was cut short or changed after it was saved: copy or save it again")
    if (head.startswith(b"\x80") and isinstance(exc, (EOFError, ValueError, KeyError, IndexError))) \
            or "truncated" in detail:
        return ("is a damaged or truncated checkpoint (its pickle data ends early or is corrupt)",
                "the file was cut short or changed after it was saved: copy or save it again")
    if _looks_like_text(head):
        return ("is a text file, not a PyTorch checkpoint", _WEIGHTS_ONLY)
    return ("is not a PyTorch checkpoint (neither the zip archive torch.save writes nor a pickle of "
            "tensors)", _WEIGHTS_ONLY)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut by the 512-byte window
    return True


def _weights_only_detail(exc: BaseException) -> Optional[str]:
    """The informative line of torch's weights-only refusal (``Trying to load unsupported GLOBAL
    posix.system whose module posix is blocked``), or None when ``exc`` is not one."""
    lines = [line.strip() for line in _plain(exc).splitlines() if line.strip()]
    if not lines or not lines[0].startswith("Weights only load failed"):
        return None
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].strip()
            if not detail and i + 1 < len(lines):
                detail = lines[i + 1]
            return detail.split(". Please use", 1)[0].rstrip(".")
    for line in lines[1:]:
        if "GLOBAL" in line or line.startswith(("Unsupported", "Trying to load")):
            return line.rstrip(".")
    return None


def _plain(exc: BaseException) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()


def load_error_text(exc: BaseException) -> str:
    """One readable line for a failed ``torch.load``: torch's weights-only refusal is a long,
    multi-paragraph text (with terminal escapes) whose useful part is one line; an exception
    without a message is named by its type."""
    refused = _weights_only_detail(exc)
    if refused is not None:
        return f"torch.load(weights_only=True) refused it ({refused})"
    lines = [line.strip() for line in _plain(exc).splitlines() if line.strip()]
    if not lines or isinstance(exc, KeyError):
        # a KeyError's text is just the missing key ('101' for a text file): useless alone
        return type(exc).__name__ + (f": {lines[0]}" if lines else "")
    return lines[0]
