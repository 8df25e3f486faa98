"""One test per statement form of the language issue: each example parses, as written, into the
IR it means. The examples are checked inside small whole specs so that the verifier runs too."""

from __future__ import annotations

import pytest

import kdsl
from kdsl.lang import ir

BASE = "student\nteacher\n"


def load(text: str) -> kdsl.Spec:
    return kdsl.loads(text, "t.kd")


def only(spec, kind):
    found = [s for s in spec.statements if isinstance(s, kind)]
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------------------- models
@pytest.mark.parametrize("line, expected", [
    ("student", dict(role="student", name="student", factory=None, checkpoint=None, trainable=False)),
    ('student = model("kdsl.zoo:resnet8x4", num_classes=100)',
     dict(role="student", name="student", checkpoint=None)),
])
def test_student_forms(line, expected):
    m = only(load(line + "\nrecord s = output of student\nloss l = model_loss(s)\n"), ir.ModelDecl)
    for k, v in expected.items():
        assert getattr(m, k) == v


def test_model_factory_and_checkpoint():
    spec = load('student\nteacher = model("kdsl.zoo:resnet32x4", num_classes=100) from "checkpoints/r32x4.pt"\n'
                "record t = output of teacher\nrecord s = output of student\nloss l = mse(s, t)\n")
    t = spec.model("teacher")
    assert t.factory.ref == "kdsl.zoo:resnet32x4"
    assert t.factory.kwargs[0].name == "num_classes" and t.factory.kwargs[0].value == ir.Const(value=100)
    assert t.checkpoint == "checkpoints/r32x4.pt"
    assert t.frozen and not t.trainable
    assert t.checkpoint_span.line == 2 and t.checkpoint_span.column == 62


def test_named_teachers_and_flags():
    spec = load('student\nteacher t2 from "checkpoints/other.pt"\nteacher peer trainable\n'
                "record s = output of student\nrecord a = output of t2\nrecord b = output of peer\n"
                "loss l1 = mse(s, a)\nloss l2 = mse(s, b)\n")
    t2, peer = spec.model("t2"), spec.model("peer")
    assert (t2.role, t2.checkpoint, t2.trainable) == ("teacher", "checkpoints/other.pt", False)
    assert (peer.role, peer.trainable, peer.frozen) == ("teacher", True, False)
    assert [m.name for m in spec.teachers] == ["t2", "peer"]


def test_teacher_named_by_its_role_can_be_trainable():
    spec = load("student\nteacher trainable\nrecord s = output of student\nrecord t = output of teacher\n"
                "loss l = mse(s, t)\n")
    assert spec.model("teacher").trainable


# ---------------------------------------------------------------------------- records
RECORDS = [
    ("output of student.layer3.0.bn1", dict(what="output", target=ir.ModulePath(model="student", path=("layer3", "0", "bn1")), invocation=0)),
    ("output of student", dict(what="output", target=ir.ModulePath(model="student"))),
    ("input of student.fc", dict(what="input", input=0, target=ir.ModulePath(model="student", path=("fc",)))),
    ("input 1 of student.head", dict(what="input", input=1)),
    ('input "mask" of student.head', dict(what="input", input="mask")),
    ("output of student.layer1 call 1", dict(invocation=1)),
    ("output of student.layer1 all calls", dict(invocation="all")),
    ('output of method "pkg.heads:Head.assign" in student',
     dict(what="output", target=ir.MethodRef(ref="pkg.heads:Head.assign", model="student"))),
    ('input 0 of method "pkg.heads:Head.assign" in student', dict(what="input", input=0)),
    ('output of function "pkg.ops:resize" in student',
     dict(target=ir.FunctionRef(ref="pkg.ops:resize", model="student"))),
    ('input "size" of function "pkg.ops:resize" in student', dict(what="input", input="size")),
    ("param student.fc.weight", dict(what="param", target=ir.ModulePath(model="student", path=("fc", "weight")))),
]


@pytest.mark.parametrize("source, expected", RECORDS, ids=[r[0] for r in RECORDS])
def test_record_forms(source, expected):
    spec = load(f"student\nrecord r = {source}\nloss l = model_loss(r)\n")
    rec = spec.record("r")
    for k, v in expected.items():
        assert getattr(rec, k) == v, k
    assert rec.describe().startswith(source.split(" of ")[0].split()[0])


