"""`kdsl check` with models, `kdsl explain` and `kdsl graph`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli_in_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli():
    """``kdsl ARGS`` in this process, through the entry point (an interpreter that imports torch
    costs seconds on a busy machine; tests/cli/test_check_cli.py runs `python -m kdsl` itself)."""
    return run_cli_in_process


@pytest.fixture(scope="module")
def specs_with_checkpoints(tmp_path_factory):
    """specs/ copied next to random-weight teacher checkpoints (the real ones are not shipped),
    made once: the tests only read them."""
    import torch

    from kdsl.zoo import resnet32x4, wrn_40_2

    dst = tmp_path_factory.mktemp("inspect") / "specs"
    shutil.copytree(ROOT / "specs", dst)
    (dst / "checkpoints").mkdir()
    torch.save(resnet32x4().state_dict(), dst / "checkpoints" / "resnet32x4_cifar100.pt")
    torch.save(wrn_40_2().state_dict(), dst / "checkpoints" / "wrn_40_2_cifar100.pt")
    return dst


def test_check_with_models_prints_shapes_and_infers_channels(cli, specs_with_checkpoints):
    code, out, err = cli("check", str(specs_with_checkpoints / "ofd.kd"), "--input-shape", "2,3,32,32")
    assert code == 0, out + err
    assert "s_pre" in out and "[2, 256, 8, 8]" in out and "copied" in out  # in-place ReLU found
    assert "in_channels=256 (inferred)" in out and "out_channels=256 (inferred)" in out
    assert out.rstrip().endswith("ofd.kd: ok")


def test_check_with_cli_models_overrides_factories(cli, specs_with_checkpoints):
    code, out, err = cli("check", str(specs_with_checkpoints / "kd.kd"), "--student",
                         "kdsl.zoo:resnet8(num_classes=10)", "--input-shape", "2,3,32,32")
    assert code == 1
    assert "error[KD505]" in out and "[2, 10] and [2, 100]" in out


def test_check_without_input_derives_it_from_the_data_reader(cli, specs_with_checkpoints):
    # no --input-shape: kdsl.data:cifar100 declares its inputs' shape, so the regressor's channels
    # are still inferred (a spec with no shape to derive: tests/cli/test_check_without_weights.py)
    code, out, err = cli("check", str(specs_with_checkpoints / "fitnets.kd"), "--student",
                         "kdsl.zoo:resnet8x4(num_classes=100)")
    assert code == 0, out + err
    assert "dry run on an example input of shape 2x3x32x32 (declared by the data reader" in out


def test_check_with_data_batch(cli, tmp_path):
    spec = tmp_path / "d.kd"
    spec.write_text('student = model("kdsl.zoo:digits_cnn")\nteacher = model("kdsl.zoo:digits_teacher") from "'
                    + str(ROOT / "specs" / "digits" / "teacher.pt") + '"\nrecord s = output of student\n'
                    "record t = output of teacher\nloss kd = kl_div(s, t)\nloss ce = cross_entropy(s, batch.target)\n")
    code, out, err = cli("check", str(spec), "--data", "kdsl.data:digits")
    assert code == 0, out + err
    assert "[2, 10]" in out


def test_check_json_with_models(cli):
    case = "tests/diagnostics_models/class_counts.kd"
    code, out, _ = cli("check", "--format", "json", case, "--input-shape", "2,3,32,32")
    assert code == 1
    diags = json.loads(out)
    assert [d["code"] for d in diags] == ["KD258", "KD505"]  # its teacher loads no weights
    assert len(diags[1]["notes"]) == 2


@pytest.mark.parametrize("bad", ["2,a,3", "0,3", ""])
def test_bad_input_shape(cli, bad):
    code, _, err = cli("check", "specs/kd.kd", "--input-shape", bad)
    assert code == 2 and "KD701" in err and "Traceback" not in err


def test_explain(cli, specs_with_checkpoints):
    code, out, err = cli("explain", str(specs_with_checkpoints / "crd.kd"), "--input-shape", "2,3,32,32")
    assert code == 0, out + err
    for text in ("teacher pass: teacher(*inputs) under torch.no_grad()", "forward pre-hook on student.fc",
                 "s_embed", "crd_embed", "in_features=256 (inferred)", "batch.index",
                 "losses, in evaluation order", "trainable parameters added to the student's 1,233,540:"):
        assert text in out, text


def test_explain_patched_methods_and_deliveries(cli, tmp_path):
    mod = tmp_path / "kd_explain_parts.py"
    mod.write_text("import torch\nfrom torch import nn\n"
                   "class Head(nn.Module):\n    def __init__(self):\n        super().__init__(); self.fc = nn.Linear(4, 3)\n"
                   "    def targets(self, x):\n        return x.argmax(1)\n"
                   "    def forward(self, x):\n        return self.fc(x), self.targets(x)\n"
                   "def net():\n    return Head()\n")
    spec = tmp_path / "s.kd"
    spec.write_text('import "kd_explain_parts"\nstudent = model("kd_explain_parts:net")\n'
                    'teacher = model("kd_explain_parts:net")\n'
                    'deliver output of method "kd_explain_parts:Head.targets" from teacher to student\n'
                    "record s = output of student\nrecord t = output of teacher\n"
                    "loss kd = kl_div(s[0], t[0])\n")
    code, out, err = cli("explain", str(spec), "--input-shape", "2,4")
    assert code == 0, out + err
    assert "deliveries" in out and "kd_explain_parts.Head.targets" in out


def test_explain_reports_errors(cli):
    code, out, _ = cli("explain", "tests/diagnostics_models/spatial_mismatch.kd", "--input-shape", "2,3,32,32")
    assert code == 1 and "error[KD505]" in out


def test_graph_mermaid_and_dot(cli, tmp_path):
    code, out, _ = cli("graph", "specs/self_distill.kd")
    assert code == 0 and out.startswith("flowchart LR")
    assert out.count("exit (linear)") == 1  # one node per connector application
    assert '-->|"x 0.3"| total_total' in out
    code, out, _ = cli("graph", "specs/fitnets.kd", "--format", "dot")
    assert code == 0 and out.startswith("digraph kdsl {") and 'label="output of layer2"' in out
    target = tmp_path / "g.mmd"
    code, _, err = cli("graph", "specs/kd.kd", "--output", str(target))
    assert code == 0 and target.read_text().startswith("flowchart LR") and "wrote" in err


def test_graph_picture_needs_graphviz(cli, tmp_path):
    code, _, err = cli("graph", "specs/kd.kd", "--output", str(tmp_path / "g.png"))
    if shutil.which("dot"):
        assert code == 0 and (tmp_path / "g.png").stat().st_size > 0
    else:
        assert code == 2 and "graphviz" in err and "Traceback" not in err


def test_graph_with_shapes(cli, specs_with_checkpoints):
    code, out, _ = cli("graph", str(specs_with_checkpoints / "at.kd"), "--input-shape", "2,3,32,32")
    assert code == 0 and "s2 [2, 128, 16, 16]" in out


def test_explain_shows_stages_phases_what_runs_and_what_trains(cli):
    code, out, err = cli("explain", "specs/digits/dfad.kd")
    assert code == 0, out + err
    assert "stages and phases" in out and "each step\n" not in out
    for text in ("make", "learn", "gen (input)", "gen (input, no grad)", "teacher (frozen, grad to the input)",
                 "teacher (frozen, no grad)", "274,305 parameters", "3,778 parameters", "adam(lr=0.001)",
                 "makes the input; trains where optimized"):
        assert text in out, text
    code, out, err = cli("explain", "specs/ft.kd", "--input-shape", "2,1,8,8")
    assert code == 0, out + err
    assert "paraphrase" in out and "transfer" in out and "frozen: para" in out


def test_check_runs_a_generator_input_as_the_dry_run(cli):
    code, out, err = cli("check", "specs/digits/dafl.kd", "--student", "kdsl.zoo:digits_cnn")
    assert code == 0, out + err
    assert "KD517" not in out and "[2, 64]" in out  # the teacher's features, on generated images


def test_graph_draws_stages_and_phases_as_subgraphs(cli):
    code, out, _ = cli("graph", "specs/ft.kd")
    assert code == 0
    assert 'subgraph cluster_paraphrase["stage paraphrase (5 epochs)"]' in out
    assert 'subgraph cluster_transfer_step["phase step"]' in out
    assert '"para.reconstruct (paraphraser)"' in out and '"para.encode (paraphraser)"' in out
    code, out, _ = cli("graph", "specs/digits/dfad.kd", "--format", "dot")
    assert code == 0 and "subgraph cluster_main_learn {" in out and 'label="phase learn x5: optimize student";' in out
    assert 'model_gen -> batch_input;' in out and 'batch_input -> model_student [label="input"];' in out
