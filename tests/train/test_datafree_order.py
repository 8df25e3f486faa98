"""The data-free loop options (issue #20, item 8), each against a loop written out here on the same
models, noise and losses: ``zero_grad = "after_step"`` (mmengine's backward, step, zero_grad order:
the generator step's gradient on the student carries into the student's next step, as MMRazor's
DFAD and ZSKT run) and ``share_input = true`` (DAFL: the student learns on the batch the generator
made in the same step)."""

from __future__ import annotations

import copy

import pytest
import torch

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.zoo import dafl_generator, digits_cnn
from train_helpers import student_weights

SPEC = """
student = model("kdsl.zoo:digits_cnn")
teacher = model("kdsl.zoo:digits_cnn")
generator gen = model("kdsl.zoo:dafl_generator", latent_dim=8, img_size=8, channels=1)
record s_logits = output of student
record t_logits = output of teacher
input = gen(noise(8))
phase make {
  loss adv = l1(s_logits, t_logits) * -1
  optimize gen with sgd(lr=0.05, momentum=0.0, weight_decay=0.0)
}
phase learn repeat 2 {
  loss kd = l1(s_logits, t_logits)
  optimize student with sgd(lr=0.1, momentum=0.0, weight_decay=0.0)
}
train {
  epochs = 1
  steps_per_epoch = 3
  batch_size = 4
  lr_schedule = constant()
  allow_random_teacher = true
  seed = 5
}
"""
LR = {"make": 0.05, "learn": 0.1}


def _models():
    torch.manual_seed(0)
    return {"student": digits_cnn(), "teacher": digits_cnn(), "gen": dafl_generator(latent_dim=8, img_size=8, channels=1)}


def _by_hand(spec, models, mmengine_order: bool, share: bool):
    """The run as a loop of plain torch: the distiller computes each phase's loss, the loop here
    does the rest (kdsl.train seeds torch with the spec's seed, then compiles: so does this)."""
    torch.manual_seed(5)
    with kdsl.compile(spec, batch_size=4, **models) as distiller:
        distiller.train()
        opts = {"make": torch.optim.SGD(models["gen"].parameters(), lr=LR["make"]),
                "learn": torch.optim.SGD(models["student"].parameters(), lr=LR["learn"])}
        for step in range(3):
            distiller.set_progress(epoch=step / 3, step=step, total_epochs=1)
            made = None
            for phase, repeat in (("make", 1), ("learn", 2)):
                for _ in range(repeat):
                    if not mmengine_order:
                        opts[phase].zero_grad(set_to_none=True)
                    if phase == "make" and share:
                        made = models["gen"](torch.randn(4, 8))
                        result = distiller.step(made, stage="main", phase=phase)
                    elif share and made is not None:
                        result = distiller.step(made.detach(), stage="main", phase=phase)
                    else:
                        result = distiller.step(stage="main", phase=phase)
                    result.loss.backward()
                    opts[phase].step()
                    if mmengine_order:
                        opts[phase].zero_grad(set_to_none=True)
        return {k: v.detach().clone() for k, v in models["student"].state_dict().items()}


@pytest.mark.parametrize("zero_grad, share", [("before_backward", False), ("after_step", False),
                                              ("before_backward", True)])
def test_the_trainer_runs_the_loop_written_out(tmp_path, zero_grad, share):
    spec = kdsl.loads(SPEC)
    trained = kdsl.train(spec, out=str(tmp_path / "run"), models=_models(), zero_grad=zero_grad, share_input=share)
    assert trained.history[-1]["step"] == 3
    got = student_weights(tmp_path / "run")
    want = _by_hand(spec, _models(), mmengine_order=zero_grad == "after_step", share=share)
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-7, msg=k)
    other = _by_hand(spec, _models(), mmengine_order=zero_grad != "after_step", share=not share)
    assert any(not torch.allclose(got[k], other[k]) for k in got if got[k].is_floating_point())


def test_carried_gradients_and_checkpoints_within_an_epoch_are_refused(tmp_path):
    spec = SPEC.replace("  seed = 5\n", '  seed = 5\n  zero_grad = "after_step"\n')
    with pytest.raises(KdslError) as refused:
        kdsl.train(kdsl.loads(spec, "s.kd"), out=str(tmp_path / "run"), models=_models(), checkpoint_every=1)
    assert "KD773" in str(refused.value) and "s.kd:23:3" in str(refused.value)
