"""The shipped specs of stages, phases, generators and peers, trained on the bundled digits (a few
short epochs each), each checked for the property that defines it, not only that it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

import kdsl
import kdsl.zoo
from kdsl.core.diagnostics import KdslError
from kdsl.training.report import EventLog
from tests.conftest import interrupted_as_epoch_starts
from train_helpers import ROOT, SPECS, TEACHER_PT, metrics_jsonl, train_in_process

SHIPPED = ROOT / "specs"


def state_of(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def params_of(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


class Snapshots(EventLog):
    """Keeps the given modules' state when the run starts (after any ``init``) and as each stage
    starts, and how often each module's forward ran in training mode by then."""

    def __init__(self, **modules: torch.nn.Module) -> None:
        super().__init__()
        self.modules = modules
        self.at: Dict[str, Dict[str, Dict[str, torch.Tensor]]] = {}
        self.calls = {name: 0 for name in modules}
        self.calls_at: Dict[str, Dict[str, int]] = {}
        for name, m in modules.items():
            m.register_forward_pre_hook(lambda mod, args, name=name: self._count(mod, name))

    def _count(self, module, name) -> None:
        if module.training:
            self.calls[name] += 1

    def _take(self, label: str) -> None:
        self.at[label] = {n: state_of(m) for n, m in self.modules.items()}
        self.calls_at[label] = dict(self.calls)

    def run_start(self, info) -> None:
        super().run_start(info)
        self._take("start")

    def stage_start(self, info) -> None:
        super().stage_start(info)
        self._take(info.name)


def same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


def teacher_state() -> Dict[str, torch.Tensor]:
    return torch.load(TEACHER_PT, map_location="cpu", weights_only=True)


def run(spec: Path, out: Path, reporter=None, **flags):
    return kdsl.train(str(spec), out=str(out), reporter=reporter, threads=1, **flags)


# ---- stages ---------------------------------------------------------------------------------------
def test_fitnets_two_stages_hint_trains_only_up_to_the_guided_layer(tmp_path):
    student = kdsl.zoo.digits_cnn()
    snaps = Snapshots(student=student)
    result = run(SHIPPED / "fitnets_two_stage.kd", tmp_path / "run", snaps, student=student,
                 epochs=6, steps_per_epoch=3)
    before, after_hint = snaps.at["hint"]["student"], snaps.at["distil"]["student"]
    # stage 1 optimizes conv1, bn1, layer1 (and the regressor): the rest is bit-identical
    for later in ("layer2.conv.weight", "layer2.bn.weight", "layer2.bn.bias", "fc.weight", "fc.bias"):
        assert torch.equal(before[later], after_hint[later]), later
    for trained in ("conv1.weight", "bn1.weight", "layer1.conv.weight"):
        assert not torch.equal(before[trained], after_hint[trained]), trained
    # stage 2 trains the whole student
    final = state_of(student)
    assert not torch.equal(after_hint["fc.weight"], final["fc.weight"])
    assert [r["stage"] for r in result.history] == ["hint"] * 5 + ["distil"]
    assert [k for k in result.history[0] if k.startswith("train/")] == ["train/hint"]
    assert [k for k in result.history[-1] if k.startswith("train/")] == ["train/kd", "train/task"]
    # the connectors after each stage; the regressor is not trained in stage 2
    assert set(result.files.connectors) == {"hint", "distil"}
    hint = torch.load(tmp_path / "run" / "connectors" / "hint.pt", weights_only=True)
    distil = torch.load(tmp_path / "run" / "connectors" / "distil.pt", weights_only=True)
    assert list(hint) == ["regressor"]
    for k, v in hint["regressor"].items():
        assert torch.equal(v, distil["regressor"][k]), k


