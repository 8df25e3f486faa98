"""The procedure forms of the language (issue #10): each parses, as written, into the IR it means;
the scoping rules of stages and phases (kdsl.lang.procedure); printing and formatting round trips;
and the override-after-include fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.lang import ir
from kdsl.lang.fmt import format_text, lowered_statements
from kdsl.lang.printer import statement_text
from kdsl.lang.procedure import IMPLICIT_PHASE, IMPLICIT_STAGE, check_stage_epochs, read_procedure

ROOT = Path(__file__).resolve().parents[2]
BASE = """student
teacher
record s = output of student
record t = output of teacher
record t_feat = output of teacher.layer2
"""


def load(text: str) -> kdsl.Spec:
    return kdsl.loads(BASE + text, "t.kd")


def codes(text: str):
    """Every diagnostic's code but KD250 (not every test reads all of BASE's records)."""
    spec, diagnostics, _ = kdsl.lang.loader.check_text(BASE + text, "t.kd")
    return [d.code for d in diagnostics if d.code != "KD250"]


# ---------------------------------------------------------------------------- statement forms
def test_stage_with_epochs_and_its_statements():
    spec = load("connector reg = conv1x1()\n"
                "stage hint epochs 20 {\n  loss hint = mse(reg(s), t_feat)\n"
                "  optimize student.conv1, student.layer1, reg\n}\n"
                "stage distil {\n  loss kd = kl_div(s, t, tau=4) * 0.9\n}\n")
    hint, distil = spec.stages
    assert (hint.name, hint.epochs, distil.name, distil.epochs) == ("hint", 20, "distil", None)
    loss, opt = hint.statements
    assert isinstance(loss, ir.LossDecl) and loss.name == "hint"
    assert [(t.what, t.name, t.path) for t in opt.targets] == [
        ("module", "student", ("conv1",)), ("module", "student", ("layer1",)), ("connector", "reg", ())]
    assert opt.optimizer is None
    assert [l.name for l in spec.all_losses] == ["hint", "kd"] and spec.losses == []
    assert hint.epochs_span.line == 7 and hint.name_span.column == 7


def test_phases_with_repeat_and_their_own_optimizer():
    spec = load('generator gen = model("kdsl.zoo:dafl_generator", latent_dim=100)\n'
                "input = gen(noise(100))\n"
                "phase make repeat 1 {\n  loss oh = l1(s, t) * -1\n  optimize gen with adam(lr=0.2)\n}\n"
                "phase learn repeat 5 {\n  loss kd = kl_div(s, t, tau=20)\n"
                "  optimize student with sgd(lr=0.1, momentum=0.9)\n}\n"
                "train {\n  steps_per_epoch = 10\n}\n")
    make, learn = spec.phases
    assert (make.name, make.repeat, learn.repeat) == ("make", 1, 5)
    opt = make.statements[1]
    assert opt.targets[0].what == "model" and opt.optimizer.func == "adam"
    assert opt.optimizer.kwargs[0].value == ir.Const(value=0.2)
    assert make.statements[0].weight == ir.Const(value=-1)  # negative weights stay legal
    assert [g.name for g in spec.generators] == ["gen"] and spec.model("gen").role == "generator"
    assert spec.input.value == ir.ModelApply(
        model="gen", args=(ir.FunctionApply(function="noise", kwargs=(ir.Keyword(name="dim", value=ir.Const(value=100)),)),))


def test_freeze_init_and_connector_checkpoint_and_frozen():
    spec = load('connector para = paraphraser(rate=0.5) from "para.pt" frozen\n'
                "connector p2 = paraphraser(rate=0.5) from \"p2.pt\"\n"
                "loss ft = mse(para.encode(t_feat), p2(t_feat))\n"
                "freeze student.layer1\nfreeze para\ninit student.layer2 from teacher.layer2\n")
    para, p2 = spec.connectors
    assert (para.checkpoint, para.frozen, p2.checkpoint, p2.frozen) == ("para.pt", True, "p2.pt", False)
    freezes = [s for s in spec.statements if isinstance(s, ir.FreezeDecl)]
    assert [(f.target.what, str(f.target)) for f in freezes] == [("module", "student.layer1"),
                                                                  ("connector", "para")]
    init = next(s for s in spec.statements if isinstance(s, ir.InitDecl))
    assert init.target == ir.ModulePath(model="student", path=("layer2",))
    assert init.source == ir.ModulePath(model="teacher", path=("layer2",))


def test_connector_methods_and_functions_resolve():
    spec = load("connector para = paraphraser(rate=0.5)\n"
                "loss rec = mse(para.reconstruct(t_feat), t_feat)\n"
                "loss deit = cross_entropy(s, argmax(t, dim=1))\n"
                "loss mut = kl_div(s, detach(t))\n"
                "loss soft = mse(softmax(s, 1, 4.0), t)\n")
    rec, deit, mut, soft = spec.losses
    assert rec.call.args[0] == ir.ConnectorApply(connector="para", method="reconstruct",
                                                 args=(ir.RecordRef(record="t_feat"),))
    assert deit.call.args[1] == ir.FunctionApply(
        function="argmax", args=(ir.RecordRef(record="t"),), kwargs=(ir.Keyword(name="dim", value=ir.Const(value=1)),))
    assert mut.call.args[1] == ir.FunctionApply(function="detach", args=(ir.RecordRef(record="t"),))
    # options given by position are named in the resolved form
    assert [(k.name, k.value.value) for k in soft.call.args[0].kwargs] == [("dim", 1), ("tau", 4.0)]


def test_a_declared_connector_shadows_a_function_of_the_same_name():
    spec = load("connector flatten = flatten()\nloss a = mse(flatten(t_feat), flatten(t_feat))\n")
    assert isinstance(spec.losses[0].call.args[0], ir.ConnectorApply)


def test_contextual_keywords_stay_usable_as_names():
    spec = load("record stage = output of student.fc\nloss phase = mse(stage, t) * linear(0.0, 1.0, epochs=5)\n")
    assert spec.record("stage") is not None and spec.losses[0].name == "phase"


# ---------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("text, code", [
    ("stage a {\n  record r = output of student\n}\n", "KD216"),
    ("stage a {\n  stage b {\n  }\n}\n", "KD216"),
    ("phase a {\n  phase b {\n  }\n}\n", "KD216"),
    ("stage a {\n  loss x = mse(s, t)\n}\nstage a {\n  loss y = mse(s, t)\n}\n", "KD217"),
    ("loss x = mse(s, t)\nstage a {\n  loss x = mse(s, t)\n}\n", "KD203"),
    ("loss x = mse(s, t)\noptimize nobody\n", "KD218"),
    ("loss x = mse(s, t)\noptimize teacher\n", "KD218"),
    ("loss x = mse(s, t)\noptimize student\noptimize student\n", "KD218"),
    ("teacher p trainable\nrecord pp = output of p\nloss x = kl_div(s, detach(pp))\noptimize p\n", "KD219"),
    ("stage a epochs 0 {\n  loss x = mse(s, t)\n}\n", "KD220"),
    ("phase a repeat 0 {\n  loss x = mse(s, t)\n}\n", "KD220"),
    ("stage a {\n  loss x = mse(s, t)\n}\nstage b {\n  loss y = mse(s, t)\n}\n", "KD220"),
    ("stage a epochs 40 {\n  loss x = mse(s, t)\n}\ntrain {\n  epochs = 30\n}\n", "KD220"),
    ("connector c = paraphraser() frozen\nloss x = mse(c(t_feat), t_feat)\n", "KD221"),
    ("connector c = paraphraser()\nloss x = mse(c(t_feat), t_feat)\nfreeze c\n", "KD221"),
    ("loss x = mse(s, t)\ninit student from student\n", "KD222"),
    ("loss x = mse(s, t)\ninit student.a from other.a\n", "KD205"),
    ('generator g = model("a.b:c")\ninput = g(noise(3))\nloss x = mse(s, t)\n', "KD223"),
    ('generator g = model("a.b:c")\ninput = g(s)\nloss x = mse(s, t)\ntrain {\n  steps_per_epoch = 3\n}\n', "KD223"),
    ('generator g = model("a.b:c")\nloss x = mse(g(noise(3)), t)\n', "KD224"),
    ("loss x = mse(student(t), t)\n", "KD224"),
    ("connector c = paraphraser()\nloss x = mse(c.encod(t_feat), t_feat)\n", "KD225"),
    ("loss x = mse(argmax(3), t)\n", "KD311"),
    ("loss x = mse(detach(teacher.layer2), t)\n", "KD311"),
    ("loss x = mse(argmax(t, axis=1), t)\n", "KD305"),
    ("loss x = mse(softmax(t, tau=-1), t)\n", "KD312"),
])
def test_each_mistake_has_its_code(text: str, code: str):
    assert code in codes(text)


def test_gradients_reach_a_generator_through_a_frozen_teacher():
    text = ('generator g = model("a.b:c")\ninput = g(noise(3))\n'
            "phase make {\n  loss oh = l1(t, t)\n  optimize g\n}\n"
            "phase learn {\n  loss kd = kl_div(s, t)\n  optimize student\n}\n"
            "train {\n  steps_per_epoch = 3\n}\n")
    assert codes(text) == []


def test_data_in_the_train_block_stands_for_steps_per_epoch():
    text = ('generator g = model("a.b:c")\ninput = g(noise(3))\nloss kd = kl_div(s, t)\noptimize student, g\n'
            'train {\n  data = dataset("kdsl.data:digits")\n}\n')
    assert codes(text) == []


def test_a_connector_trained_in_an_earlier_stage_may_be_frozen_later():
    text = ("connector para = paraphraser()\n"
            "stage pre epochs 2 {\n  loss rec = mse(para.reconstruct(t_feat), t_feat)\n  optimize para\n}\n"
            "stage ft {\n  freeze para\n  loss x = mse(para.encode(t_feat), t_feat)\n  loss task = cross_entropy(s, batch.target)\n}\n")
    assert codes(text) == []


def test_uses_inside_stages_and_phases_count():
    text = ("record only_here = output of student.fc\nconnector c = conv1x1()\n"
            "stage a {\n  phase p {\n    loss x = mse(c(only_here), t_feat)\n    loss y = kl_div(s, t)\n  }\n}\n")
    assert codes(text) == []


# ---------------------------------------------------------------------------- scoping and epochs
def test_plan_scopes_losses_freezes_and_optimize():
    spec = load("loss top = kl_div(s, t)\nfreeze student.layer1\noptimize student\n"
                "stage a epochs 2 {\n  loss sa = mse(s, t)\n  optimize student.fc\n"
                "  phase p repeat 3 {\n    loss pa = mse(s, t)\n    freeze student.fc\n  }\n"
                "  phase q {\n    loss qa = mse(s, t)\n    optimize student.layer2\n  }\n}\n"
                "stage b {\n  loss sb = mse(s, t)\n}\n")
    a, b = read_procedure(spec.statements).stages
    assert (a.name, a.epochs, b.name, b.epochs) == ("a", 2, "b", None)
    p, q, loose = a.phases
    assert p.losses == ["pa"] and p.repeat == 3
    assert p.optimize == ["student.fc"]  # the stage's, inherited
    assert [str(f.target) for f in p.freezes] == ["student.layer1", "student.fc"]
    assert q.optimize == ["student.layer2"]  # its own wins
    # the losses outside any phase make one more phase, "step", after the declared ones
    assert loose.decl is None and loose.name == IMPLICIT_PHASE and loose.losses == ["top", "sa"]
    assert loose.optimize == ["student.fc"]
    (only,) = b.phases
    assert only.decl is None and only.losses == ["top", "sb"]
    assert only.optimize == ["student"]


def test_a_spec_without_stages_is_one_unnamed_stage_of_one_phase():
    spec = load("loss kd = kl_div(s, t)\n")
    (stage,) = read_procedure(spec.statements).stages
    assert (stage.name, stage.epochs, stage.decl) == (IMPLICIT_STAGE, None, None)
    assert [(p.name, p.repeat, p.optimize_decl, p.losses) for p in stage.phases] == \
        [(IMPLICIT_PHASE, 1, None, ["kd"])]


def _stages(*epochs):
    """The procedure of stages declaring ``epochs`` (None: none), unverified: the verifier refuses
    some of these on its own."""
    return read_procedure([ir.StageDecl(name=f"s{i}", epochs=e) for i, e in enumerate(epochs)])


def test_the_epoch_rule():
    spans = lambda procedure, total: [(s.name, a, b) for s, a, b in procedure.ranges(total)]  # noqa: E731
    assert spans(_stages(20, None), 30) == [("s0", 0, 20), ("s1", 20, 30)]
    assert spans(_stages(None, 5), 30) == [("s0", 0, 25), ("s1", 25, 30)]
    assert spans(_stages(10, 20), 30) == [("s0", 0, 10), ("s1", 10, 30)]
    assert spans(read_procedure(load("loss kd = kl_div(s, t)\n").statements), 7) == [(IMPLICIT_STAGE, 0, 7)]
    for epochs, total in (((30, None), 30), ((10, 15), 30), ((None, None), 30), ((0, None), 5)):
        with pytest.raises(KdslError) as info:
            _stages(*epochs).ranges(total)
        assert [d.code for d in info.value.diagnostics] == ["KD220"]
    decls = [s.decl for s in _stages(10, 15).stages]
    assert check_stage_epochs(decls, None) == []  # without the run's epochs: nothing to compare


# ---------------------------------------------------------------------------- printing, JSON
@pytest.mark.parametrize("line", [
    'generator gen = model("kdsl.zoo:dafl_generator", latent_dim=100)',
    'connector para = paraphraser(rate=0.5) from "para.pt" frozen',
    "optimize student.conv1, student.layer1, regressor",
    "optimize gen with adam(lr=0.2)",
    "freeze student.layer1",
    "init student.layer2 from teacher.layer2",
    "input = gen(noise(100))",
    "loss ft = ft(translator(s_feat), para.encode(t_feat))",
    "loss deit = cross_entropy(s_dist, argmax(t_logits, dim=1))",
    "stage hint epochs 20 {\n  loss hint = mse(r(s), t)\n  optimize student.conv1\n}",
    "stage distil {\n  phase learn repeat 5 {\n    loss kd = kl_div(s, t)\n  }\n}",
    "phase make {\n  freeze para\n}",
])
def test_new_forms_print_as_written(line: str):
    (stmt,), problems = lowered_statements(line)
    assert not problems
    assert statement_text(stmt) == line
    again, _ = lowered_statements(statement_text(stmt))
    assert again == [stmt]


def test_resolved_forms_print_as_written():
    spec = load("connector para = paraphraser()\nloss rec = mse(para.reconstruct(t_feat), detach(t_feat))\n")
    assert statement_text(spec.losses[0]) == "loss rec = mse(para.reconstruct(t_feat), detach(t_feat))"


@pytest.mark.parametrize("name", ["fitnets_two_stage.kd", "ft.kd", "dml.kd", "deit.kd", "digits/dafl.kd",
                                  "digits/dfad.kd", "digits/freeze_init.kd"])
def test_procedure_specs_check_and_survive_json(name: str):
    spec = kdsl.load(ROOT / "specs" / name)
    assert not spec.warnings
    again = kdsl.Spec.model_validate_json(spec.model_dump_json())
    assert again == spec and read_procedure(again.statements) == read_procedure(spec.statements)


def test_dafl_spec_means_what_it_says():
    spec = kdsl.load(ROOT / "specs" / "digits" / "dafl.kd")
    (stage,) = read_procedure(spec.statements).stages
    make, learn = stage.phases
    assert make.losses == ["oh", "act", "ie"] and make.optimize == ["gen"]
    assert learn.losses == ["kd"] and learn.optimize == ["student"]
    assert spec.train.get("steps_per_epoch").value == ir.Const(value=50)


def test_formatting_blocks_keeps_comments_and_is_a_fixed_point():
    text = ("student\nteacher\nrecord s = output of student\n"
            "stage a epochs 2 {  # warm up\n# inside\n      loss x=mse(s,s)\n"
            "phase p repeat 2 {\nloss y = mse(s, s)  # deep\n}\n}\n")
    once = format_text(text, "t.kd")
    assert once.text == ("student\nteacher\nrecord s = output of student\n"
                         "stage a epochs 2 {  # warm up\n  # inside\n  loss x = mse(s, s)\n"
                         "  phase p repeat 2 {\n    loss y = mse(s, s)  # deep\n  }\n}\n")
    assert format_text(once.text, "t.kd").text == once.text
    assert lowered_statements(once.text)[0] == lowered_statements(text)[0]


# ---------------------------------------------------------------------------- bug 1 of issue #10
def test_override_after_include_takes_the_original_position(tmp_path: Path):
    (tmp_path / "base.kd").write_text(
        'student = model("kdsl.zoo:digits_cnn")\nteacher = model("kdsl.zoo:digits_teacher")\n'
        "record s = output of student\nrecord t = output of teacher\n"
        "connector c = linear(out_features=10)\nloss kd = kl_div(c(s), t)\n")
    (tmp_path / "top.kd").write_text(
        'include "base.kd"\noverride student = model("kdsl.zoo:digits_mlp")\n'
        "override record t = output of teacher.fc\nrecord s2 = output of student.fc\n"
        'override connector c = linear(out_features=10) from "c.pt"\n'
        "override loss kd = kl_div(c(s2), t)\n")
    spec = kdsl.load(tmp_path / "top.kd")
    assert [getattr(s, "name", None) for s in spec.statements] == ["student", "teacher", "s", "t", "c", "kd", "s2"]
    assert spec.student.factory.ref == "kdsl.zoo:digits_mlp"
    assert spec.record("t").target.path == ("fc",) and spec.connector("c").checkpoint == "c.pt"
    assert spec.losses[0].call.args[0].args[0] == ir.RecordRef(record="s2")


def test_an_override_still_reads_only_what_is_declared_above_it(tmp_path: Path):
    (tmp_path / "base.kd").write_text("student\nrecord s = output of student\nloss kd = model_loss(s)\n")
    (tmp_path / "top.kd").write_text('include "base.kd"\noverride loss kd = model_loss(later)\n'
                                     "record later = output of student.fc\n")
    with pytest.raises(kdsl.KdslError) as exc:
        kdsl.load(tmp_path / "top.kd")
    assert [d.code for d in exc.value.diagnostics] == ["KD204"]
