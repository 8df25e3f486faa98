"""Absurd dry-run inputs (``--input-shape`` with huge, zero or too many dimensions; ``--data`` whose
factory returns something odd) end in coded errors that say what is allowed, never an allocation
failure or an internal error (issue #13, item 2: ``check --input-shape 99999999999,1,8,8``)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import kdsl
from kdsl.reports.checking import MAX_DRY_ELEMENTS, check_with_models, parse_shape
from tests.conftest import completed_in_process

ROOT = Path(__file__).resolve().parents[2]
KD = str(ROOT / "specs" / "digits" / "kd.kd")


def _kdsl(*args, env=None):
    """``kdsl ARGS`` through the entry point, in this process (an interpreter importing torch per
    case cost seconds each on a busy machine)."""
    return completed_in_process(*args, env={"OMP_NUM_THREADS": "1", **(env or {})})


def _clean(done) -> str:
    text = done.stdout + done.stderr
    assert "internal error" not in text and "Traceback" not in text, text
    return text


@pytest.mark.parametrize("shape, words", [
    ("99999999999,1,8,8", "is too large for a dry run (4 dimensions, 6,399,999,999,936 elements)"),
    ("99999999999999999999999999999,1", "takes positive integers"),
    ("0,1,8,8", "takes positive integers"),
    ("2,-1,8,8", "takes positive integers"),
    (",".join(["1"] * 40), "is too large for a dry run (40 dimensions"),
    ("9" * 100000, "takes positive integers"),
])
def test_absurd_input_shapes_are_usage_errors(shape, words):
    done = _kdsl("check", KD, "--input-shape", shape)
    text = _clean(done)
    assert done.returncode == 2 and "error[KD701]" in text and words in text, text
    assert "the dry run only needs a small batch" in text
    assert len(text) < 2000  # a 100,000-digit value is not echoed whole


def test_the_bound_admits_real_shapes():
    assert parse_shape("2,3,224,224") == (2, 3, 224, 224)
    assert parse_shape("2x3x32x32,") == (2, 3, 32, 32)
    big = MAX_DRY_ELEMENTS // 4
    assert parse_shape(f"4,{big}") == (4, big)
    with pytest.raises(kdsl.KdslError):
        parse_shape(f"4,{big + 1}")


class _Hungry(nn.Module):
    """Fails as a model does when its activations do not fit in memory."""

    def forward(self, x):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 25599999999744 bytes.\nframe #0: ...")


def test_a_model_out_of_memory_on_the_example_is_a_located_kd516():
    spec = kdsl.loads('student\nrecord s = output of student\nloss ce = cross_entropy(s, batch.target)\n',
                      "s.kd")
    from kdsl.reports.checking import ModelOptions, compile_with

    distiller, diags = compile_with(spec, ModelOptions(input_shape="2,4"))  # no student: KD507
    assert distiller is None and [d.code for d in diags] == ["KD507"]
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(spec, student=_Hungry(), example_input=torch.zeros(2, 4))
    (diag,) = info.value.errors
    assert diag.code == "KD516" and diag.span.line == 1
    assert "can't allocate memory" in diag.message and "frame #0" not in diag.message
    assert any("the dry run only needs a small batch" in h for h in diag.hints)


HOSTILE_DATA = '''
import torch

def empty():
    return [], []

def scalars():
    return [1, 2], [1, 2]

def ragged():
    return [(torch.zeros(3), 0)], [(torch.zeros(3), 0), (torch.zeros(4), 1)]

class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        raise IndexError("boom")

def raising_item():
    return _Broken(), _Broken()

class _Endless(torch.utils.data.Dataset):
    def __len__(self):
        return 10 ** 30
    def __getitem__(self, i):
        return torch.zeros(1, 8, 8), 0

def huge_len():
    return _Endless(), _Endless()

def loaders():
    data = [(torch.zeros(1, 8, 8), 0)] * 4
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    return loader, loader

def positional(a, b=0):
    return loaders()
'''


@pytest.mark.parametrize("ref, code, words", [
    ("empty", 1, "the validation split is empty, so there is no sample for the dry run"),
    ("scalars", 1, "a validation sample is of type int, not an (input, target) pair"),
    ("ragged", 1, "its first 2 validation samples do not form a batch"),
    ("raising_item", 1, "reading a validation sample failed: IndexError: boom"),
    ("huge_len", 1, "reading a validation sample failed: OverflowError"),
    ("loaders", 0, "specs/digits/kd.kd: ok"),
    ("positional(1, b=2)", 0, "specs/digits/kd.kd: ok"),
    ("positional(1, 2, 3)", 1, "TypeError"),
])
def test_odd_data_factories_are_data_errors(tmp_path, monkeypatch, ref, code, words):
    (tmp_path / "hostile_data.py").write_text(textwrap.dedent(HOSTILE_DATA))
    monkeypatch.syspath_prepend(str(tmp_path))  # as PYTHONPATH would for a process of its own
    sys.modules.pop("hostile_data", None)
    try:
        done = _kdsl("check", "specs/digits/kd.kd", "--data", f"hostile_data:{ref}")
    finally:
        sys.modules.pop("hostile_data", None)
    text = _clean(done)
    assert done.returncode == code and words in text, text
    if code:
        assert "error[KD702]" in text and f"hostile_data:{ref.split('(')[0]}" in text


def test_data_errors_from_python_too():
    with pytest.raises(kdsl.KdslError) as info:
        check_with_models(kdsl.load(KD), data="kdsl.data:digits(val_fraction=0)")
    assert [d.code for d in info.value.errors] == ["KD702"]
    assert "val_fraction must be strictly between 0 and 1" in info.value.errors[0].message


@pytest.mark.parametrize("flag, value, what", [
    ("--student", "kdsl.zoo:digits_cnn(num_classes={n})", "--student reference"),
    ("--data", "kdsl.data:digits(val_fraction={n})", "data reference"),
])
def test_numbers_too_long_for_python_are_usage_errors(flag, value, what):
    done = _kdsl("check", KD, flag, value.format(n="9" * 5000))
    text = _clean(done)
    assert done.returncode == 2 and "error[KD701]" in text
    assert f"cannot read the {what}: a number in it is too long (Exceeds the limit (4300 digits)" in text
    assert "set_int_max_str_digits" not in text


@pytest.mark.parametrize("text", ["1,x", "2,,3", "x", ",", "2,3,,", "2 3", ""])
def test_a_shape_with_an_empty_or_odd_part_is_refused_not_shortened(text):
    from kdsl.reports.checking import parse_shape
    from kdsl.core.diagnostics import KdslError

    with pytest.raises(KdslError, match="KD701"):
        parse_shape(text)


def test_shapes_take_commas_or_x():
    from kdsl.reports.checking import parse_shape

    assert parse_shape("2,3,32,32") == parse_shape("2x3x32x32") == parse_shape(" 2, 3, 32, 32 ") == (2, 3, 32, 32)
