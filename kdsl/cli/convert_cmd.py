"""``kdsl convert CONFIG [-o OUT.kd] [--from mmrazor|torchdistill]``: a spec from an MMRazor or
torchdistill config (:func:`kdsl.convert.convert`), the report on stderr.

Exit codes: 0 when the translation is exact, 1 when a key was approximated or dropped, 2 when the
config cannot be read (a located diagnostic, never a traceback) or the output cannot be written.
Nothing here imports torch, and nothing of the config is executed.
"""

from __future__ import annotations

import sys
from typing import Optional

from kdsl.cli.errors import EXIT_ERRORS, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE
from kdsl.convert import FORMATS, convert
from kdsl.core.diagnostics import KdslError, make, render
from kdsl.core.files import SpecFileError, read_spec_text


def run_convert(path: str, output: Optional[str], source: Optional[str], *,
                color: bool = False) -> int:
    """Convert ``path``; returns the exit code."""
    if source is not None and source not in FORMATS:
        return _fail([make("KD701", f"unknown format '{source}'",
                           hint="--from takes mmrazor or torchdistill")], {}, color)
    try:
        text = read_spec_text(path)  # regular files only, bounded, UTF-8: as specs are read
    except SpecFileError as exc:
        return _fail([make("KD401", exc.message, hint=exc.hint)], {}, color)
    try:
        spec, report = convert(text, source, path)
    except KdslError as exc:
        return _fail(exc.diagnostics, exc.sources or {path: text}, color)
    except RecursionError:
        return _fail([make("KD760", f"{path}: the config nests too deeply to read")], {}, color)
    except Exception as exc:  # noqa: BLE001 - a converter bug: a message, not a traceback
        sys.stderr.write(f"kdsl: internal error converting {path}: {type(exc).__name__}: {exc}\n"
                         "please report it\n")
        return EXIT_INTERNAL
    if output is None:
        sys.stdout.write(spec)
    else:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(spec)
        except OSError as exc:
            return _fail([make("KD706", f"cannot write {output}: {exc.strerror or exc}")], {}, color)
    sys.stderr.write(report.render() + (f"\nwrote {output}" if output else "") + "\n")
    return EXIT_OK if report.exact else EXIT_ERRORS


def _fail(diagnostics, sources, color: bool) -> int:
    sys.stderr.write(render(diagnostics, sources, color=color) + "\n")
    return EXIT_USAGE
