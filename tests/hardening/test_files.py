"""Files a spec can reach: only regular text files of bounded size are read, and nothing that is
not a spec is echoed back (issue: include "/dev/zero", "/dev/stdin", a FIFO, /proc/self/environ)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import kdsl
from kdsl.core.diagnostics import render
from kdsl.core.files import MAX_SPEC_BYTES
from kdsl.lang.loader import check_file, check_text


def _messages(diags):
    return [(d.code, d.message) for d in diags]


def _check_include(tmp_path, target: str):
    spec = tmp_path / "main.kd"
    spec.write_text(f'student\ninclude "{target}"\n', encoding="utf-8")
    _, diags, sources = check_file(str(spec))
    return diags, render(diags, sources)


def test_device_is_refused_without_reading(tmp_path):
    diags, out = _check_include(tmp_path, "/dev/zero")
    assert _messages(diags) == [("KD401", "/dev/zero is not a regular file (a device, pipe or socket)")]
    assert diags[0].span.line == 2 and diags[0].span.column == 9


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pipe.kd"
    os.mkfifo(fifo)
    diags, _ = _check_include(tmp_path, str(fifo))
    assert [d.code for d in diags] == ["KD401"]
    assert "not a regular file" in diags[0].message


def test_stdin_is_refused(tmp_path):
    # run in a subprocess whose stdin is a pipe that never closes: reading it would hang
    spec = tmp_path / "main.kd"
    spec.write_text('student\ninclude "/dev/stdin"\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "kdsl", "check", str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "KD401" in out + err and "/dev/stdin" in out + err


def test_binary_file_is_not_echoed(tmp_path):
    secret = tmp_path / "environ.kd"
    secret.write_bytes(b"SECRET_TOKEN=hunter2\x00PATH=/bin\x00")
    diags, out = _check_include(tmp_path, str(secret))
    assert [d.code for d in diags] == ["KD401"]
    assert "binary data" in diags[0].message
    assert "hunter2" not in out


def test_not_utf8_is_refused(tmp_path):
    bad = tmp_path / "latin.kd"
    bad.write_bytes(b"student\n# caf\xe9\n")
    diags, _ = _check_include(tmp_path, str(bad))
    assert [d.code for d in diags] == ["KD401"] and "not UTF-8" in diags[0].message


def test_oversized_file_is_refused(tmp_path):
    big = tmp_path / "big.kd"
    with open(big, "wb") as fh:
        fh.truncate(MAX_SPEC_BYTES + 1)  # sparse: no real disk use
    diags, _ = _check_include(tmp_path, str(big))
    assert [d.code for d in diags] == ["KD401"] and "larger than" in diags[0].message


def test_nul_in_include_path_is_a_located_error():
    _, diags, _ = check_text('student\ninclude "a\x00b.kd"\n', "main.kd")
    codes = [d.code for d in diags]
    assert "KD401" in codes
    d = next(d for d in diags if d.code == "KD401")
    assert d.span.line == 2 and "NUL" in d.message


def test_directory_is_refused(tmp_path):
    diags, _ = _check_include(tmp_path, str(tmp_path))
    assert [d.code for d in diags] == ["KD401"] and "is a directory" in diags[0].message


def test_byte_order_mark_and_crlf_are_accepted(tmp_path):
    spec = tmp_path / "bom.kd"
    spec.write_bytes(b"\xef\xbb\xbfstudent\r\nrecord s = output of student\r\n"
                     b"loss task = cross_entropy(s, batch.target)\r\n")
    loaded = kdsl.load(spec)
    assert [r.name for r in loaded.records] == ["s"]
    assert loaded.losses[0].span.line == 3 and loaded.losses[0].span.column == 1


# ------------------------------------------------------------------ #26.11: nothing else echoed
@pytest.mark.parametrize("name", [".env", "keys.txt", "shadow", "maps"])
def test_an_included_text_file_that_is_not_a_spec_is_never_quoted(tmp_path, name):
    secret = tmp_path / name
    secret.write_text("AWS_SECRET_ACCESS_KEY = hunter2\nrecord (( leaked\n", encoding="utf-8")
    diags, out = _check_include(tmp_path, str(secret))
    assert [d.code for d in diags] == ["KD401"] and "not a spec file" in diags[0].message
    assert diags[0].span.file.endswith("main.kd") and diags[0].span.line == 2
    assert "hunter2" not in out and "AWS_SECRET" not in out and "leaked" not in out


# ------------------------------------------------------------------ #26.8/#27.18: the size limit
def test_an_oversized_spec_is_refused_where_reading_stopped(tmp_path):
    spec = tmp_path / "huge.kd"
    line = "record r = output of student.conv1\n"  # 36 bytes
    spec.write_text("student\n" + line * (MAX_SPEC_BYTES // len(line) + 10), encoding="utf-8")
    _, diags, sources = check_file(str(spec))
    (d,) = diags
    assert d.code == "KD401" and "larger than 512 KiB" in d.message
    offset_line = (MAX_SPEC_BYTES - 8) // len(line) + 2
    assert d.span.file == str(spec) and d.span.line == offset_line
    assert "record r" not in render(diags, sources)  # nothing of an oversized file is quoted


def test_includes_share_the_size_limit(tmp_path):
    # a diamond of includes: each file includes the next twice, 2**20 copies if unbounded
    part = "record r{n} = output of student.conv1\n" * 200
    for level in range(20):
        nxt = f'include "l{level + 1}.kd"\n' * 2 if level < 19 else ""
        (tmp_path / f"l{level}.kd").write_text(part.format(n=level) + nxt, encoding="utf-8")
    (tmp_path / "main.kd").write_text('student\ninclude "l0.kd"\n', encoding="utf-8")
    _, diags, _ = check_file(str(tmp_path / "main.kd"))
    too_large = [d for d in diags if d.code == "KD401"]
    assert too_large and "with its includes" in too_large[0].message
