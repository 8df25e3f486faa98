"""Batch transforms (issue #20, item 9): Mixup and CutMix with their labels mixed (DeiT), and
SSKD's rotation batches, against their formulas; then specs/deit_mixup.kd and specs/sskd.kd train
on digits through `kdsl.train` and `kdsl train`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kdsl
from kdsl.catalog.binding import instantiate
from kdsl.catalog.registry import REGISTRY
from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError
from kdsl.lang.loader import check_text
from kdsl.training.batch_transform import BatchTransform
from train_helpers import ROOT, metrics_jsonl


def build(name, **options):
    return instantiate(REGISTRY.get("batch_transform", name), **options)


def _batch(n=6, classes=4):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_mixup_mixes_inputs_and_smoothed_one_hot_labels_with_one_beta_weight():
    x, y = _batch()
    mixed, soft = build("mixup", alpha=0.8, label_smoothing=0.1, num_classes=4)(x, y, np.random.default_rng(7))
    lam = np.random.default_rng(7).beta(0.8, 0.8)
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    one_hot = torch.full((6, 4), 0.1 / 4).scatter_(1, y.view(-1, 1), 0.9 + 0.1 / 4)
    torch.testing.assert_close(soft, lam * one_hot + (1 - lam) * one_hot.flip(0))
    assert torch.allclose(soft.sum(1), torch.ones(6))


def test_cutmix_pastes_a_box_and_weighs_the_labels_by_its_area():
    x, y = _batch()
    mixed, soft = build("cutmix", alpha=1.0, num_classes=4)(x, y, np.random.default_rng(11))
    pasted = (mixed != x).any(dim=1)  # [N, H, W]: where the reversed batch shows
    area = pasted[0].float().mean().item()  # sample 0 differs from sample 5 everywhere it was pasted
    assert 0 < area < 1 and torch.equal(mixed[pasted.unsqueeze(1).expand_as(x)],
                                        x.flip(0)[pasted.unsqueeze(1).expand_as(x)])
    want = (1 - area) * torch.eye(4)[y] + area * torch.eye(4)[y.flip(0)]
    torch.testing.assert_close(soft[0], want[0])


def test_rotations_lay_out_each_original_then_its_rotations_labels_kept():
    x, y = _batch(3)
    rotated, labels = build("rotations")(x, y, None)
    assert rotated.shape == (12, 1, 6, 6) and torch.equal(labels, y)
    for i in range(3):
        for k in range(4):
            assert torch.equal(rotated[4 * i + k], torch.rot90(x[i], k, dims=(1, 2)))


def test_a_transform_is_the_same_at_the_same_step_and_located_when_it_fails():
    cfg = SimpleNamespace(batch_transform=("mixup_cutmix", {}), seed=4)
    transform = BatchTransform(cfg, num_classes=4)
    x, y = _batch()
    first, again = transform((x, y, torch.arange(6)), 2, 5), transform((x, y, torch.arange(6)), 2, 5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    with pytest.raises(KdslError) as refused:
        transform({"input_ids": x}, 0, 0)
    assert "KD321" in str(refused.value) and "named fields" in str(refused.value)
    unknown = BatchTransform(SimpleNamespace(batch_transform=("mixup", {}), seed=0), num_classes=None)
    with pytest.raises(KdslError, match="give num_classes"):
        unknown((x, y), 0, 0)
    _, diags, _ = check_text('student\nrecord s = output of student\nloss t = cross_entropy(s, batch.target)\n'
                             'train {\n  batch_transform = mixupp()\n}\n', "s.kd")
    assert [(d.code, d.span.line) for d in diags if d.is_error] == [("KD320", 5)]


def test_deit_mixup_and_sskd_train_on_digits(tmp_path, monkeypatch):
    made = []
    original = BatchTransform.__call__

    def spy(self, batch, epoch, step):
        made.append(original(self, batch, epoch, step))
        return made[-1]

    monkeypatch.setattr(BatchTransform, "__call__", spy)
    result = kdsl.train(str(ROOT / "specs" / "deit_mixup.kd"), out=str(tmp_path / "deit"), epochs=1,
                        steps_per_epoch=2, eval_teachers=False)
    assert result.history[-1]["step"] == 2 and np.isfinite(result.history[-1]["train/task"])
    # the dry run's example, then the two training batches: soft labels over the digits' 10 classes
    assert len(made) == 3 and all(b[1].shape == (b[0].shape[0], 10) for b in made)
    run = CliRunner().invoke(app, ["train", str(ROOT / "specs" / "sskd.kd"), "--out", str(tmp_path / "sskd"),
                                   "--epochs", "4", "--steps-per-epoch", "1"],
                             env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    assert [r["stage"] for r in metrics_jsonl(tmp_path / "sskd")] == ["pretext"] * 3 + ["distil"]
