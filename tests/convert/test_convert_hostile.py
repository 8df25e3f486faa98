"""Malformed configs end in a coded KdslError (or a spec that passes check), never in another
exception from inside the converter; nothing they name is read beyond regular text files."""

from __future__ import annotations

import pytest

import kdsl
from kdsl.convert import convert
from kdsl.core.diagnostics import KdslError

_MODEL = ("model = dict(type='SingleTeacherDistill', architecture=dict(type='kdsl.zoo:resnet8x4'), "
          "teacher=dict(type='kdsl.zoo:resnet8x4'), {})\n")
_TD = "models: {{student_model: {{key: r}}}}\ntrain: {}\n"

MMRAZOR = [
    _MODEL.format("distiller=dict(distill_losses=[1, 2])"),
    _MODEL.format("distiller=dict(distill_losses=dict(a=1))"),
    _MODEL.format("distiller=dict(distill_losses=dict(a=dict(type='KLDivergence')), "
                  "loss_forward_mappings=dict(a=[1]))"),
    _MODEL.format("distiller=dict(distill_losses=dict(a=dict(type='KLDivergence')), "
                  "loss_forward_mappings=dict(a=dict(preds_S=dict(recorder='x'), preds_T=1)))"),
    _MODEL.format("distiller=dict(student_recorders=dict(fc='x'), distill_losses=dict("
                  "a=dict(type='KLDivergence')), loss_forward_mappings=dict(a=dict("
                  "preds_S=dict(recorder='fc'), preds_T=dict(recorder='fc'))))"),
    _MODEL.format("distiller=dict(connectors=[1], distill_losses=dict())"),
    _MODEL.format("distiller=dict(connectors=dict(c=1), distill_deliveries=[1, dict(type='X')])"),
    _MODEL.format("distiller=dict(connectors=dict(c=dict(type='ConvModuleConnector', "
                  "norm_cfg=3, act_cfg='relu')))"),
    _MODEL.format("distiller=dict(distill_losses=dict(a=dict(type='KLDivergence', "
                  "loss_weight='x')))"),
    _MODEL.format("distiller=1"),
    _MODEL.format("distiller=dict(), teacher_ckpt=3, teacher_trainable='yes'"),
    _MODEL.format("distiller=dict()") + "optim_wrapper=dict(optimizer=dict(type='SGD', lr=[1]))\n",
    _MODEL.format("distiller=dict()") + "param_scheduler=[1, dict(type='MultiStepLR', milestones=3)]\n",
    _MODEL.format("distiller=dict()") + "train_cfg=dict(max_epochs='x')\ntrain_dataloader=3\n",
    _MODEL.format("distiller=dict()") + "randomness=dict(seed='s')\n",
    "model = dict(type='DAFLDataFreeDistillation', architecture=1, teachers=[1], generator=3, "
    "student_iter='x', distiller=dict(), generator_distiller=dict())\n",
    "model = dict(type='DataFreeDistillation', teachers=dict(a=1), distiller=dict(), "
    "generator_distiller=dict())\n",
    "model = dict(type='DataFreeDistillation', generator=dict(latent_dim='x'), distiller=dict(), "
    "generator_distiller=dict(), student_iter=0)\n",
    "model = 3\n", "model = dict(type=3)\n", "x = 2 ** 100000\n", "x = 'a' * 10 ** 9\n",
    "x = [1] * 10 ** 9\n", "_base_ = 3\n", "_base_ = ['/dev/zero']\n", "x = dict(**3)\n",
    "x = (" * 300 + "1" + ")" * 300 + "\n", "def f(:\n", "\x00\n", "model = dict(type='SelfDistill'",
    "import os\nos.system('exit 1')\n",
    "x = [0, 0]\n" + "x = x + x\n" * 64,  # doubling, line after line
    "x = 'ab'\n" + "x = x + x\n" * 64, "x = 10 ** 60\n" + "x = x * x\n" * 40,
]

