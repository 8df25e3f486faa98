"""Model references on the command line: the language's call syntax, and the timm/torchvision hubs
(neither is installed here, and neither may become a dependency: fakes stand in for them)."""

from __future__ import annotations

import sys
import tomllib
import types

import pytest
from torch import nn

import kdsl.lang.parser
import kdsl.zoo
from kdsl.zoo.digits import DigitsCNN
from kdsl.lang import refs
from kdsl.core.diagnostics import KdslError
from kdsl.io.models import model_from_ref
from train_helpers import BASELINE_SPEC, ROOT, metrics_jsonl
from train_helpers import train_in_process as train


def _diag(info):
    d = info.value.diagnostics[0]
    return d.code, " ".join([d.message, *d.hints])


def test_student_reference_goes_through_the_language_parser(monkeypatch):
    seen = []
    real = kdsl.lang.parser.parse_ref_call

    def spy(text):
        seen.append(text)
        return real(text)

    monkeypatch.setattr(kdsl.lang.parser, "parse_ref_call", spy)
    assert refs.parse_call("kdsl.zoo:digits_cnn(width=4)", "--student") == ("kdsl.zoo:digits_cnn", [], {"width": 4})
    assert seen == ["kdsl.zoo:digits_cnn(width=4)"]
    model = model_from_ref("kdsl.zoo:digits_cnn(width=4)", "--student")
    assert isinstance(model, DigitsCNN) and model.conv1.out_channels == 4


def test_reference_literals():
    ref, args, kwargs = refs.parse_call('pkg.mod:make.net(3, a=-2.5, s="x y", yes=true, no=false, '
                                        'nothing=none, sizes=[1, 2], tiny=1e-3)', "--student")
    assert ref == "pkg.mod:make.net" and args == [3]
    assert kwargs == {"a": -2.5, "s": "x y", "yes": True, "no": False, "nothing": None,
                      "sizes": [1, 2], "tiny": 0.001}
    assert refs.parse_call("kdsl.zoo:digits_cnn", "--student") == ("kdsl.zoo:digits_cnn", [], {})


@pytest.mark.parametrize("text, code, fragment", [
    ("kdsl.zoo:digits_cnn(width=4", "KD701", "cannot read the --student reference"),
    ("kdsl.zoo:digits_cnn(width=four)", "KD701", "must be literal values"),
    ("kdsl.zoo:digits_cnn(width=4, width=5)", "KD307", "'width' is given twice"),
])
def test_bad_references(text, code, fragment):
    with pytest.raises(KdslError) as info:
        refs.parse_call(text, "--student")
    got_code, message = _diag(info)
    assert got_code == code and fragment in message


def test_option_call_repeated_keyword():
    with pytest.raises(KdslError) as info:
        refs.parse_option_call("sgd(lr=0.1, lr=0.2)", "--optimizer")
    assert _diag(info) == ("KD307", "'lr' is given twice in the --optimizer 'sgd(lr=0.1, lr=0.2)'")


def test_width_reaches_the_student_in_a_run(tmp_path):
    summary, printed = train(BASELINE_SPEC, student="kdsl.zoo:digits_cnn(width=4)", epochs=1,
                             out=str(tmp_path / "run"))
    params = sum(p.numel() for p in kdsl.zoo.digits_cnn(width=4).parameters())
    assert f"student student ({params:,} params)" in printed
    assert [r["epoch"] for r in metrics_jsonl(tmp_path / "run")] == [1]


# ---------------------------------------------------------------------------- hubs
@pytest.fixture
def fake_timm(monkeypatch):
    calls = []
    module = types.ModuleType("timm")

    def create_model(name, pretrained=False, num_classes=1000, **kwargs):
        calls.append((name, pretrained, num_classes, kwargs))
        if name == "no_such_model":
            raise RuntimeError(f"Unknown model ({name})")
        return kdsl.zoo.digits_cnn(num_classes=num_classes, width=4)

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


@pytest.fixture
def fake_torchvision(monkeypatch):
    calls = []
    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def get_model(name, **config):
        calls.append((name, config))
        return nn.Sequential(nn.Flatten(), nn.Linear(64, config.get("num_classes", 1000)))

    models.get_model = get_model
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    return calls


def test_timm_dispatch(fake_timm):
    model = model_from_ref("timm:resnet18.a1_in1k(pretrained=false, num_classes=10, drop_rate=0.1)",
                           "--student")
    assert isinstance(model, DigitsCNN)
    assert fake_timm == [("resnet18.a1_in1k", False, 10, {"drop_rate": 0.1})]
    factory = refs._hub_factory("timm:vit_tiny_patch16_224")
    factory(num_classes=3)
    assert fake_timm[-1][0] == "vit_tiny_patch16_224" and fake_timm[-1][2] == 3


def test_torchvision_dispatch(fake_torchvision):
    model = model_from_ref("torchvision:resnet18(weights=none, num_classes=10)", "--teacher")
    assert isinstance(model, nn.Sequential) and model[1].out_features == 10
    assert fake_torchvision == [("resnet18", {"weights": None, "num_classes": 10})]


def test_hub_factory_of_other_references_is_none():
    assert refs._hub_factory("kdsl.zoo:digits_cnn") is None


def test_hub_model_errors_are_one_line(fake_timm):
    with pytest.raises(KdslError) as info:
        model_from_ref("timm:no_such_model", "--student")
    code, message = _diag(info)
    assert code == "KD508" and "RuntimeError: Unknown model (no_such_model)" in message


def test_hub_student_trains(fake_timm, tmp_path):
    """A spec's student replaced by a timm reference, trained end to end (the fake returns a
    digits CNN, so this is about the dispatch, not about timm)."""
    train(BASELINE_SPEC, student="timm:fake_net(num_classes=10)", epochs=1, out=str(tmp_path / "run"))
    assert fake_timm[0][0] == "fake_net"
    assert metrics_jsonl(tmp_path / "run")[0]["val_top1"] >= 0


@pytest.mark.parametrize("hub", ["timm", "torchvision"])
def test_missing_hub_is_kd404_with_a_pip_hint(monkeypatch, hub):
    monkeypatch.setitem(sys.modules, hub, None)  # `import hub` fails, installed or not
    with pytest.raises(KdslError) as info:
        model_from_ref(f"{hub}:resnet18", "--student")
    code, message = _diag(info)
    assert code == "KD404"
    assert f'--student "{hub}:resnet18" needs {hub}, which cannot be imported' in message
    assert f"pip install {hub}" in message


def test_hubs_are_not_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
             for r in requirements}
    assert "torch" in names
    assert "torchvision" not in names and "timm" not in names
