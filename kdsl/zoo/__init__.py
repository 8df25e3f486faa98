"""Model zoo: the CIFAR teachers and students of the distillation benchmarks, digits toys, and
DAFL's image generator for data-free distillation.

Every factory is a plain function that returns a freshly initialised ``nn.Module``; the
classifiers produce logits only, and a spec reads intermediate features with hooks, by module
name. The names follow torchvision (``conv1``, ``bn1``, ``relu``, ``layer1``..``layer3``,
``avgpool``, ``fc``; residual blocks hold ``conv1``, ``bn1``, ``conv2``, ``bn2``, ``relu``,
``downsample``), so a spec can write ``resnet56: layer3`` or ``wrn_40_2: layer2.5.conv2``. Each
module's docstring lists its names.

CIFAR factories take ``num_classes`` (default 100, for CIFAR-100); the digits factories default
to 10 classes and take a ``width`` to tune capacity. ``dafl_generator`` maps latent codes to
images (``latent_dim``, ``img_size``, ``channels``) and produces no logits. ``gpt`` is a small
causal language model (token ids ``[N, T]`` to logits ``[N, T, vocab_size]``) for language-model
distillation; its attention maps, values and hidden states are module outputs (``blocks.0``,
``blocks.0.attn.probs``). ``MODELS`` maps each factory's name to it.

Importing :mod:`kdsl` never imports this package, because it needs torch.
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from kdsl.zoo.dafl import dafl_generator
from kdsl.zoo.digits import digits_cnn, digits_mlp, digits_teacher
from kdsl.zoo.gpt import gpt
from kdsl.zoo.mobilenetv2 import mobilenetv2
from kdsl.zoo.resnet import resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44, resnet56, resnet110
from kdsl.zoo.shufflenet import shufflenetv1, shufflenetv2
from kdsl.zoo.vgg import vgg8, vgg13
from kdsl.zoo.wrn import wrn_16_2, wrn_40_1, wrn_40_2

MODELS: Dict[str, Callable[..., nn.Module]] = {factory.__name__: factory for factory in (
    resnet8, resnet14, resnet20, resnet32, resnet44, resnet56, resnet110, resnet8x4, resnet32x4,
    wrn_16_2, wrn_40_1, wrn_40_2, vgg8, vgg13, mobilenetv2, shufflenetv1, shufflenetv2,
    digits_teacher, digits_cnn, digits_mlp, dafl_generator, gpt,
)}

__all__ = ["MODELS", *MODELS]
