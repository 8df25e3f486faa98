"""FSDP2 pieces in this process: a one-process gloo group makes fully_shard real (DTensor
parameters, the class swap, the all-gather hooks) at no launch cost. The 2-process runs are in
test_fsdp_train.py."""

from __future__ import annotations

import copy

import pytest
import torch

import kdsl
import kdsl.zoo
from kdsl.training import sharding
from kdsl.training.config import TrainConfig

SPEC = """
student = model("kdsl.zoo:gpt", vocab_size=64, seq_len=8, d_model=16, n_layers=2, n_heads=2)
teacher = model("kdsl.zoo:gpt", vocab_size=64, seq_len=8, d_model=16, n_layers=3, n_heads=2)
deliver output of method "kdsl.zoo.gpt:Embeddings.forward" from teacher to student keep 1
record s_h = output of student.blocks.1
record t_h = output of teacher.blocks.2
record s_out = output of student
record t_out = output of teacher
connector w = linear()
loss kd = token_kl(s_out, t_out, tau=2)
loss hint = hidden_mse(w(s_h), t_h)
"""


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already running in this process")
    store = dist.FileStore(str(tmp_path_factory.mktemp("pg") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _models():
    torch.manual_seed(0)
    student = kdsl.zoo.gpt(vocab_size=64, seq_len=8, d_model=16, n_layers=2, n_heads=2)
    teacher = kdsl.zoo.gpt(vocab_size=64, seq_len=8, d_model=16, n_layers=3, n_heads=2)
    return student, teacher


def _shard(model):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (1,))
    for path in sharding.unit_paths(model):
        fully_shard(model.get_submodule(path), mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _steps(distiller, n=3):
    """Losses and the student's gradients (whole) of ``n`` steps of plain SGD."""
    params = [p for p in distiller.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(n):
        x = torch.randint(0, 64, (4, 8), generator=g)
        opt.zero_grad()
        r = distiller.step(x)
        r.loss.backward()
        sharding.clip_grad_norm(params, 0.5)
        opt.step()
        losses.append(r.loss.item())
    return losses, sharding.full_state_dict(distiller.student)


def test_models_the_user_sharded_distil_as_whole_ones(group):
    """kdsl.compile on models wrapped with fully_shard by the user: records on units, a
    delivery into a patched method of a class FSDP swapped, a connector, clipping over shards:
    the same losses and student as the unwrapped models."""
    student, teacher = _models()
    torch.manual_seed(5)  # the connector's initial weights
    with kdsl.compile(kdsl.loads(SPEC, "t.kd"), student=copy.deepcopy(student),
                      teacher=copy.deepcopy(teacher), example_input=torch.zeros(2, 8, dtype=torch.long)) as d:
        expected, expected_student = _steps(d)
    s, t = _shard(copy.deepcopy(student)), _shard(copy.deepcopy(teacher))
    assert type(s).__name__ == "FSDPGPT" and sharding.is_dtensor(next(s.parameters()))
    torch.manual_seed(5)
    with kdsl.compile(kdsl.loads(SPEC, "t.kd"), student=s, teacher=t,
                      example_input=torch.zeros(2, 8, dtype=torch.long)) as d:
        got, got_student = _steps(d)
    assert got == pytest.approx(expected, rel=1e-6)
    for k in expected_student:
        torch.testing.assert_close(got_student[k], expected_student[k], rtol=1e-5, atol=1e-6, msg=k)


def test_optimizer_state_gathers_and_cuts_back(group):
    """A whole optimizer state (what checkpoint.pt holds) cut to this rank's shards and
    gathered again is the same state; clipping over shards is torch's clipping."""
    model = _shard(_models()[0])
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    opt.step()
    whole = sharding.full_optimizer_state(opt)
    assert all(type(v) is torch.Tensor for s in whole["state"].values() for v in s.values())
    opt.load_state_dict(sharding.local_optimizer_state(opt, whole))
    again = sharding.full_optimizer_state(opt)
    for i, s in whole["state"].items():
        for k, v in s.items():
            assert torch.equal(again["state"][i][k], v)
    plain = _models()[0]
    plain(torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(3))).sum().backward()
    sharded = _shard(copy.deepcopy(plain))
    for p, q in zip(plain.parameters(), sharded.parameters()):
        q.grad = torch.distributed.tensor.distribute_tensor(p.grad.clone(), q.device_mesh, q.placements)
    norm = torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.1)
    assert sharding.clip_grad_norm(list(sharded.parameters()), 0.1).item() == pytest.approx(norm.item(), rel=1e-6)
    for p, q in zip(plain.parameters(), sharded.parameters()):
        torch.testing.assert_close(q.grad.full_tensor(), p.grad)


def test_units_default_to_module_list_children_and_patterns_match_segments():
    model = kdsl.zoo.gpt(vocab_size=64, seq_len=8, d_model=16, n_layers=3, n_heads=2)
    assert sharding.unit_paths(model) == ["blocks.0", "blocks.1", "blocks.2"]
    assert sharding.unit_paths(model, ["blocks.*"]) == ["blocks.0", "blocks.1", "blocks.2"]
    assert sharding.unit_paths(model, ["**.mlp"]) == ["blocks.0.mlp", "blocks.1.mlp", "blocks.2.mlp"]
    assert sharding.unit_paths(model, ["blocks.1", "blocks.1.attn"]) == ["blocks.1.attn", "blocks.1"]


def test_run_placement_given_by_flags_is_checked_against_the_spec():
    """--strategy fsdp from the command line: the spec's param record of a sharded student is
    refused with the spec's location (KD780 carrying KD228), as kdsl check does with the spec's own."""
    spec = kdsl.loads("student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n"
                      "record w = param student.fc.weight\nloss kd = kd(s, t)\n", "p.kd")
    with pytest.raises(kdsl.KdslError) as info:
        sharding.check_placements(spec, TrainConfig(strategy="fsdp"))
    err = info.value.errors[0]
    assert err.code == "KD780" and "KD228" in err.message and err.span.line == 5
    with pytest.raises(kdsl.KdslError) as info:
        sharding.check_placements(spec, TrainConfig(strategy="fsdp", replicated=["student"], offloaded=["student"]))
    assert "KD229" in info.value.errors[0].message
    sharding.check_placements(spec, TrainConfig(strategy="fsdp", replicated=["student"], offloaded=["teacher"]))
    sharding.check_placements(spec, TrainConfig(strategy="ddp"))


def test_explain_shows_the_bytes_each_process_holds(capsys):
    """`kdsl explain --world-size 2 --strategy fsdp`: the spec's placements (student sharded,
    teacher offloaded), adamw's two moments, half the student's parameter bytes per process."""
    from kdsl.cli.app import main

    def explain(*args):
        with pytest.raises(SystemExit) as exit_:
            main(["explain", "specs/lm/fsdp.kd", *args])
        assert exit_.value.code == 0
        return capsys.readouterr().out

    text = explain("--world-size", "2", "--strategy", "fsdp")
    assert "memory per process: world size 2, strategy fsdp (optimizer adamw: 2 state tensors" in text
    student = [line for line in text.splitlines() if line.startswith("│ student")][-1]
    teacher = [line for line in text.splitlines() if line.startswith("│ teacher")][-1]
    assert "sharded" in student and "235.5 KiB" in student and "471.0 KiB" in student  # 482,304 B / 2
    assert "offloaded" in teacher and "3.2 MiB" not in teacher and "1.6 MiB" in teacher
    whole = explain("--world-size", "2")
    assert "471.0 KiB │ 471.0 KiB" in [line for line in whole.splitlines() if line.startswith("│ student")][-1]


TRUNCATED = """
student = model("kdsl.zoo:gpt", vocab_size=64, seq_len=8, d_model=16, n_layers=2, n_heads=2)
teacher = model("kdsl.zoo:gpt", vocab_size=64, seq_len=8, d_model=16, n_layers=3, n_heads=2)
record s_h = output of student.blocks.0
record t_h = output of teacher.blocks.0
loss hint = hidden_mse(s_h, t_h)
"""


def test_a_truncated_teacher_pass_on_sharded_units(group):
    """The teacher's pass stops after blocks.0 (truncation) inside FSDP2's units: the losses are
    those of the unwrapped models, step after step."""
    results = []
    for wrap in (False, True):
        student, teacher = _models()
        if wrap:
            student, teacher = _shard(student), _shard(teacher)
        with kdsl.compile(kdsl.loads(TRUNCATED, "t.kd"), student=student, teacher=teacher,
                          example_input=torch.zeros(2, 8, dtype=torch.long)) as d:
            assert d.plan.cuts  # the teacher's pass is cut after blocks.0
            results.append(_steps(d)[0])
    assert results[1] == pytest.approx(results[0], rel=1e-6)


PARAM_VIEW = "tests/diagnostics_models/fsdp_param_view.kd"  # a delivery and a record of a unit's parameter view


def test_a_view_of_a_units_parameter_is_freed_after_its_forward_and_refused(group):
    """What KD541 guards against, in FSDP2 itself: a slice of a unit's parameter taken in the
    unit's forward has no storage once the forward returns (reading it would read freed memory);
    one of the root unit's stays. The trainer refuses the spec's delivery and record with the
    run's placement (as `kdsl check` does with the spec's: tests/diagnostics_models), not when
    the teacher is replicated or the parameter is outside every unit."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    with kdsl.compile(kdsl.load(str(root / PARAM_VIEW)), example_input=torch.zeros(2, 8, 4)) as d:
        with pytest.raises(kdsl.KdslError) as info:
            sharding.check_param_views(d, TrainConfig(strategy="fsdp"))
        assert [(e.code, e.span.line) for e in info.value.errors] == [("KD541", 7), ("KD541", 11)]
        assert "unit 'teacher.blocks.0'" in info.value.errors[0].message
        sharding.check_param_views(d, TrainConfig(strategy="fsdp", replicated=["teacher"]))
        sharding.check_param_views(d, TrainConfig(strategy="fsdp", shard_units=["**.fc"]))
        teacher = copy.deepcopy(d.model("teacher"))
    sharded = _shard(teacher)
    with torch.no_grad():
        sharded(torch.zeros(2, 8, 4))
        in_unit = sharded.blocks[0].positions(3)  # called outside the unit's forward: the shard
        assert sharding.is_dtensor(in_unit)
    views = []
    real = type(sharded.blocks[0]).positions
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(sharded.blocks[0]), "positions", lambda self, n: views.append(real(self, n)) or views[-1])
        with torch.no_grad():
            sharded(torch.zeros(2, 8, 4))
    assert len(views) == 2 and all(v.untyped_storage().size() == 0 for v in views)  # freed: never read them
    assert not sharding.is_dtensor(sharded.head.weight)  # the root unit stays gathered after its forward


def test_explain_measures_activations_saved_for_backward_by_hand():
    """`kdsl explain --world-size N`'s activations: what each pass saves for backward in one step
    on the dry run's batch of 5. By hand: the student's GELU saves its input and the second
    Linear its input (5 x 8 float32 each: 320 B; the first Linear's input is the batch itself and
    the weights are parameters, not counted); the frozen teacher runs without gradients: 0; mse
    saves its two inputs (5 x 3 each: 120 B). Every process keeps its own batch's under either
    strategy; the step leaves the models and the RNG as they were."""
    from torch import nn

    from kdsl.reports.memory_plan import activation_bytes, memory_rows

    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    teacher = nn.Sequential(nn.Linear(4, 3))
    spec = kdsl.loads("student\nteacher\nrecord s = output of student\nrecord t = output of teacher\n"
                      "loss l = mse(s, t)\n", "a.kd")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=torch.randn(5, 4)) as d:
        rng = torch.random.get_rng_state()
        assert activation_bytes(d) == {"student": 2 * 5 * 8 * 4, "connectors, learning losses": 2 * 5 * 3 * 4}
        assert torch.equal(torch.random.get_rng_state(), rng)
        for world, strategy in ((1, "ddp"), (2, "fsdp")):
            rows = {r["model"]: r["activations"] for r in memory_rows(d, world, strategy, activation_bytes(d))}
            assert rows == {"student": 320, "teacher": 0, "connectors, learning losses": 120}
    assert all(torch.equal(student.state_dict()[k], v) for k, v in before.items())
