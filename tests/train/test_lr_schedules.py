"""Learning-rate schedules stated in a spec: chains checked like calls, spans that do not fit their
stage refused before training (KD770) at the piece, a schedule restarted in each stage, resumed
exactly."""

from __future__ import annotations

import pytest
import torch

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.lang.loader import check_text
from kdsl.training.config import resolve_config
from kdsl.training.optim import build_lr_schedule

HEAD = """student = model("kdsl.zoo:digits_cnn")
record s = output of student
loss task = cross_entropy(s, batch.target)
"""


def _train(schedule: str, epochs: int = 2, steps: int = 5, extra: str = "") -> str:
    return HEAD + extra + ("train {\n  data = dataset(\"kdsl.data:digits\", batch_size=16)\n"
                           f"  epochs = {epochs}\n  steps_per_epoch = {steps}\n  lr_schedule = {schedule}\n}}\n")


def _errors(text: str):
    _, diags, _ = check_text(text, "s.kd")
    return [(d.code, d.message) for d in diags if d.is_error]


@pytest.mark.parametrize("schedule, code, words", [
    ("chain(multistep(milestones=[1]), chain(poly()))", "KD214", "each argument of chain(...) is one schedule's call"),
    ("chain(cosine(), poly())", "KD214", "'cosine' sets the whole run's lr and cannot be chained"),
    ("chain(polly())", "KD310", "unknown lr schedule 'polly'"),
    ("chain()", "KD214", "chain(...) takes the schedules it runs"),
    ('chain(poly(unit="step"))', "KD309", "'unit' of 'poly' must be"),
    ("chain(multistep(milestones=[1], gama=0.5))", "KD305", "gama"),
])
def test_a_chain_is_checked_piece_by_piece(schedule, code, words):
    errors = _errors(_train(schedule))
    assert any(c == code and words in m for c, m in errors), errors


def test_a_valid_chain_checks_clean():
    assert _errors(_train('chain(linear_factor(start_factor=0.1, end=3, unit="iter"), cosine_annealing())')) == []


@pytest.mark.parametrize("schedule, words, caret", [
    ('chain(linear_factor(start_factor=0.001, end=100, unit="iter"), multistep(milestones=[1]))',
     "linear_factor(...) ends at iter 100, past the end of its stage (10 optimizer steps)", "end=100"),
    ("warmup_linear(warmup=12)", "warms up over 12 iters, past its whole span (10)", "warmup=12"),
    ('cosine_annealing(end=3, unit="epoch")', "cosine_annealing(...) ends at epoch 3, past the end of its stage "
     "(2 epochs)", "end=3"),
    ("poly(begin=12)", "begins at iter 12 but its stage ends at iter 10", "begin=12"),
])
def test_a_span_past_its_stage_is_refused_at_the_option(tmp_path, schedule, words, caret):
    spec = tmp_path / "s.kd"
    spec.write_text(_train(schedule))
    with pytest.raises(KdslError) as info:
        kdsl.train(str(spec), out=str(tmp_path / "run"), threads=1)
    d = info.value.diagnostics[0]
    assert d.code == "KD770" and words in d.message, d.message
    line = spec.read_text().splitlines()[d.span.line - 1]
    assert line[d.span.column - 1:].startswith(caret)


def test_each_stage_restarts_its_schedule_over_its_own_epochs(tmp_path):
    text = HEAD.replace("loss task", "stage a epochs 2 {\n  loss task0 = cross_entropy(s, batch.target)\n}\n"
                        "stage b {\n  loss task") .replace("batch.target)\n", "batch.target)\n", 1)
    text = text.rstrip("\n") + "\n}\n" + ("train {\n  data = dataset(\"kdsl.data:digits\", batch_size=16)\n"
                                          "  epochs = 4\n  steps_per_epoch = 2\n"
                                          "  optimizer = sgd(lr=0.1)\n  lr_schedule = exponential(gamma=0.5)\n}\n")
    spec = tmp_path / "s.kd"
    spec.write_text(text)
    result = kdsl.train(str(spec), out=str(tmp_path / "run"), threads=1, eval_teachers=False)
    lrs = [row["lr"] for row in result.history]
    # the rows show the lr after each epoch: x 0.5 at the end of a stage's first epoch, not at its
    # last (end is exclusive); stage b starts again from 0.1 (a schedule running on would give 0.025)
    assert lrs == pytest.approx([0.05, 0.05, 0.05, 0.05])


def test_a_chain_resumes_exactly():
    spec = kdsl.loads(_train('chain(linear_factor(start_factor=0.01, end=7, unit="iter"), '
                             'cosine_annealing(eta_min=0.001))', epochs=4))
    cfg = resolve_config(spec, {})

    def scheduler():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        return opt, build_lr_schedule(opt, cfg.lr_schedule, epochs=4, steps_per_epoch=5)

    opt, sched = scheduler()
    for _ in range(13):
        sched.step()
    state, lr = sched.state_dict(), opt.param_groups[0]["lr"]
    opt2, sched2 = scheduler()
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == lr
    sched.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


