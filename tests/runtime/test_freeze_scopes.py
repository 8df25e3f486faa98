"""``freeze`` holds a scope exactly: no gradients, and eval mode so its norm layers' running
statistics do not move either (as detection backbones hold their frozen stages)."""

from __future__ import annotations

import torch

import kdsl
from kdsl.zoo.digits import digits_cnn

SPEC = """
student = model("kdsl.zoo:digits_cnn")
record s_logits = output of student
freeze student.layer1
loss task = cross_entropy(s_logits, batch.target)
"""


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_frozen_scope_keeps_parameters_and_running_statistics():
    torch.manual_seed(0)
    student = digits_cnn()
    before_layer1, before_layer2 = _state(student.layer1), _state(student.layer2)
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    with kdsl.compile(kdsl.loads(SPEC), student=student, example_input=x) as distiller:
        distiller.train()
        opt = torch.optim.SGD(distiller.trainable_parameters(), lr=0.1)
        for _ in range(3):
            distiller.step(x, target=y).loss.backward()
            opt.step()
            opt.zero_grad()
        assert not student.layer1.training and student.layer2.training
        after_layer1 = _state(student.layer1)
    for key, value in before_layer1.items():
        assert torch.equal(value, after_layer1[key]), key
    # the rest of the student trained, running statistics included
    assert not torch.equal(before_layer2["bn.running_mean"], student.layer2.bn.running_mean)
    assert not torch.equal(before_layer2["conv.weight"], student.layer2.conv.weight)
    # closing gives the module back as it came, in training mode
    assert student.layer1.training and all(p.requires_grad for p in student.layer1.parameters())