def test_a_stage_s_connectors_load_with_from(tmp_path):
    """``connector regressor = conv1x1(bn=true) from "RUN/connectors/hint.pt"`` takes the
    regressor as the hint stage left it."""
    run(SPECS / "two_stage.kd", tmp_path / "run", epochs=4, steps_per_epoch=2)
    saved = torch.load(tmp_path / "run" / "connectors" / "hint.pt", weights_only=True)["regressor"]
    text = (SPECS / "two_stage.kd").read_text().replace(
        "connector regressor = conv1x1(bn=true)",
        f'connector regressor = conv1x1(bn=true) from "{tmp_path / "run" / "connectors" / "hint.pt"}"')
    spec = tmp_path / "reuse.kd"
    spec.write_text(text.replace("../../../specs/digits/teacher.pt", TEACHER_PT))
    x = torch.stack([kdsl.data.digits().val[i][0] for i in range(4)])
    with kdsl.compile(str(spec), example_input=x) as distiller:
        loaded = distiller.connectors["regressor"].state_dict()
        assert list(loaded) == list(saved)
        for k, v in saved.items():
            assert torch.equal(loaded[k], v), k


def test_factor_transfer_never_runs_the_student_while_the_paraphraser_trains(tmp_path):
    student = kdsl.zoo.digits_cnn()
    snaps = Snapshots(student=student)
    result = run(SHIPPED / "ft.kd", tmp_path / "run", snaps, student=student, epochs=6, steps_per_epoch=3)
    # stage 'paraphrase': 5 epochs of 3 steps without one training forward of the student
    # (the compiler's dry run called it once before the run started)
    assert snaps.calls_at["transfer"]["student"] == snaps.calls_at["paraphrase"]["student"]
    assert snaps.at["paraphrase"]["student"].keys() == snaps.at["transfer"]["student"].keys()
    assert all(torch.equal(v, snaps.at["transfer"]["student"][k]) for k, v in snaps.at["paraphrase"]["student"].items())
    assert snaps.calls["student"] - snaps.calls_at["transfer"]["student"] == 3  # 'transfer': 3 steps
    # the paraphraser trained in stage 1, then frozen: the same after stage 2
    para1 = torch.load(tmp_path / "run" / "connectors" / "paraphrase.pt", weights_only=True)["para"]
    para2 = torch.load(tmp_path / "run" / "connectors" / "transfer.pt", weights_only=True)["para"]
    for k, v in para1.items():
        if v.is_floating_point() and "running" not in k:
            assert torch.equal(v, para2[k]), k
    assert [r["stage"] for r in result.history] == ["paraphrase"] * 5 + ["transfer"]


def test_stages_that_need_more_epochs_than_the_run_are_refused_where_declared(tmp_path):
    with pytest.raises(KdslError) as info:
        run(SPECS / "two_stage.kd", tmp_path / "run", epochs=2)
    d = info.value.diagnostics[0]
    assert d.code == "KD220" and "of the run's 2 epochs" in d.message
    assert d.span is not None and d.span.line == 19  # `stage distil`, which would run the rest
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ---- phases, generators ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dafl", "dfad"])
def test_data_free_runs_never_read_the_training_data(tmp_path, name):
    import train_data

    student = kdsl.zoo.digits_cnn()
    gen = kdsl.zoo.dafl_generator(latent_dim=100, img_size=8, channels=1)
    snaps = Snapshots(student=student, gen=gen)
    train_data.Untouchable.reads = 0
    result = run(SHIPPED / "digits" / f"{name}.kd", tmp_path / "run", snaps, student=student,
                 models={"gen": gen}, epochs=2, steps_per_epoch=3, data="train_data:untouchable_digits")
    assert train_data.Untouchable.reads == 0  # the training loader was never iterated
    # the generator and the student both trained, and both are saved
    for name_, module in (("gen", gen), ("student", student)):
        assert not same(snaps.at["start"][name_], state_of(module), ""), name_
        saved = torch.load(tmp_path / "run" / "models" / f"{name_}.pt", weights_only=True)
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in saved.items())
    assert set(result.files.models) == {"gen", "student"}
    # the student is evaluated on the validation data; the generator (no class scores) is not
    assert [r["model"] for r in result.rows] == ["teacher", "student"]
    rows = metrics_jsonl(tmp_path / "run")
    assert [r["step"] for r in rows] == [3, 6]
    phases = {"dafl": ["make/oh", "make/act", "make/ie", "learn/kd"], "dfad": ["make/adv", "learn/kd"]}[name]
    assert [k[6:] for k in rows[0] if k.startswith("train/")] == phases
    if name == "dfad":  # the generator maximises the disagreement: its weighted term is negative
        assert rows[0]["train/make/adv"] < 0 < rows[0]["train/learn/kd"]
        state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
        assert state["optimization"]["main"]["learn"]["scheduler"]["last_epoch"] == 2 * 3 * 5


