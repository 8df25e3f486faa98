"""One path rule: a data path written in a spec is relative to the spec file (like checkpoints and
includes); a path typed in --data is relative to the working directory. Positional data options
are errors with the keyword form in the hint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdsl.core.diagnostics import KdslError
from kdsl.lang.loader import load
from kdsl.training.config import resolve_config
from tests.conftest import run_cli_in_process

SPEC = ('student = model("kdsl.zoo:resnet8x4", num_classes=100)\n'
        "record s = output of student\nloss task = cross_entropy(s, batch.target)\n"
        'train {{\n  data = dataset("kdsl.data:cifar100"{opts}, batch_size=4)\n}}\n')


def spec_in(tmp_path: Path, opts: str) -> Path:
    (tmp_path / "sub").mkdir(exist_ok=True)
    path = tmp_path / "sub" / "spec.kd"
    path.write_text(SPEC.format(opts=opts))
    return path


def test_spec_root_is_relative_to_the_spec_file(tmp_path):
    cfg = resolve_config(load(str(spec_in(tmp_path, ', root="cifar"'))), {})
    assert cfg.data == ("kdsl.data:cifar100", {"root": str(tmp_path / "sub" / "cifar")})
    cfg = resolve_config(load(str(spec_in(tmp_path, ', root="../up/c"'))), {})
    assert cfg.data[1]["root"] == str(tmp_path / "up" / "c")


def test_absolute_and_home_paths_stay(tmp_path):
    cfg = resolve_config(load(str(spec_in(tmp_path, f', root="{tmp_path}/abs"'))), {})
    assert cfg.data[1]["root"] == f"{tmp_path}/abs"
    cfg = resolve_config(load(str(spec_in(tmp_path, ', root="~/cifar"'))), {})
    assert cfg.data[1]["root"] == "~/cifar"


def test_flag_root_is_relative_to_the_working_directory(tmp_path):
    cfg = resolve_config(load(str(spec_in(tmp_path, ""))), {"data": 'kdsl.data:cifar100(root="here")'})
    assert cfg.data == ("kdsl.data:cifar100", {"root": "here"})


def test_positional_flag_option_is_a_clear_error(tmp_path):
    with pytest.raises(KdslError) as info:
        resolve_config(load(str(spec_in(tmp_path, ""))), {"data": 'kdsl.data:cifar100("data")'})
    d = info.value.diagnostics[0]
    assert d.code == "KD701" and "not by position" in d.message
    assert d.hints == ("e.g. --data 'kdsl.data:cifar100(root=\"data\")' (a path typed here is "
                       "relative to the working directory)",)


def test_positional_spec_option_is_a_located_error(tmp_path):
    code, out, err = run_cli_in_process("check", str(spec_in(tmp_path, ', "data"')))
    assert code == 1 and "error[KD306]" in out + err


def test_missing_cifar_names_the_folders_and_the_flag(tmp_path):
    path = spec_in(tmp_path, ', root="cifar"')
    code, out, err = run_cli_in_process("train", str(path), "--epochs", "1", "--threads", "1",
                                        "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert code == 1
    assert "error[KD702]" in err
    assert os.path.join("sub", "cifar", "cifar-100-python") in err
    assert "--data 'kdsl.data:cifar100(root=\"PATH\")' (relative to the working directory)" in err