TWO_STAGES = """student = model("kdsl.zoo:digits_cnn")
record s = output of student
stage warm epochs 2 {
  loss task0 = cross_entropy(s, batch.target)
  optimize student with sgd(lr=0.2, lr_schedule=chain(constant_factor(factor=0.5, end=3, unit="iter"), OTHER))
}
stage main {
  loss task = cross_entropy(s, batch.target)
}
train {
  data = dataset("kdsl.data:digits", batch_size=16)
  epochs = 3
  steps_per_epoch = 2
  optimizer = sgd(lr=0.1)
  lr_schedule = multistep(milestones=[0], gamma=0.3)
}
"""


def test_a_stage_runs_its_own_schedule_given_with_its_optimizer(tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(TWO_STAGES.replace("OTHER", "exponential(gamma=0.5)"))
    assert _errors(spec.read_text()) == []
    result = kdsl.train(str(spec), out=str(tmp_path / "run"), threads=1, eval_teachers=False)
    # warm (lr 0.2): x 0.5 until its iteration 2 gives it back, x 0.5 at the end of its first epoch
    # (not of its last: end is exclusive); main: the train block's 0.1, x 0.3 at milestone 0 (its start)
    assert [row["lr"] for row in result.history] == pytest.approx([0.1, 0.1, 0.03])


def test_a_stages_own_schedule_is_checked_and_located(tmp_path):
    errors = _errors(TWO_STAGES.replace("OTHER", "polly()"))
    assert errors == [("KD310", "unknown lr schedule 'polly'")]
    spec = tmp_path / "s.kd"
    spec.write_text(TWO_STAGES.replace("OTHER", 'poly(end=9, unit="iter")'))
    with pytest.raises(KdslError) as info:
        kdsl.train(str(spec), out=str(tmp_path / "run"), threads=1)
    d = info.value.diagnostics[0]
    assert d.code == "KD770" and "stage 'warm' has 2 epochs of 2 optimizer steps" in d.message
    assert d.span.line == 5 and spec.read_text().splitlines()[4][d.span.column - 1:].startswith("end=9")


def _run(tmp_path, optimizer: str, schedule: str):
    spec = tmp_path / "s.kd"
    spec.write_text(_train(schedule, epochs=2, steps=3).replace("train {\n", f"train {{\n  optimizer = {optimizer}\n"))
    return spec, kdsl.train(str(spec), out=str(tmp_path / "run"), threads=1, eval_teachers=False)


def test_any_torch_optimizer_and_scheduler_by_class_name(tmp_path):
    _, result = _run(tmp_path, 'torch_optimizer(type="RMSprop", lr=0.01, alpha=0.9)',
                     'torch_scheduler(type="StepLR", step_size=1, gamma=0.5)')
    assert [row["lr"] for row in result.history] == pytest.approx([0.005, 0.0025])


def test_a_torch_scheduler_stepped_per_iteration(tmp_path):
    _, result = _run(tmp_path, 'torch_optimizer(type="SGD", lr=0.1)',
                     'torch_scheduler(type="ExponentialLR", gamma=0.5, unit="iter")')
    assert [row["lr"] for row in result.history] == pytest.approx([0.1 * 0.5 ** 3, 0.1 * 0.5 ** 6])


@pytest.mark.parametrize("optimizer, schedule, words, hint", [
    ('torch_optimizer(type="RMSProp", lr=0.01)', "constant()", "torch.optim.RMSProp does not exist", "RMSprop"),
    ('torch_optimizer(type="SGD", lr=0.1, momentun=0.9)', "constant()", "torch.optim.sgd.SGD has no option 'momentun'",
     "momentum"),
    ('torch_optimizer(type="kdsl.zoo:digits_cnn")', "constant()", "digits_cnn is not a torch.optim.optimizer.Optimizer", ""),
    ("sgd(lr=0.1)", 'torch_scheduler(type="StepLR")', "StepLR needs the option 'step_size'", ""),
])
def test_a_bad_reference_is_refused_before_training_at_its_call(tmp_path, optimizer, schedule, words, hint):
    with pytest.raises(KdslError) as info:
        _run(tmp_path, optimizer, schedule)
    d = info.value.diagnostics[0]
    assert d.code == "KD772" and words in d.message, d.message
    line = (tmp_path / "s.kd").read_text().splitlines()[d.span.line - 1]
    assert line[d.span.column - 1:].startswith("torch_")  # the call that names the class
    assert hint in " ".join(d.hints)


def test_parameter_groups_by_pattern_set_lr_and_decay(tmp_path):
    from kdsl.training.stages import _optimizer

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    spec = kdsl.loads(_train("constant()").replace(
        "train {\n", 'train {\n  optimizer = sgd(lr=0.1, weight_decay=0.01, bias_lr_mult=2.0, groups=['
        'group("2.*", lr_mult=0.5), group("*.bias", decay_mult=0.0)])\n'))
    cfg = resolve_config(spec, {})
    optimizer = _optimizer(cfg, None, list(model.named_parameters()))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    got = {name: by_param[id(p)] for name, p in model.named_parameters()}
    assert got == {"2.weight": (0.05, 0.01), "2.bias": (0.05, 0.01),  # the first pattern matched wins
                   "0.bias": (0.1, 0.0), "1.bias": (0.1, 0.0),  # "*.bias": decay x 0, lr as the optimizer's
                   "0.weight": (0.1, 0.01), "1.weight": (0.1, 0.01)}  # by role: a norm's weight keeps its decay


@pytest.mark.parametrize("groups, code, words", [
    ('[group("*.bias", lr_multt=2.0)]', "KD305", "'group' has no option 'lr_multt'"),
    ('[group(lr_mult=2.0)]', "KD214", "group(...) takes one pattern"),
    ('["*.bias"]', "KD214", "each item of groups= is a group("),
    ('[group("*.bias", decay_mult=-1)]', "KD309", "'decay_mult' of 'group' must be a number >= 0"),
])
def test_parameter_groups_are_checked(groups, code, words):
    errors = _errors(_train("constant()").replace("train {\n", f"train {{\n  optimizer = sgd(groups={groups})\n"))
    assert any(c == code and words in m for c, m in errors), errors


def test_a_group_matching_nothing_warns_with_the_closest_names(tmp_path):
    from kdsl.training.report import EventLog

    spec = tmp_path / "s.kd"
    spec.write_text(_train("constant()").replace(
        "train {\n", 'train {\n  optimizer = sgd(groups=[group("student.classifer.*", lr_mult=10.0)])\n'))
    log = EventLog()
    kdsl.train(str(spec), out=str(tmp_path / "run"), reporter=log, threads=1, eval_teachers=False)
    warnings = [p for name, p in log.events if name == "warning" and "KD771" in p]
    assert len(warnings) == 1 and 'parameter group "student.classifer.*" matches none' in warnings[0]
    assert "closest names: student." in warnings[0] and ":5:" in warnings[0]


EXPLAINED = """student = model("kdsl.zoo:digits_cnn")
record s = output of student
loss task = cross_entropy(s, batch.target)
train {
  epochs = 12
  steps_per_epoch = 40
  optimizer = sgd(lr=0.02, weight_decay=0.0001, bias_lr_mult=2.0, bias_decay_mult=0.0, groups=[group("student.fc.*", lr_mult=10.0)])
  lr_schedule = chain(linear_factor(start_factor=0.001, end=100, unit="iter"), multistep(milestones=[8, 11]))
}
"""


def test_explain_shows_each_phases_optimizer_groups_schedule_and_lrs(tmp_path):
    import io

    from rich.console import Console

    from kdsl.reports.checking import ModelOptions, inspect
    from kdsl.training.optim_view import optimization_table
    from tests.conftest import run_cli_in_process

    spec = tmp_path / "s.kd"
    spec.write_text(EXPLAINED)
    rc, out, err = run_cli_in_process("explain", str(spec))
    assert rc == 0 and "optimization (12 epochs, 40 optimizer steps an epoch)" in out, err
    loaded = kdsl.load(str(spec))
    found = inspect(loaded, ModelOptions(None, None, [], None, None, None, False))
    with found.distiller as distiller:
        table, notes = optimization_table(loaded, distiller)
    console = Console(file=io.StringIO(), width=600, no_color=True)
    console.print(table)
    shown = console.file.getvalue()
    assert notes == []
    for text in ('groups=[group("student.fc.*", lr_mult=10, decay_mult=1)]',
                 "student.fc.*: 170 params, lr 0.2, decay 0.0001", "weights: 3,528 params, lr 0.02, decay 0.0001",
                 "biases: 40 params, lr 0.04, decay 0", "norms: 40 params, lr 0.02, decay 0.0001",
                 'chain(linear_factor(start_factor=0.001, end=100, unit="iter"), multistep(milestones=[8, 11]))',
                 # mmengine's lrs of the same schedule (lr_schedules.json, mmdet_1x_warmup_multistep) x the groups' mults
                 "first (iteration 0): 0.0002, 2e-05, 4e-05, 2e-05",
                 "warm-up end (iteration 99): 0.2, 0.02, 0.04, 0.02",
                 "last (iteration 479): 0.002, 0.0002, 0.0004, 0.0002"):
        assert text in shown, text
