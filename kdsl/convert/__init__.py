"""``kdsl convert``: MMRazor Python configs and torchdistill YAML to kdsl specs.

:func:`convert` is torch-free and has no effects: it reads the config's text (and, for MMRazor
``_base_`` files, the files it names, through ``read_text`` only) without executing anything, and
returns the spec's text with a :class:`~kdsl.convert.report.ConversionReport` of every key it
translated approximately or not at all. The spec is printed by the language's one printer.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

from kdsl.convert.report import ConversionReport, Finding, config_error
from kdsl.core.files import read_spec_text

FORMATS = ("mmrazor", "torchdistill")


def _read_file(path: str) -> Optional[str]:
    """A base config's text, read as spec files are (regular files only, bounded, UTF-8), or
    None when there is no such file; :class:`SpecFileError` when it cannot be read."""
    if not os.path.lexists(path):
        return None
    return read_spec_text(path)


def detect_format(text: str, path: Optional[str] = None) -> str:
    """``mmrazor`` for a Python config, ``torchdistill`` for YAML (by extension, else by content)."""
    ext = os.path.splitext(path or "")[1].lower()
    if ext == ".py":
        return "mmrazor"
    if ext in (".yaml", ".yml"):
        return "torchdistill"
    if "dict(" in text or "_base_" in text:
        return "mmrazor"
    if "models:" in text or "train:" in text:
        return "torchdistill"
    raise config_error("KD765", "cannot tell the config's format", (path or "<string>", 1),
                       hint="give --from mmrazor or --from torchdistill")


def convert(text: str, fmt: Optional[str] = None, path: Optional[str] = None, *,
            read_text: Callable[[str], Optional[str]] = _read_file) -> Tuple[str, ConversionReport]:
    """The kdsl spec for an MMRazor (``fmt="mmrazor"``) or torchdistill (``"torchdistill"``)
    config's ``text``, and the report of what was not translated exactly. ``path`` names the
    config in messages and locates its ``_base_`` files. Raises :class:`kdsl.KdslError` (located)
    for a config that cannot be read."""
    name = path or "<string>"
    fmt = fmt or detect_format(text, path)
    report = ConversionReport(fmt)
    title = f"Converted from the {fmt} config {os.path.basename(name)}."
    if fmt == "mmrazor":
        from kdsl.convert.mmrazor import convert_mmrazor
        from kdsl.convert.pyconfig import ConfigReader

        cfg = ConfigReader(report, read_text).read(text, name)
        return _checked(convert_mmrazor(cfg, report, title), name), report
    if fmt == "torchdistill":
        from kdsl.convert.torchdistill import convert_torchdistill
        from kdsl.convert.yamlconfig import load_yaml

        return _checked(convert_torchdistill(load_yaml(text, name), report, title), name), report
    raise config_error("KD765", f"unknown format '{fmt}'", hint="use mmrazor or torchdistill")


def _checked(spec_text: str, name: str) -> str:
    """The converted spec in `kdsl fmt`'s canonical layout, verified as `kdsl check` verifies a
    file: a config value that no component takes is an error here, with the spec's
    diagnostics, not a surprise later."""
    from kdsl.core.diagnostics import KdslError, make
    from kdsl.lang.fmt import format_text
    from kdsl.lang.loader import check_text

    spec_name = f"{name} (converted)"
    spec_text = format_text(spec_text, spec_name).text or spec_text
    _, diagnostics, sources = check_text(spec_text, spec_name)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        head = make("KD767", f"the spec converted from {name} does not pass check: "
                    f"{errors[0].message}", hint="fix the config's value, or convert and edit "
                    "the spec by hand")
        raise KdslError([head] + errors, {spec_name: spec_text, **sources})
    return spec_text


__all__ = ["FORMATS", "ConversionReport", "Finding", "convert", "detect_format"]