# ---------------------------------------------------------------------------- deliveries
def test_deliveries():
    spec = load(BASE + 'deliver output of method "pkg.heads:Head.get_targets" from teacher to student keep 100\n'
                'deliver output of function "pkg.ops:assign" from teacher to student\n')
    a, b = spec.deliveries
    assert a.target == ir.MethodRef(ref="pkg.heads:Head.get_targets") and a.keep == 100
    assert (a.source, a.dest) == ("teacher", "student")
    assert b.target == ir.FunctionRef(ref="pkg.ops:assign") and b.keep is None


# ---------------------------------------------------------------------------- connectors
def test_connectors():
    spec = load(BASE + "record s = output of student.layer1\nrecord t = output of teacher.layer1\n"
                "connector p1 = conv_bn(in_channels=32, out_channels=64)\nconnector p2 = conv_bn(out_channels=128)\n"
                "connector m1 = ofd_margin(bn=teacher.layer2.0.bn1)\n"
                "loss a = mse(p1(s), t)\nloss b = mse(p2(s), m1(t))\n")
    p1, p2, m1 = spec.connectors
    assert p1.component == "conv_bn" and [k.name for k in p1.call.kwargs] == ["in_channels", "out_channels"]
    assert p2.call.keyword("out_channels").value == ir.Const(value=128)
    assert m1.call.keyword("bn").value == ir.ModuleRef(model="teacher", path=("layer2", "0", "bn1"))


# ---------------------------------------------------------------------------- losses
def test_loss_forms():
    spec = load(BASE + "record s_logits = output of student\nrecord t_logits = output of teacher\n"
                "record s_feat = output of student.layer1\nrecord t_feat = output of teacher.layer1\n"
                "record s_out = output of student\nrecord t_out = output of teacher\n"
                "connector p1 = conv1x1()\n"
                "loss kd   = kl_div(s_logits, t_logits, tau=4) * 0.9\n"
                "loss hint = l2(p1(s_feat), t_feat, normalize=false) * linear(0.0, 1.0, epochs=5)\n"
                "loss task = cross_entropy(s_out, batch.target) * 0.1\n"
                'loss aux  = kl_div(preds_S=s_out.logits, preds_T=t_out["logits"])\n'
                "loss adv  = mse(s_feat[0], t_feat) * -0.5\n")
    kd, hint, task, aux, adv = spec.losses
    assert kd.call.args == (ir.RecordRef(record="s_logits"), ir.RecordRef(record="t_logits"))
    assert kd.call.keyword("tau").value == ir.Const(value=4) and kd.weight == ir.Const(value=0.9)
    assert hint.call.args[0] == ir.ConnectorApply(connector="p1", args=(ir.RecordRef(record="s_feat"),))
    assert hint.call.keyword("normalize").value == ir.Const(value=False)
    assert hint.weight.func == "linear" and hint.weight.kwargs[0].name == "epochs"
    assert task.call.args[1] == ir.BatchRef(field="target")
    assert aux.call.keyword("preds_S").value == ir.Select(value=ir.RecordRef(record="s_out"), key="logits", by="attr")
    assert aux.call.keyword("preds_T").value == ir.Select(value=ir.RecordRef(record="t_out"), key="logits", by="item")
    assert adv.weight == ir.Const(value=-0.5)
    assert adv.call.args[0] == ir.Select(value=ir.RecordRef(record="s_feat"), key=0, by="item")


def test_literals():
    spec = load("student\nrecord s = output of student\nconnector c = interpolate(size=[4, 4], mode=\"nearest\", align_corners=none)\n"
                "connector q = conv_bn(out_channels=8, bias=true)\n"
                "loss l = smooth_l1(c(s), s, beta=5e-4)\nloss m = mse(q(s), s)\n")
    c = spec.connector("c")
    assert c.call.keyword("size").value == ir.ListExpr(items=(ir.Const(value=4), ir.Const(value=4)))
    assert c.call.keyword("align_corners").value == ir.Const(value=None)
    assert spec.losses[0].call.keyword("beta").value == ir.Const(value=5e-4)
    assert spec.connector("q").call.keyword("bias").value.value is True


def test_comments_and_continuation_lines():
    spec = load("# a comment\nstudent  # trailing comment\nteacher\nrecord s = output of student\n"
                "record t = output of teacher\nloss kd = kl_div(\n    s,   # the student\n    t,\n"
                "    tau=4,\n) * 0.5\n")
    assert spec.losses[0].weight == ir.Const(value=0.5)
    assert spec.losses[0].span.line == 6 and spec.losses[0].span.end_line == 10


