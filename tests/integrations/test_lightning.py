"""Lightning running a spec (issue #25, item 1): on digits the student after N steps equals
``kdsl.train``'s (same student, spec optimizer and schedule, data order) to 1e-6; connectors and the
student are in Lightning's checkpoint; a 2-process DDP run under Lightning's launcher (gloo, CPU)
ends with equal students on both ranks."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest

import torch

import kdsl

STEPS = 5


@pytest.fixture(scope="module")
def lightning_digits():
    """examples/integrations/lightning_digits.py; the file's tests skip, saying why, where Lightning
    is missing. Imported as the file's first test runs, not at import: every pytest-xdist worker
    collects every file (Lightning's import, with torchmetrics and scipy, ~3.5 s CPU), one runs it."""
    pytest.importorskip("lightning.pytorch")
    import lightning_digits

    return lightning_digits


def _assert_same(a, b):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-6, rtol=1e-6), (name, (p.float() - q.float()).abs().max())


def test_student_equals_kdsl_train(tmp_path, lightning_digits):
    from kdsl.zoo import digits_cnn

    torch.manual_seed(0)
    student = digits_cnn()
    start = copy.deepcopy(student)
    module = lightning_digits.digits_module(student, threads=1)
    run = lightning_digits.trainer(str(tmp_path / "pl"), epochs=1, steps=STEPS)
    run.fit(module)
    ours = kdsl.train(lightning_digits.KD_SPEC, out=str(tmp_path / "kdsl"), student=start, epochs=1,
                      steps_per_epoch=STEPS, threads=1, eval_teachers=False)
    reference = digits_cnn()
    reference.load_state_dict(torch.load(ours.files.student, weights_only=True))
    _assert_same(module.distiller.student, reference)
    logged = run.callback_metrics
    assert logged["loss/total_epoch"] == pytest.approx(ours.history[0]["train_loss"], rel=1e-5)
    assert float(logged["weight/kd_step"]) == pytest.approx(0.9)
    (checkpoint,) = (tmp_path / "pl").rglob("*.ckpt")
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    assert any(k.startswith("distiller.models.student.") for k in state)
    assert not any(k.startswith("distiller.models.teacher") for k in state)  # frozen: from the spec


def test_ddp_two_processes_under_lightnings_launcher(tmp_path, lightning_digits):
    from kdsl.zoo import digits_cnn

    from forked import free_port

    # the port Lightning's launcher would find free (bound and closed) is anyone's until rank 0's
    # rendezvous binds it: tests/forked.free_port's is kept from the other pytest worker's sockets
    env = dict(os.environ, PYTHONPATH=str(lightning_digits.ROOT), OMP_NUM_THREADS="1", MASTER_PORT=str(free_port()))
    example = lightning_digits.ROOT / "examples" / "integrations" / "lightning_digits.py"
    args = ["--out", str(tmp_path), "--epochs", "1", "--steps", "3", "--devices", "2"]
    proc = subprocess.run([sys.executable, str(example), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = []
    for rank in (0, 1):
        model = digits_cnn()
        model.load_state_dict(torch.load(tmp_path / f"student.rank{rank}.pt", weights_only=True))
        ranks.append(model)
    _assert_same(ranks[0], ranks[1])
    torch.manual_seed(0)  # the example's student before training: DDP trained it
    start = digits_cnn()
    assert not torch.equal(start.fc.weight, ranks[0].fc.weight)


def test_ddp_with_lightnings_sampler_is_kd794(tmp_path, lightning_digits):
    from kdsl.core.diagnostics import KdslError

    module = lightning_digits.digits_module()

    class Two:  # the check reads the trainer alone
        world_size, global_rank, max_epochs = 2, 0, 1

        class _accelerator_connector:
            use_distributed_sampler = True

    module.__dict__["_trainer"] = Two()
    with pytest.raises(KdslError) as err:
        module.setup("fit")
    assert err.value.diagnostics[0].code == "KD794"


def test_missing_lightning_is_kd792(monkeypatch):
    from kdsl.core.diagnostics import KdslError
    from kdsl.integrations import lightning as integration

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(KdslError) as err:
        integration._module_class()
    assert err.value.diagnostics[0].code == "KD792"
    assert any("pip install lightning" in h for h in err.value.diagnostics[0].hints)