TORCHDISTILL = [
    "models: 1\ntrain: 2\n", "models: {student_model: 1}\ntrain: {}\n",
    "models: {student_model: {key: 3, kwargs: 4}}\ntrain: {}\n",
    _TD.format("{stage1: {num_epochs: x}}"),
    _TD.format("{stage1: {student: {frozen_modules: 3}}}"),
    _TD.format("{stage1: {optimizer: {key: SGD, kwargs: 4}, scheduler: {key: X}}, stage2: 5}"),
    _TD.format("{criterion: {key: WeightedSumLoss, kwargs: {sub_terms: {a: 1}}}}"),
    _TD.format("{criterion: {key: WeightedSumLoss, kwargs: {sub_terms: {a: {criterion: 3}}}}}"),
    _TD.format("{criterion: {key: WeightedSumLoss, kwargs: {sub_terms: {a: {criterion: "
               "{key: ATLoss, kwargs: {at_pairs: [1]}}}}}}}"),
    _TD.format("{criterion: {key: WeightedSumLoss, kwargs: {sub_terms: {a: {criterion: "
               "{key: ATLoss, kwargs: {at_pairs: {p: {student: 3}}}}}}}}}"),
    _TD.format("{criterion: {key: WeightedSumLoss, kwargs: {sub_terms: {a: {criterion: "
               "{key: CrossEntropyLoss}, criterion_wrapper: {kwargs: {input: 3}}}}}}}"),
    _TD.format("{student: {adaptations: {a: 1}}}"),
    _TD.format("{student: {adaptations: {a: {key: ConvReg, kwargs: 1}}}}"),
    _TD.format("{student: {sequential: 5}}"),
    _TD.format("{student: {auxiliary_model_wrapper: 3}}"),
    _TD.format("{student: {auxiliary_model_wrapper: {key: Connector4DAB, kwargs: {connectors: 2}}}}"),
    _TD.format("{student: {auxiliary_model_wrapper: {key: Connector4DAB, kwargs: {connectors: "
               "{c: {conv2d_kwargs: 1}}}}}}"),
    _TD.format("{teacher: {auxiliary_model_wrapper: {key: Teacher4FactorTransfer, kwargs: "
               "{paraphraser_kwargs: [1], paraphraser_ckpt: 7}}}}"),
    "- 1\n- 2\n", "a: [\n", "a: &x [*x]\n", "{[1]: 2}\n", "a: !python/object:os.system {}\n",
    "a: !!python/name:os.system ''\n", "''\n", "a: b: c\n",
]


def _attempt(text: str, fmt: str):
    try:
        spec, _ = convert(text, fmt, "hostile." + ("py" if fmt == "mmrazor" else "yaml"))
    except KdslError as exc:
        assert exc.diagnostics and all(d.code.startswith("KD") for d in exc.diagnostics)
        return exc
    kdsl.loads(spec)  # whatever converts, checks
    return spec


@pytest.mark.parametrize("text", MMRAZOR)
def test_hostile_mmrazor_configs(text):
    _attempt(text, "mmrazor")


@pytest.mark.parametrize("text", TORCHDISTILL)
def test_hostile_torchdistill_configs(text):
    pytest.importorskip("yaml")
    _attempt(text, "torchdistill")


def test_values_of_the_wrong_type_name_their_key():
    error = _attempt(TORCHDISTILL[5], "torchdistill")
    assert isinstance(error, KdslError)
    assert error.diagnostics[0].message == ("'train.stage1.optimizer.kwargs' must be a mapping, "
                                            "not a number")


def test_the_cli_refuses_binary_files_and_directories(tmp_path):
    from typer.testing import CliRunner

    from kdsl.cli.app import app

    binary = tmp_path / "model.py"
    binary.write_bytes(b"\xff\xfe\x00")
    for target in (binary, tmp_path):
        result = CliRunner().invoke(app, ["convert", str(target)])
        assert result.exit_code == 2 and "KD401" in result.output
        assert "Traceback" not in result.output
