"""Tests for the model zoo: parameter counts, forward shapes, module names, feature shapes."""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kdsl.zoo as zoo
from kdsl.zoo import MODELS

CIFAR_MODELS = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg13",
    "mobilenetv2", "shufflenetv1", "shufflenetv2",
]
DIGITS_MODELS = ["digits_teacher", "digits_cnn", "digits_mlp"]
GENERATORS = ["dafl_generator"]
LANGUAGE_MODELS = ["gpt"]  # tested in test_gpt.py
RESNETS = [name for name in CIFAR_MODELS if name.startswith("resnet")]
WRNS = ["wrn_16_2", "wrn_40_1", "wrn_40_2"]


@functools.lru_cache(maxsize=None)
def built(name: str, **options) -> nn.Module:
    """``MODELS[name](**options)``, built once for the tests that only read a model (its
    parameter count, its module names, its modules): building the larger models is most of this
    file's time. A test that runs a model or hooks it builds its own."""
    return MODELS[name](**options)


@pytest.fixture(scope="module", autouse=True)
def _free_built_models():
    yield
    built.cache_clear()  # the worker runs other files after this one


def count(model: nn.Module, skip: str = "") -> int:
    """Number of parameters, optionally leaving out those whose name contains ``skip``."""
    return sum(p.numel() for name, p in model.named_parameters() if not (skip and skip in name))


# Exact counts with a 100-way classifier, measured on this implementation. They pin the
# architectures against regressions; the tests further down tie them to external figures.
EXACT_CIFAR100 = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "mobilenetv2": 812_836,
    "shufflenetv1": 949_258,
    "shufflenetv2": 1_356_104,
}

# Exact counts with a 10-way classifier published by an independent implementation of the same
# CIFAR networks (projection shortcuts, bias-free convolutions, VGG with batch norm):
# github.com/karanchahal/distiller, models/model_factory.py, the "# params:" comment beside each
# entry (resnet*_sm, WRN16_2, WRN40_1, vgg13).
INDEPENDENT_CIFAR10 = {
    "resnet8": 78_042,
    "resnet14": 175_258,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet44": 661_338,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "wrn_16_2": 691_674,
    "wrn_40_1": 563_930,
    "vgg13": 9_416_010,
}

# He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), Table 6, CIFAR-10, in
# millions as printed. The paper uses parameter-free (zero-padding) shortcuts, so the comparison
# leaves out the two projection shortcuts that CRD's models (and ours) use instead.
HE_2016_TABLE6_M = {"resnet20": "0.27", "resnet32": "0.46", "resnet44": "0.66", "resnet56": "0.85",
                    "resnet110": "1.7"}

# Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016), CIFAR table of WRN-d-k results,
# in millions as printed (10-way classifier).
WRN_2016_M = {"wrn_40_1": "0.6", "wrn_40_2": "2.2"}

# CIFAR-100 figures (100-way classifier) for CRD's benchmark models (Tian et al., ICLR 2020), in
# millions at the rounding they are quoted with: resnet56/resnet20/resnet32x4/resnet8x4 as given in
# the project brief, the rest as commonly quoted by later distillation papers that reuse CRD's
# models. The search tool could not retrieve the source tables, so these only confirm the
# rounding; the exact counts above are the regression guard. (The brief's "wrn_40_2 2.2M" is the
# 10-way figure of the WRN paper, checked above; with 100 classes it is 2.26M.)
QUOTED_CIFAR100_M = {
    "resnet56": "0.86", "resnet20": "0.28", "resnet32x4": "7.4", "resnet8x4": "1.2",
    "resnet32": "0.47", "resnet110": "1.74", "wrn_16_2": "0.70", "wrn_40_1": "0.57",
    "wrn_40_2": "2.26", "vgg13": "9.46", "mobilenetv2": "0.81", "shufflenetv1": "0.95",
    "shufflenetv2": "1.36",
}


def rounds_to(value: int, printed: str) -> bool:
    """Whether ``value`` parameters print as ``printed`` millions at that many decimals."""
    decimals = len(printed.split(".")[1]) if "." in printed else 0
    return f"{value / 1e6:.{decimals}f}" == printed


def test_registry_lists_every_factory():
    assert set(MODELS) == set(CIFAR_MODELS) | set(DIGITS_MODELS) | set(GENERATORS) | set(LANGUAGE_MODELS)
    assert set(zoo.__all__) == set(MODELS) | {"MODELS"}
    for name, factory in MODELS.items():
        assert factory is getattr(zoo, name)
        assert factory.__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("name", CIFAR_MODELS + DIGITS_MODELS)
