"""Discovery through the entry point (issue #14, item 8): `kdsl --version`, `kdsl list models`,
`kdsl list datasets`, `kdsl modules MODEL_REF`, and `kdsl train --help` at 80 columns."""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

import forked
from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]


def kdsl(*args: str, columns: int = 200):
    """``kdsl ARGS`` through the entry point, in this process (tests/cli/test_check_cli.py runs
    `python -m kdsl` itself; an interpreter importing torch costs seconds on a busy machine)."""
    return run_cli_in_process(*args, env={"COLUMNS": str(columns)})


def in_process(args, *modules: str, fresh: bool = True):
    """Run ``kdsl ARGS`` in a fresh interpreter: (exit code, output, which of ``modules`` it
    imported). Not ``fresh``: in a forked child (tests/forked.py), which has imported torch and
    kdsl but none of ``modules`` (that is checked), for what the command itself imports besides."""
    program = ("import sys\nfrom kdsl.cli.app import main\ncode = 0\n"
               f"assert not [m for m in {list(modules)!r} if m in sys.modules]\n"
               f"try:\n    main({list(args)!r})\nexcept SystemExit as e:\n    code = e.code or 0\n"
               f"print('IMPORTED', [m for m in {list(modules)!r} if m in sys.modules])\nsys.exit(code)\n")
    if fresh:
        proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, COLUMNS="200", NO_COLOR="1"))
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        code, out, err = forked.run_python(program, env={"COLUMNS": "200"})
    assert "IMPORTED " in out, out + err
    imported = eval(out.rsplit("IMPORTED ", 1)[1])  # a list literal printed above
    return code, out, imported


def test_version_names_kdsl_torch_and_python_without_importing_torch():
    code, out, imported = in_process(["--version"], "torch")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"kdsl {metadata.version('kdsl')}"
    assert lines[1] == f"torch {metadata.version('torch')}" and lines[1].split()[1].startswith(torch.__version__[:3])
    assert lines[2] == f"Python {platform.python_version()}"
    assert imported == []


def test_list_models_shows_the_zoo_and_the_installed_hubs_without_importing_them():
    from kdsl.zoo import MODELS

    code, out, imported = in_process(["list", "models"], "torchvision", "timm", "transformers", fresh=False)
    assert code == 0, out
    for name in MODELS:
        assert f"│ {name} " in out, name
    assert "(num_classes=100)" in out and "(num_classes=10, width=8)" in out  # resnet8x4, digits_cnn
    for hub in ("torchvision", "timm", "transformers"):
        row = next(line for line in out.splitlines() if line.startswith(f"│ {hub} "))
        installed = importlib.util.find_spec(hub) is not None
        assert ("│ yes " in row) == installed and (f"pip install {hub}" in row) == (not installed)
    assert imported == []


def test_list_datasets_shows_the_readers_and_their_options():
    code, out, _ = kdsl("list", "datasets")
    assert code == 0, out
    # printed as a spec writes them (issue #27.10), not as Python does ('data/cifar10', True)
    for name, option in (("digits", "val_fraction=0.2"), ("cifar10", 'root="data/cifar10"'),
                         ("cifar100", "augment=true"), ("text", "seq_len=64")):
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        assert option in row, row
    assert "stratified_split" not in out and "batch_size" in out


def test_modules_prints_names_classes_params_and_output_shapes():
    from kdsl.zoo import digits_cnn

    code, out, err = kdsl("modules", "kdsl.zoo:digits_cnn(width=8)", "--input-shape", "2,1,8,8")
    assert code == 0, err
    model = digits_cnn(width=8).eval()
    x = torch.zeros(2, 1, 8, 8)
    stem = model.relu(model.bn1(model.conv1(x)))
    conv = model.layer1.conv(stem)
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:5]]
            for line in out.splitlines() if line.startswith("│")}
    total = sum(p.numel() for p in model.parameters())
    assert rows["(the model)"] == ["DigitsCNN", f"{total:,}", f"[2, {model.fc.out_features}]"]
    assert rows["layer1.conv"] == ["Conv2d", f"{model.layer1.conv.weight.numel():,}", str(list(conv.shape))]
    assert rows["layer1"][2] == str(list(model.layer1(stem).shape))
    assert rows["relu"][1] == "0"


def test_modules_depth_and_no_shapes_without_an_input_shape():
    code, out, err = kdsl("modules", "kdsl.zoo:resnet8", "--depth", "1")
    assert code == 0, err
    names = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert "layer1" in names and "fc" in names and not any("." in n for n in names)
    assert "│ output shape" not in out and "Give --input-shape" in out


def test_module_rows_removes_its_hooks_and_restores_the_mode_even_when_the_forward_fails():
    from kdsl.cli.list_cmd import module_rows
    from kdsl.zoo import digits_cnn

    model = digits_cnn().train()
    with pytest.raises(RuntimeError):
        module_rows(model, torch.zeros(2, 3, 8, 8))  # 3 channels: conv1 takes 1
    assert model.training and all(not m._forward_hooks for m in model.modules())
    rows = module_rows(model, torch.zeros(1, 1, 8, 8))
    assert model.training and all(not m._forward_hooks for m in model.modules())
    assert {r.name: r.outputs for r in rows}["fc"] == ["[1, 10]"]


@pytest.mark.parametrize("args, code, needle", [
    (["modules", "kdsl.zoo:resnet8", "--input-shape", "2,3,32"], 1, "error[KD720]"),  # forward fails
    (["modules", "kdsl.zoo:resnet8", "--input-shape", "2,a,3"], 2, "error[KD701]"),   # not a shape
    (["modules", "nonsense"], 2, "error[KD701]"),                                     # not a reference
    (["modules", "kdsl.zoo:resnet9"], 1, "did you mean 'resnet8'"),                    # no such factory
    (["modules", "kdsl.zoo:resnet8(bad=1)"], 1, "unexpected keyword argument 'bad'"),
])
def test_modules_errors_are_diagnostics(args, code, needle):
    rc, out, err = kdsl(*args)
    assert rc == code, out + err
    assert needle in err and "Traceback" not in out + err


def test_train_help_fits_80_columns_and_shows_switches_as_switches():
    code, out, err = kdsl("train", "--help", columns=80)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "<bool>" not in out and "--resume " in out
    assert "--tensorboard / --no-tensorboard" in out or "--allow-random-teacher / --no-allow-random-teacher" in out
    assert "--epochs N" in out and "--device [cpu|cuda|auto]" in out
