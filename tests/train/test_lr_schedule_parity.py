"""Every case of ``lr_schedules.json`` (mmengine's, transformers' and torch's schedulers, per
iteration) reproduced by a kdsl spec's ``optimizer`` and ``lr_schedule`` to 1e-12.

The file is read from ``$KDSL_REFERENCE_DIR`` (default ``../shared/reference``); missing, these
tests skip (fail under ``KDSL_REQUIRE_SHARED=1``). Each case runs the real path: the spec is
checked, the run's config resolved, the phase's optimizer and schedule built by the trainer's
stage builder's functions, and the schedule stepped after every optimizer step.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kdsl
from kdsl.training.config import resolve_config
from kdsl.training.optim import build_lr_schedule
from kdsl.training.stages import _optimizer
from tests.catalog.test_reference_parity import cases_of

pytestmark = pytest.mark.reference

FILE = "lr_schedules.json"
# case id -> (optimizer, lr_schedule) as a spec writes them
SPECS = {
    "mmdet_1x_warmup_multistep": (
        "sgd(lr=0.02, momentum=0.9, weight_decay=0.0001)",
        'chain(linear_factor(start_factor=0.001, end=100, unit="iter"), multistep(milestones=[8, 11], end=12))'),
    "mmdet_paramwise_bias_lr_mult": (
        "sgd(lr=0.01, momentum=0.9, weight_decay=0.0001, bias_lr_mult=2.0, bias_decay_mult=0.0)",
        'chain(linear_factor(start_factor=0.001, end=100, unit="iter"), multistep(milestones=[8, 11], end=12))'),
    "mmseg_poly_by_iter": ("sgd(lr=0.01, momentum=0.9, weight_decay=0.0005)",
                           'poly(eta_min=0.0001, power=0.9, end=800, unit="iter")'),
    "mmengine_warmup_cosine_epoch": (
        "sgd(lr=0.1)",
        'chain(linear_factor(start_factor=0.01, end=50, unit="iter"), cosine_annealing(T_max=10, eta_min=1e-05))'),
    "mmcls_multistep_epoch": ("sgd(lr=0.1, momentum=0.9, weight_decay=0.0005)",
                              "multistep(milestones=[5, 10, 15], gamma=0.1)"),
    "mmengine_constant_then_exponential_iter": (
        "sgd(lr=0.05)",
        'chain(constant_factor(factor=0.25, end=30, unit="iter"), '
        'exponential(gamma=0.995, begin=30, end=300, unit="iter"))'),
    "hf_linear_warmup": ("adamw(lr=0.0005)", "warmup_linear(warmup=30)"),
    "hf_cosine_warmup": ("adamw(lr=0.0005)", "warmup_cosine(warmup=30)"),
    "hf_polynomial_warmup": ("adamw(lr=0.0005)", "warmup_poly(warmup=30, lr_end=1e-06, power=2.0)"),
    "torch_onecycle": ("sgd(lr=0.01, momentum=0.9)", "one_cycle(max_lr=0.1)"),
    "torch_cosine_epoch": ("sgd(lr=0.1)", "cosine_annealing(T_max=20)"),
    "torchdistill_multistep_epoch": ("sgd(lr=0.1)", "multistep(milestones=[5, 15], gamma=0.1)"),
}

SPEC = """
student = model("kdsl.zoo:digits_cnn")
record s = output of student
loss task = cross_entropy(s, batch.target)
train {{
  epochs = {epochs}
  steps_per_epoch = {iters}
  optimizer = {optimizer}
  lr_schedule = {schedule}
}}
"""


def lr_sequence(optimizer_text: str, schedule_text: str, epochs: int, iters: int, model: nn.Module):
    """lr[g][i]: the lr of group g at the optimizer step of iteration i, through the trainer's path."""
    spec = kdsl.loads(SPEC.format(epochs=epochs, iters=iters, optimizer=optimizer_text, schedule=schedule_text))
    cfg = resolve_config(spec, {})
    optimizer = _optimizer(cfg, None, list(model.named_parameters()))
    scheduler = build_lr_schedule(optimizer, cfg.lr_schedule, epochs=cfg.epochs, steps_per_epoch=iters)
    lrs = [[] for _ in optimizer.param_groups]
    for _ in range(epochs * iters):
        for g, group in enumerate(optimizer.param_groups):
            lrs[g].append(group["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_every_case_has_a_spec():
    assert sorted(c["id"] for c in cases_of(FILE)) == sorted(SPECS)


@pytest.mark.parametrize("case_id", sorted(SPECS))
def test_lr_schedule_matches_reference(case_id):
    case = next(c for c in cases_of(FILE) if c["id"] == case_id)
    optimizer_text, schedule_text = SPECS[case_id]
    model = nn.Linear(4, 3)  # a weight and a bias: the parameter groups' weights, then biases
    got = lr_sequence(optimizer_text, schedule_text, case["epochs"], case["iters_per_epoch"], model)
    # a reference of one group: every group of ours (adamw's no-decay one too) follows it
    expected = case["lr"] if len(case["lr"]) > 1 else case["lr"] * len(got)
    assert len(got) == len(expected)
    for g, (ours, theirs) in enumerate(zip(got, expected)):
        assert len(ours) == case["total_iters"]
        worst = max(range(len(ours)), key=lambda i: abs(ours[i] - theirs[i]))
        assert abs(ours[worst] - theirs[worst]) <= 1e-12, (case_id, g, worst, ours[worst], theirs[worst])