# ---------------------------------------------------------------------------- train, composition
def test_train_block():
    spec = load("student\nrecord s = output of student\nloss task = cross_entropy(s, batch.target)\n"
                'train {\n  data = dataset("kdsl.data:digits", batch_size=64)\n  epochs = 30\n'
                "  optimizer = sgd(lr=0.05, momentum=0.9, weight_decay=5e-4)\n  lr_schedule = cosine()\n"
                "  seed = 0\n}\n")
    train = spec.train
    assert [s.key for s in train.settings] == ["data", "epochs", "optimizer", "lr_schedule", "seed"]
    assert train.get("epochs").value == ir.Const(value=30)
    assert train.get("optimizer").value.kwargs[2].value == ir.Const(value=5e-4)


def test_one_line_train_block():
    spec = load("student\nrecord s = output of student\nloss task = cross_entropy(s, batch.target)\ntrain { epochs = 3 }\n")
    assert spec.train.get("epochs").value == ir.Const(value=3)


def test_include_override_and_train_merge(tmp_path):
    (tmp_path / "base.kd").write_text(
        "student\nteacher\nrecord s_logits = output of student\nrecord t_logits = output of teacher\n"
        "loss kd = kl_div(s_logits, t_logits, tau=4)\nloss task = cross_entropy(s_logits, batch.target)\n"
        "train {\n  epochs = 30\n  seed = 1\n}\n")
    (tmp_path / "main.kd").write_text(
        'include "base.kd"        # its statements come first\n'
        "override loss kd = kl_div(s_logits, t_logits, tau=2)\ntrain {\n  epochs = 5\n}\n")
    spec = kdsl.load(tmp_path / "main.kd")
    kd = spec.losses[0]
    assert kd.name == "kd" and kd.override and kd.call.keyword("tau").value == ir.Const(value=2)
    assert [l.name for l in spec.losses] == ["kd", "task"]  # the override keeps the order
    assert spec.train.get("epochs").value == ir.Const(value=5) and spec.train.get("seed").value == ir.Const(value=1)
    assert spec.includes == (str(tmp_path / "base.kd"),)
    assert kd.span.file == str(tmp_path / "main.kd") and spec.losses[1].span.file.endswith("base.kd")


def test_import_plugin(tmp_path, monkeypatch):
    (tmp_path / "kd_parts_for_test.py").write_text(
        "import kdsl\nfrom torch import nn\n"
        "@kdsl.register_loss('halved_mse_test')\nclass H(nn.Module):\n"
        "    '''Half the mean squared error.'''\n"
        "    def __init__(self, scale: float = 0.5):\n        super().__init__(); self.scale = scale\n"
        "    def forward(self, a, b):\n        return self.scale * ((a - b) ** 2).mean()\n")
    (tmp_path / "s.kd").write_text('import "kd_parts_for_test"\nstudent\nteacher\nrecord s = output of student\n'
                                   "record t = output of teacher\nloss h = halved_mse_test(s, t, scale=0.25)\n")
    spec = kdsl.load(tmp_path / "s.kd")
    assert spec.imports[0].module == "kd_parts_for_test"
    with pytest.raises(kdsl.KdslError) as e:
        kdsl.loads('import "kd_parts_for_test"\nstudent\nrecord s = output of student\nloss h = halved_mse_test(s, s, scal=1.0)\n')
    assert "did you mean 'scale'?" in str(e.value)


def test_keywords_are_names_where_no_keyword_fits():
    # `output`, `in`, `model` and `keep` are keywords only where the grammar expects them
    spec = load("student\nrecord output = output of student\nconnector model = torch_nn(type=\"Identity\")\n"
                "loss keep = mse(model(output), output)\n")
    assert spec.record("output") and spec.connector("model") and spec.losses[0].name == "keep"


def test_spans_exclude_from_equality_but_survive_json():
    a = load("student\nrecord s = output of student\nloss l = model_loss(s)\n")
    b = load("\n\nstudent\n\nrecord s   =   output of student\nloss l = model_loss(s)\n")
    assert a == b and hash(a.statements[1]) == hash(b.statements[1])
    again = kdsl.Spec.model_validate_json(b.model_dump_json())
    assert again == b and again.statements[1].span == b.statements[1].span