def test_a_generator_run_without_any_data(tmp_path):
    result = run(SPECS / "datafree.kd", tmp_path / "run")
    assert result.final == {} and result.summary["student"] is None and result.rows == []
    rows = metrics_jsonl(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2] and "val_top1" not in rows[0]
    assert set(result.files.models) == {"gen", "student"}
    printed = train_in_process(str(SPECS / "datafree.kd"), out=str(tmp_path / "again"))[1]
    assert "no data to evaluate on" in printed and "no validation data: nothing evaluated" in printed
    # each phase's own optimizer is shown (issue #19.4: the line showed the train block's sgd only)
    assert "make: adam lr 0.001, learn: sgd lr 0.1" in printed


# ---- peers ----------------------------------------------------------------------------------------
def test_mutual_learning_trains_saves_and_evaluates_both_peers(tmp_path):
    student, peer = kdsl.zoo.digits_cnn(), kdsl.zoo.digits_cnn()
    snaps = Snapshots(student=student, peer=peer)
    result = run(SHIPPED / "dml.kd", tmp_path / "run", snaps, student=student, models={"peer": peer},
                 epochs=2, steps_per_epoch=4)
    for name, module in (("student", student), ("peer", peer)):
        start, final = snaps.at["start"][name], state_of(module)
        assert all(not torch.equal(start[k], final[k]) for k, _ in module.named_parameters()), name
        saved = torch.load(tmp_path / "run" / "models" / f"{name}.pt", weights_only=True)
        assert all(torch.equal(v, final[k]) for k, v in saved.items())
    assert [(r["model"], r["role"]) for r in result.rows] == [("peer", "peer"), ("student", "student")]
    last = result.history[-1]
    assert result.peers["peer"]["top1"] == last["val_top1/peer"]
    assert result.summary["peers"]["peer"]["top1"] == last["val_top1/peer"]
    # --eval-only reads both back and reports the same numbers
    again = kdsl.train(str(SHIPPED / "dml.kd"), out=str(tmp_path / "run"), eval_only=True, threads=1)
    assert again.peers["peer"]["top1"] == last["val_top1/peer"]
    assert again.final["top1"] == last["val_top1"]
    assert [r["role"] for r in again.rows] == ["peer", "student"]


# ---- partial control of a model -------------------------------------------------------------------
def test_init_copies_the_teacher_and_freeze_keeps_it(tmp_path):
    student = kdsl.zoo.digits_cnn(width=32)
    snaps = Snapshots(student=student)
    run(SHIPPED / "digits" / "freeze_init.kd", tmp_path / "run", snaps, student=student,
        epochs=2, steps_per_epoch=3)
    teacher = teacher_state()
    start = snaps.at["start"]["student"]
    copied = [k for k in start if k.split(".")[0] in ("conv1", "bn1", "layer1")]
    # init: the copied modules equal the teacher's when the run starts (buffers included)
    assert copied and all(torch.equal(start[k], teacher[k]) for k in copied)
    assert not torch.equal(start["fc.weight"], teacher["fc.weight"])
    # freeze: their parameters are bit-identical after training; the rest trained
    final = params_of(student)
    for k in final:
        if k.split(".")[0] in ("conv1", "bn1", "layer1"):
            assert torch.equal(final[k], teacher[k]), k
        else:
            assert not torch.equal(final[k], start[k]), k


