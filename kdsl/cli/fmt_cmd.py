"""``kdsl fmt SPEC... [--check]``: spec files rewritten in the canonical layout.

The layout itself is :mod:`kdsl.lang.fmt`'s; this module reads the files as ``kdsl check`` does
(:func:`kdsl.core.files.read_spec_text`: a file written with CRLF line ends counts as its LF text,
and is written back with LF when its layout changes), writes them back atomically (a temporary
file beside the spec, then a rename) and reports. With ``--check``
nothing is written: a file that is not formatted is shown as a unified diff on stdout.

Exit codes: 0 when every file is (or now is) formatted; 1 when a file has syntax errors (it is
left untouched) or, with ``--check``, is not formatted; 2 when a file cannot be read or written.
Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import os
import stat
import sys
import tempfile
from typing import List, Optional, Tuple

from kdsl.cli.errors import EXIT_ERRORS, EXIT_OK, EXIT_USAGE
from kdsl.core.diagnostics import Diagnostic, make, render, summary_line
from kdsl.core.files import SpecFileError, read_spec_text
from kdsl.lang.fmt import Formatted, format_text


def run_fmt(paths: List[str], *, check: bool = False, color: bool = False) -> int:
    """Format (or with ``check``, only compare) every file in ``paths``; returns the exit code.
    Diffs go to stdout, diagnostics and the report to stderr."""
    texts, problems = _read_all(paths)
    if problems:
        _say(render(problems, {}, color=color))
        return EXIT_USAGE
    changed, broken, failed_writes = [], [], []
    for path, text in texts:
        result = format_text(text, path)
        if not result.ok:
            _say(render(result.diagnostics, result.sources, color=color))
            _say(f"{path}: {summary_line(result.diagnostics)}; not formatted")
            broken.append(path)
        elif result.changed:
            changed.append(path)
            problem = _show_diff(result) if check else _write(path, result.text)
            if problem is not None:
                _say(render([problem], {}, color=color))
                failed_writes.append(path)
            elif not check:
                _say(f"reformatted {path}")
    _say(_report(len(texts), len(changed), len(broken), check))
    if failed_writes:
        return EXIT_USAGE
    return EXIT_ERRORS if broken or (check and changed) else EXIT_OK


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _read_all(paths: List[str]) -> Tuple[List[Tuple[str, str]], List[Diagnostic]]:
    """Every file's text, read as ``kdsl check`` reads it (CRLF as LF, a byte-order mark
    dropped), or the reasons some cannot be read: nothing is formatted unless every file can be."""
    texts, problems = [], []
    for path in paths:
        try:
            texts.append((path, read_spec_text(path)))
        except SpecFileError as exc:
            problems.append(make("KD401", exc.message, hint=exc.hint))
    return texts, problems


def _show_diff(result: Formatted) -> Optional[Diagnostic]:
    diff = difflib.unified_diff(result.original.splitlines(keepends=True),
                                result.text.splitlines(keepends=True),
                                fromfile=result.name, tofile=f"{result.name} (formatted)")
    for line in diff:
        sys.stdout.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    sys.stdout.flush()
    return None


def _write(path: str, text: str) -> Optional[Diagnostic]:
    """Replace ``path`` with ``text`` atomically, keeping its permissions. A symlink stays a
    symlink: the file it points to is the one rewritten (replacing the link with a copy left the
    target unformatted)."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        return make("KD706", f"cannot write {path}: {exc.strerror or exc}")
    return None


def _plural(n: int) -> str:
    return f"{n} file{'s' if n != 1 else ''}"


def _report(total: int, changed: int, broken: int, check: bool) -> str:
    same = total - changed - broken
    parts = [f"{_plural(changed)} {'would be reformatted' if check else 'reformatted'}" if changed
             else None, f"{_plural(same)} already formatted" if same else None,
             f"{_plural(broken)} with syntax errors (not formatted)" if broken else None]
    return ", ".join(p for p in parts if p) or "no files"