def test_default_num_classes(name):
    default = inspect.signature(MODELS[name]).parameters["num_classes"].default
    assert default == (10 if name in DIGITS_MODELS else 100)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_exact_parameter_count(name):
    assert count(built(name)) == EXACT_CIFAR100[name]


@pytest.mark.parametrize("name", sorted(INDEPENDENT_CIFAR10))
def test_matches_independent_cifar10_count(name):
    assert count(built(name, num_classes=10)) == INDEPENDENT_CIFAR10[name]


@pytest.mark.parametrize("name", sorted(HE_2016_TABLE6_M))
def test_resnet_matches_he_2016_without_projections(name):
    model = built(name, num_classes=10)
    assert rounds_to(count(model, skip="downsample"), HE_2016_TABLE6_M[name])


@pytest.mark.parametrize("name", sorted(WRN_2016_M))
def test_wrn_matches_zagoruyko_2016(name):
    assert rounds_to(count(built(name, num_classes=10)), WRN_2016_M[name])


@pytest.mark.parametrize("name", sorted(QUOTED_CIFAR100_M))
def test_matches_quoted_cifar100_figure(name):
    assert rounds_to(count(built(name)), QUOTED_CIFAR100_M[name])


@pytest.mark.parametrize("name", ["vgg8", "vgg13"])
def test_vgg_count_follows_its_definition(name):
    """Recount VGG from its published layer table: 3x3 convs with bias, BN, one linear layer."""
    stages = {"vgg8": [[64], [128], [256], [512], [512]],
              "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}[name]
    expected, channels = 0, 3
    for stage in stages:
        for width in stage:
            expected += 9 * channels * width + width + 2 * width
            channels = width
    expected += channels * 100 + 100
    assert count(built(name)) == expected


def test_num_classes_only_changes_the_classifier():
    for name in ["resnet20", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv2"]:
        small, large = built(name, num_classes=10), built(name, num_classes=100)
        assert count(large) - count(small) == 90 * (large.fc.in_features + 1)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_forward_backward(name):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 7)
    # A backward pass catches in-place ReLUs that overwrite a tensor autograd still needs.
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", DIGITS_MODELS)
def test_digits_forward_backward(name):
    model = MODELS[name]()
    logits = model(torch.rand(2, 1, 8, 8))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_digits_capacity_ordering():
    teacher, cnn, mlp = (count(built(name)) for name in DIGITS_MODELS)
    assert (teacher, cnn, mlp) == (56_554, 3_778, 2_410)
    assert teacher > 10 * cnn and teacher > 10 * mlp


def test_digits_width_option():
    # Stem and stages scale with width: 9w + 2w, 9*w*2w + 4w, 9*(2w)^2 + 4w, then 2w*10 + 10.
    for width in (4, 8, 16):
        expected = 11 * width + (18 * width * width + 4 * width) + (36 * width * width + 4 * width) + 20 * width + 10
        assert count(zoo.digits_cnn(width=width)) == expected
        assert count(zoo.digits_teacher(width=width)) == expected
    assert count(zoo.digits_mlp(width=20)) == 64 * 20 + 20 + 20 * 10 + 10
    with pytest.raises(ValueError):
        zoo.digits_cnn(width=0)


def _names(name: str) -> set:
    return set(dict(built(name).named_modules()))


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_names(name):
    names = _names(name)
    assert {"conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"} <= names
    assert {f"layer1.0.{part}" for part in ("conv1", "bn1", "conv2", "bn2", "relu")} <= names
    assert {"layer2.0.downsample", "layer3.0.downsample"} <= names
    assert "layer4" not in names


@pytest.mark.parametrize("name", WRNS)
def test_wrn_names(name):
    names = _names(name)
    assert {"conv1", "layer1", "layer2", "layer3", "bn1", "relu", "avgpool", "fc"} <= names
    block = {f"layer2.0.{part}" for part in ("bn1", "relu", "conv1", "bn2", "dropout", "conv2", "downsample")}
    assert block <= names


def test_vgg_names():
    names = _names("vgg13")
    assert {f"layer{i}" for i in range(1, 6)} | {"pool1", "pool2", "pool3", "avgpool", "fc"} <= names
    assert {"layer1.conv1", "layer1.bn1", "layer1.conv2", "layer1.bn2", "layer1.relu"} <= names
    assert "layer1.conv2" not in _names("vgg8")


def test_mobilenetv2_names():
    names = _names("mobilenetv2")
    assert {"conv1", "bn1", "relu", "conv2", "bn2", "avgpool", "fc"} | {f"layer{i}" for i in range(1, 8)} <= names
    assert {f"layer2.0.{part}" for part in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu")} <= names


def test_shufflenet_names():
    v1 = _names("shufflenetv1")
    assert {"conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"} <= v1
    assert {"layer1.0.downsample", "layer1.1.conv1", "layer1.1.shuffle", "layer1.1.bn3", "layer1.1.relu"} <= v1
    v2 = _names("shufflenetv2")
    assert {"conv1", "bn1", "relu", "layer1", "layer2", "layer3", "conv2", "bn2", "avgpool", "fc"} <= v2
    assert {"layer1.0.conv5", "layer1.0.shuffle", "layer1.1.conv3", "layer1.1.relu"} <= v2


def test_digits_names():
    expected = {"conv1", "bn1", "relu", "layer1", "layer2", "avgpool", "fc", "layer1.conv", "layer1.pool"}
    for name in ("digits_teacher", "digits_cnn"):
        assert expected <= _names(name)
    assert {"flatten", "fc1", "relu", "fc"} <= _names("digits_mlp")


@pytest.mark.parametrize("name", CIFAR_MODELS + DIGITS_MODELS)
def test_relus_are_inplace_modules(name):
    relus = [m for m in built(name).modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)


@pytest.mark.parametrize("name,block", [("resnet20", "layer1.0"), ("wrn_16_2", "layer1.0"),
                                        ("mobilenetv2", "layer2.0")])
def test_block_relu_is_one_module_called_twice(name, block):
    model = MODELS[name]()
    calls = []
    model.get_submodule(f"{block}.relu").register_forward_hook(lambda *args: calls.append(1))
    model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 2


# Output shapes of the modules a spec is most likely to name, for a [2, ...] input.
FEATURE_SHAPES = {
    "resnet20": {"layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)},
    "resnet8x4": {"layer1": (64, 32, 32), "layer3": (256, 8, 8)},
    "resnet32x4": {"layer3": (256, 8, 8)},
    "wrn_40_2": {"layer1": (32, 32, 32), "layer3": (128, 8, 8), "bn1": (128, 8, 8)},
    "vgg8": {"layer1": (64, 32, 32), "layer3": (256, 8, 8), "layer4": (512, 4, 4), "layer5": (512, 4, 4)},
    "mobilenetv2": {"layer2": (12, 16, 16), "layer4": (32, 4, 4), "layer7": (160, 2, 2), "conv2": (1280, 2, 2)},
    "shufflenetv1": {"layer1": (240, 16, 16), "layer3": (960, 4, 4)},
    "shufflenetv2": {"layer1": (116, 16, 16), "layer3": (464, 4, 4), "conv2": (1024, 4, 4)},
    "digits_teacher": {"layer1": (64, 4, 4), "layer2": (64, 4, 4)},
    "digits_cnn": {"layer1": (16, 4, 4), "layer2": (16, 4, 4)},
    "digits_mlp": {"fc1": (32,)},
}


@pytest.mark.parametrize("name", sorted(FEATURE_SHAPES))
def test_feature_shapes(name):
    model = MODELS[name]().eval()
    seen = {}

    def record(key):
        def hook(module, inputs, output):
            seen[key] = tuple(output.shape[1:])
        return hook

    for module_name in FEATURE_SHAPES[name]:
        model.get_submodule(module_name).register_forward_hook(record(module_name))
    x = torch.rand(2, 1, 8, 8) if name.startswith("digits") else torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model(x)
    assert seen == FEATURE_SHAPES[name]


def test_wrn_dropout_option():
    model = zoo.wrn_16_2(drop_rate=0.3)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.3}
    with pytest.raises(ValueError):
        zoo.wrn_40_2(drop_rate=1.0)


def test_importing_kdsl_does_not_import_the_zoo():
    root = Path(__file__).resolve().parents[2]
    code = "import sys, kdsl; assert 'kdsl.zoo' not in sys.modules, sorted(sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_digits_teacher_learns_quickly():
    """The teacher reaches high validation accuracy in a few epochs (observed ~99%)."""
    from torch.utils.data import DataLoader

    from kdsl.data import digits

    splits = digits()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = zoo.digits_teacher()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        loader = DataLoader(splits.train, batch_size=64, shuffle=True,
                            generator=torch.Generator().manual_seed(0))
        for _ in range(5):
            model.train()
            for images, labels in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(splits.val.images).argmax(1) == splits.val.labels).float().mean().item()
    assert accuracy >= 0.97
