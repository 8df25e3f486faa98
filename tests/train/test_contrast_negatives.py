"""Dataset-side CRD negatives (issue #20, item 11): with ``contrast_negatives = K`` every training
batch carries ``batch.contrast_idx`` [N, 1 + K], each sample's own index first and then K training
samples of other classes drawn without replacement (RepDistiller's CIFAR100InstanceSample, mode
"exact"), and ``crd(..., contrast_idx=batch.contrast_idx)`` contrasts against exactly those."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

import kdsl
from kdsl.components.relation_losses import CRDLoss
from kdsl.training.contrast import ContrastSampler
from train_helpers import TEACHER_PT


def test_negatives_are_other_classes_without_replacement_and_fixed_by_the_seed():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    sampler = ContrastSampler(TensorDataset(torch.zeros(10, 1), labels), k=6)
    idx = sampler.indices(labels[3], 3, seed=11)
    assert idx[0] == 3 and len(set(idx[1:].tolist())) == 6
    assert all(labels[j] != 0 for j in idx[1:])
    assert torch.equal(idx, sampler.indices(labels[3], 3, seed=11))
    assert not torch.equal(idx, sampler.indices(labels[3], 3, seed=12))
    many = sampler.indices(labels[3], 3, seed=1)[1:]  # class 0 has 6 others: all of them, once each
    assert sorted(many.tolist()) == [1, 2, 4, 5, 7, 8]


SPEC = f"""
student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_teacher") from "{TEACHER_PT}"
record s_pen = input of student.fc
record t_pen = input of teacher.fc
connector s_embed = crd_embed(feat_dim=16)
connector t_embed = crd_embed(feat_dim=16)
loss crd = crd(s_embed(s_pen), t_embed(t_pen), batch.index, contrast_idx=batch.contrast_idx, num_data=40, nce_k=8)
train {{
  data = dataset("sched_data:small_digits", batch_size=10)
  contrast_negatives = 8
  epochs = 1
  steps_per_epoch = 2
  eval_teachers = false
}}
"""


def test_crd_trains_on_the_datasets_negatives(tmp_path, monkeypatch):
    seen = []
    forward = CRDLoss.forward

    def spy(self, preds_S, preds_T, indices, contrast_idx=None, target=None):
        seen.append((indices.clone(), contrast_idx.clone()))
        return forward(self, preds_S, preds_T, indices, contrast_idx, target)

    monkeypatch.setattr(CRDLoss, "forward", spy)
    spec = tmp_path / "crd.kd"
    spec.write_text(SPEC)
    result = kdsl.train(str(spec), out=str(tmp_path / "run"))
    assert result.history[-1]["step"] == 2
    labels = torch.tensor([int(kdsl.data.digits().train[i][1]) for i in range(40)])
    for indices, contrast in seen[-2:]:  # the two training steps (the dry run's first)
        assert contrast.shape == (10, 9) and torch.equal(contrast[:, 0], indices)
        for row in contrast:
            assert len(set(row[1:].tolist())) == 8 and (labels[row[1:]] != labels[row[0]]).all()