def test_init_happens_once_not_on_resume(tmp_path, monkeypatch):
    """A resumed run keeps the trained weights: the copy from the teacher is not made again."""
    calls = []
    from kdsl.runtime.distiller import Distiller

    real = Distiller.apply_inits
    monkeypatch.setattr(Distiller, "apply_inits", lambda self: (calls.append(1), real(self))[1])
    spec = SHIPPED / "digits" / "freeze_init.kd"
    with interrupted_as_epoch_starts(monkeypatch, 1):  # after the first epoch's checkpoint
        run(spec, tmp_path / "run", epochs=2, steps_per_epoch=2)
    result = run(spec, tmp_path / "run", epochs=2, steps_per_epoch=2, resume=True)
    assert calls == [1] and [r["epoch"] for r in result.history] == [1, 2]


def test_deit_hard_label_term_is_cross_entropy_to_the_teacher_s_argmax(tmp_path):
    result = run(SHIPPED / "deit.kd", tmp_path / "run", epochs=1, steps_per_epoch=2)
    assert "train/deit" in result.history[0]
    # one step of the trained student, by hand: the term is CE against the teacher's prediction
    val = kdsl.data.digits().val
    x = torch.stack([val[i][0] for i in range(16)])
    wrong = (torch.stack([val[i][1] for i in range(16)]) + 1) % 10  # labels the teacher never predicts
    student = kdsl.zoo.digits_cnn()
    student.load_state_dict(torch.load(tmp_path / "run" / "student.pt", weights_only=True))
    with kdsl.compile(str(SHIPPED / "deit.kd"), example_input=x, student=student) as distiller:
        out = distiller.step(x, target=wrong)
    s, t = out.student_output, out.teacher_outputs["teacher"]
    assert torch.equal(out.losses["deit"], F.cross_entropy(s, t.argmax(dim=1)) * 0.5)
    assert torch.equal(out.losses["task"], F.cross_entropy(s, wrong) * 0.5)
    assert not torch.equal(out.losses["deit"], out.losses["task"])


# ---- what a run reports --------------------------------------------------------------------------
def test_stages_and_phases_in_the_printed_run(tmp_path):
    _, printed = train_in_process(str(SPECS / "two_stage.kd"), out=str(tmp_path / "a"), epochs=4, steps_per_epoch=2)
    assert "stages: hint (epochs 1-2), distil (epochs 3-4)" in printed
    assert "stage hint: epochs 1-2" in printed and "stage distil: epochs 3-4" in printed
    assert "epoch   1/4  stage hint  loss" in printed and "epoch   4/4  stage distil  loss" in printed
    _, printed = train_in_process(str(SPECS / "phased.kd"), out=str(tmp_path / "b"), epochs=1)
    assert "each step: soft x2, hard" in printed
    assert "(soft/kd " in printed and "hard/task " in printed and "lr soft " in printed
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["history"][0]["stage"] == "main"


def test_a_phase_with_everything_frozen_is_refused_at_the_freeze(tmp_path):
    spec = tmp_path / "frozen.kd"
    spec.write_text((SPECS / "phased.kd").read_text().replace("../../../specs/digits/teacher.pt", TEACHER_PT)
                    .replace("phase soft repeat 2 {", "freeze student\nphase soft repeat 2 {")
                    .replace("  optimize student with adam(lr=0.002)\n", "").replace("  optimize student\n", ""))
    with pytest.raises(KdslError) as info:
        run(spec, tmp_path / "run", epochs=1)
    d = info.value.diagnostics[0]
    assert d.code == "KD219" and "phase 'soft' of stage 'main' has nothing to train" in d.message
    assert d.span is not None and d.span.line == 10  # `freeze student`
