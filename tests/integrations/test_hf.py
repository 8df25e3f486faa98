"""Hugging Face Trainer running a spec (issue #25, item 1): the student after N steps equals kdsl's
own step (the same compiled spec, optimizer and batches in the Trainer's order) to 1e-6, on digits
(FitNets: a teacher from the spec's checkpoint, a connector in the optimizer, a weight schedule on
the Trainer's progress) and on two tiny GPT-2s loaded by path; kdsl's terms in the Trainer's logs;
a resumed run (connectors from the checkpoint) ends where an uninterrupted one does."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

import hf_trainer  # examples/integrations
from kdsl.integrations.spec_step import SpecStep

STEPS = 6
ROOT = hf_trainer.ROOT


@pytest.fixture(scope="module", autouse=True)
def transformers_installed():
    """The file's tests skip, saying why, where transformers is missing. Imported as the file's
    first test runs, not at import: every pytest-xdist worker collects every file (~0.5 s CPU for
    transformers), one of them runs it."""
    return pytest.importorskip("transformers")


class Recorded(torch.utils.data.Dataset):
    """A dataset that records the indices the Trainer's loader reads, in order."""

    def __init__(self, data) -> None:
        self.data, self.seen = data, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        self.seen.append(i)
        return self.data[i]


def _reference(trainer, student0, models, optimizer_for, batch_size: int, seen, clip: float = 0.0,
               norms=None):
    """kdsl's own step over the batches the Trainer drew: the same spec compiled around a copy of
    the student's starting weights, the connectors' starting weights copied from the Trainer's."""
    dataset = trainer.train_dataset
    ref = SpecStep(trainer.kdsl.spec, student0, trainer.data_collator([dataset.data[0]]), models)
    ref.distiller.load_state_dict(copy.deepcopy(trainer.kdsl.extra_state()), strict=False)
    optimizer = optimizer_for(list(ref.student.parameters()) + ref.extra_parameters())
    ref.distiller.train()
    steps_per_epoch = -(-len(dataset) // batch_size)
    for step in range(STEPS):
        indices = seen[step * batch_size:(step + 1) * batch_size]
        batch = trainer.data_collator([dataset.data[i] for i in indices])
        result = ref.loss(batch, epoch=step / steps_per_epoch, step=step, total_epochs=1)
        optimizer.zero_grad()
        result.loss.backward()
        if clip:  # one norm over the student's and the connectors' gradients, as kdsl train clips
            model_norm = torch.nn.utils.get_total_norm([p.grad for p in ref.student.parameters()])
            norms.append((model_norm.item(), torch.nn.utils.clip_grad_norm_(
                list(ref.student.parameters()) + ref.extra_parameters(), clip).item()))
        optimizer.step()
    return ref.student


def _fresh_copy(model):
    """The model's weights in a new instance (a deep copy would carry the kdsl hooks along)."""
    from kdsl.zoo import digits_cnn

    twin = type(model)(model.config) if hasattr(model, "config") else digits_cnn()
    twin.load_state_dict(model.state_dict())
    return twin


def _assert_same(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6, rtol=1e-6), (name, (p.float() - q.float()).abs().max())


def test_digits_fitnets_equals_kdsls_step(tmp_path):
    trainer = hf_trainer.digits_trainer(str(tmp_path / "run"), STEPS, per_device_train_batch_size=16,
                                        logging_steps=3, save_steps=3)
    trainer.train_dataset = Recorded(trainer.train_dataset)
    student0 = _fresh_copy(trainer.model)
    assert len(trainer.kdsl.extra_parameters()) == 3  # conv1x1(bn=true): its conv weight, bn weight, bn bias
    trainer.train()
    assert len(trainer.optimizer.param_groups[-1]["params"]) == 3  # the connector's group
    ref = _reference(trainer, student0, None, lambda ps: torch.optim.SGD(ps, lr=0.05), 16,
                     trainer.train_dataset.seen)
    _assert_same(trainer.model, ref)
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert [row["step"] for row in logs] == [3, 6]
    for row in logs:  # kdsl's terms, means over the steps since the last log
        assert row["loss/task"] == pytest.approx(row["weight/task"] * row["loss_unweighted/task"], rel=1e-5)
        assert row["loss/total"] == pytest.approx(row["loss/hint"] + row["loss/task"], rel=1e-5)
    # linear(0, 10, epochs=5) on the Trainer's epochs (90 steps an epoch at batch 16): steps 0-2, 3-5
    assert logs[0]["weight/hint"] == pytest.approx(10 * 1 / 90 / 5, rel=1e-6)
    assert logs[1]["weight/hint"] == pytest.approx(10 * 4 / 90 / 5, rel=1e-6)


def test_max_grad_norm_clips_the_connectors_with_the_model(tmp_path):
    trainer = hf_trainer.digits_trainer(str(tmp_path / "run"), STEPS, per_device_train_batch_size=16,
                                        max_grad_norm=0.05, logging_steps=1)
    trainer.train_dataset = Recorded(trainer.train_dataset)
    student0 = _fresh_copy(trainer.model)
    trainer.train()
    logged = [row["grad_norm"] for row in trainer.state.log_history if "grad_norm" in row]
    norms = []
    ref = _reference(trainer, student0, None, lambda ps: torch.optim.SGD(ps, lr=0.05), 16,
                     trainer.train_dataset.seen, clip=0.05, norms=norms)
    _assert_same(trainer.model, ref)
    assert len(logged) == STEPS and min(logged) > 0.05  # the clip acted on every step
    for step, (got, (model_only, joint)) in enumerate(zip(logged, norms)):  # the connector's are in
        assert got == pytest.approx(joint, rel=1e-5)
        if step:  # the hint's weight is 0 at step 0 (linear from 0): the connector has no gradient there
            assert got != pytest.approx(model_only, rel=1e-5)
    unclipped = _reference(trainer, _fresh_copy(student0), None, lambda ps: torch.optim.SGD(ps, lr=0.05), 16,
                           trainer.train_dataset.seen)
    assert not torch.allclose(unclipped.fc.weight, ref.fc.weight, atol=1e-4)


def test_resume_from_the_trainers_checkpoint(tmp_path):
    whole = hf_trainer.digits_trainer(str(tmp_path / "whole"), STEPS, per_device_train_batch_size=16)
    whole.train()
    first = hf_trainer.digits_trainer(str(tmp_path / "cut"), STEPS, per_device_train_batch_size=16, save_steps=3)
    first.train()
    checkpoint = tmp_path / "cut" / "checkpoint-3"
    assert (checkpoint / "kdsl_state.pt").is_file()
    again = hf_trainer.digits_trainer(str(tmp_path / "cut"), STEPS, per_device_train_batch_size=16, save_steps=3)
    again.train(resume_from_checkpoint=str(checkpoint))
    _assert_same(again.model, whole.model)
    _assert_same(again.kdsl.distiller.connectors, whole.kdsl.distiller.connectors)


def test_gpt2_by_path_equals_kdsls_step(tmp_path):
    trainer = hf_trainer.gpt2_trainer(str(tmp_path / "run"), STEPS, logging_steps=STEPS)
    trainer.train_dataset = Recorded(trainer.train_dataset)
    student0 = _fresh_copy(trainer.model)
    teacher = trainer.kdsl.distiller.teachers["teacher"]
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    trainer.train()
    assert not teacher.training
    ref = _reference(trainer, student0, {"teacher": teacher},
                     lambda ps: torch.optim.AdamW(ps, lr=3e-3, weight_decay=0.0), 8, trainer.train_dataset.seen)
    _assert_same(trainer.model, ref)
    (row,) = [row for row in trainer.state.log_history if "loss" in row]
    assert {"loss/kd", "loss/task", "loss_unweighted/kd", "weight/kd"} <= set(row)


def test_a_spec_with_phases_is_kd790(tmp_path):
    from kdsl.core.diagnostics import KdslError
    from kdsl.integrations.hf import DistillationTrainer
    from kdsl.zoo import digits_cnn

    spec = ROOT / "specs" / "fitnets_two_stage.kd"  # two stages, each with its optimizer
    with pytest.raises(KdslError) as err:
        DistillationTrainer(str(spec), model=digits_cnn(), args=hf_trainer.training_args(str(tmp_path / "o"), 1),
                            train_dataset=hf_trainer.DigitsItems())
    assert err.value.diagnostics[0].code == "KD790"


def test_missing_transformers_no_dataset_and_a_foreign_state(tmp_path, monkeypatch):
    """KD792 without transformers (the install line), KD793 without training data to check the
    spec on, KD791 for a checkpoint state that is not this spec's."""
    from kdsl.core.diagnostics import KdslError
    from kdsl.integrations import hf
    from kdsl.zoo import digits_cnn

    args = hf_trainer.training_args(str(tmp_path / "o"), 1)
    with pytest.raises(KdslError) as err:
        hf.DistillationTrainer(str(hf_trainer.FITNETS), model=digits_cnn(), args=args)
    assert err.value.diagnostics[0].code == "KD793"
    trainer = hf_trainer.digits_trainer(str(tmp_path / "run"), 1)
    with pytest.raises(KdslError) as err:
        trainer.kdsl.load_extra_state({"connectors.other.weight": torch.zeros(1)})
    assert err.value.diagnostics[0].code == "KD791" and "connectors.regressor" in err.value.diagnostics[0].message
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(KdslError) as err:
        hf._trainer_class()
    assert err.value.diagnostics[0].code == "KD792"
    assert any("pip install transformers" in h for h in err.value.diagnostics[0].hints)
