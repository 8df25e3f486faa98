"""The CIFAR classifiers built on one skeleton (`kdsl.zoo._classifier.StagedClassifier`): one
forward, and the module order (hence state-dict keys) shipped checkpoints were saved with."""

import pytest
import torch

from kdsl.zoo import MODELS
from kdsl.zoo._classifier import StagedClassifier
from kdsl.zoo.mobilenetv2 import MobileNetV2
from kdsl.zoo.resnet import CifarResNet
from kdsl.zoo.shufflenet import ShuffleNetV1, ShuffleNetV2

# name: (stages, whether a 1x1 head convolution follows them)
STAGED = {"resnet8": (3, False), "resnet32x4": (3, False), "shufflenetv1": (3, False),
          "shufflenetv2": (3, True), "mobilenetv2": (7, True)}


@pytest.mark.parametrize("cls", [CifarResNet, ShuffleNetV1, ShuffleNetV2, MobileNetV2])
def test_one_forward_serves_every_staged_classifier(cls):
    assert issubclass(cls, StagedClassifier)
    assert cls.forward is StagedClassifier.forward


@pytest.mark.parametrize("name", sorted(STAGED))
def test_modules_register_stem_stages_head_in_order(name):
    stages, head = STAGED[name]
    expected = ["conv1", "bn1", "relu", *(f"layer{i}" for i in range(1, stages + 1)),
                *(["conv2", "bn2"] if head else []), "avgpool", "fc"]
    model = MODELS[name](num_classes=10)
    assert [child for child, _ in model.named_children()] == expected
    assert list(model.state_dict())[:2] == ["conv1.weight", "bn1.weight"]
    assert list(model.state_dict())[-2:] == ["fc.weight", "fc.bias"]


def test_the_head_convolution_reuses_the_stem_relu():
    model = MODELS["shufflenetv2"](num_classes=10).eval()
    calls = []
    model.relu.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape)))
    model(torch.randn(1, 3, 32, 32))
    assert calls == [(1, 24, 32, 32), (1, 1024, 4, 4)]
