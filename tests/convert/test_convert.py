"""kdsl convert: MMRazor and torchdistill configs written here (never the projects' own) become
specs that pass `kdsl check`, with every difference reported and located; bad configs give
located errors; nothing of a config is executed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import kdsl
from kdsl.convert import convert
from kdsl.core.diagnostics import KdslError

CONFIGS = Path(__file__).parent / "configs"


def convert_file(name: str, fmt=None):
    path = CONFIGS / name
    return convert(path.read_text(encoding="utf-8"), fmt, str(path))


def statements(spec_text: str):
    """The spec's code lines, the alignment `kdsl fmt` adds (``record s   = ...``) taken out."""
    return [re.sub(r"(?<=\S) {2,}", " ", line) for line in spec_text.splitlines()
            if line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("name", ["kd_logits.py", "all_parts.py", "delete_child.py", "dafl.py",
                                  "data_free_iters.py", "readme_mmrazor.py", "kd_cifar.yaml",
                                  "stages.yaml", "hint_stages.yaml", "ofd.py",
                                  "aux_wrappers.yaml"])
def test_converted_specs_pass_check(name):
    text, _ = convert_file(name)
    spec = kdsl.loads(text, f"{name}.kd")
    assert not [w for w in spec.warnings if w.code.startswith("KD2") and w.code != "KD258"]


def test_bases_merge_and_references_are_evaluated_without_running_anything():
    text, report = convert_file("kd_logits.py")
    lines = statements(text)
    # tau = 2 * 2 (arithmetic), lr = {{_base_.base_lr}} * 2 merged into the base's optimizer dict
    assert "loss loss_kl = kl_div(s_fc, t_fc, tau=4) * 5" in lines
    assert "  optimizer = sgd(lr=0.1, momentum=0.9, weight_decay=0.0005)" in lines
    assert "  lr_schedule = step(milestones=[150, 180, 210], gamma=0.1)" in lines
    assert 'teacher = model("kdsl.zoo:resnet32x4") from "checkpoints/resnet32x4.pth"' in lines
    assert not report.exact
    # each finding is located and written as a comment in the spec
    for finding in report.findings:
        assert finding.where is not None and finding.where[0].endswith("kd_logits.py")
        assert finding.comment() in text


def test_delete_replaces_the_base_dict_and_warmup_joins_the_schedule():
    text, report = convert_file("delete_child.py")
    lines = statements(text)
    assert "  optimizer = adam(lr=0.001)" in lines  # no momentum/weight_decay from the base
    assert "  lr_schedule = cosine(min_lr=1e-05, warmup_epochs=5)" in lines
    assert report.exact


def test_every_recorder_kind_connector_and_delivery():
    text, report = convert_file("all_parts.py")
    lines = statements(text)
    for expected in [
        "record s_feat = output of student.layer3",
        "record s_pre = input of student.layer3.0.relu call 1",
        'record s_head = output of method "kdsl.zoo.resnet:ResNet.forward" in student',
        'record s_head_in = input of method "kdsl.zoo.resnet:ResNet.forward" in student',
        'record s_fn = output of function "torch.nn.functional:relu" in student',
        'record s_fn_in = input of function "torch.nn.functional:relu" in student',
        "record s_w = param student.conv1.weight",
        'deliver output of method "kdsl.zoo.resnet:ResNet.forward" from teacher to student keep 1',
        'connector align = conv_bn(in_channels=256, out_channels=256, norm="bn", act="none")',
        "loss loss_at = at(align(s_feat), t_feat) * 1000",
        "loss loss_l2 = l2(s_pre, s_head[1], normalize=false)",
        "loss loss_ab = ab(s_fn, s_fn_in, margin=0.5) * 0.003",
    ]:
        assert expected in lines, expected
    assert report.exact


def test_dafl_becomes_generator_input_and_two_phases():
    text, report = convert_file("dafl.py")
    spec = kdsl.loads(text)
    assert [(p.name, p.repeat) for p in spec.phases] == [("generate", 1), ("learn", 1)]
    lines = statements(text)
    assert "input = gen(noise(256))" in lines
    assert "  optimize gen with adam(lr=0.001)" in lines
    assert "  steps_per_epoch = 2000" in lines
    # DAFL's single-step update of both models is the one difference the phases make
    assert any(f.key == "model.type" and "one generated batch" in f.reason for f in report.findings)


def test_data_free_distillation_with_iterations_and_per_optimizer_schedules():
    text, report = convert_file("data_free_iters.py")
    spec = kdsl.loads(text)
    assert [(p.name, p.repeat) for p in spec.phases] == [("generate", 1), ("learn", 5)]
    lines = statements(text)
    for expected in [
        'teacher wrn = model("kdsl.zoo:wrn_40_2") from "wrn.pth"',
        "record s_g2 = output of student.block2 call 1",
        "record wrn_g2 = output of wrn.block2 call 1",
        '  loss loss_adv = kl_div(s_logits, wrn_logits, reduction="mean", detach_teacher=false) * -2.0',
        "  loss loss_at = at(s_g2, wrn_g2) * 250.0",
        # 3600 iterations validated every 40: 90 epochs of 40 steps, milestones in epochs
        "  epochs = 90", "  steps_per_epoch = 40", "  lr_schedule = step(milestones=[30, 60], gamma=0.1)",
    ]:
        assert expected in lines, expected
    assert {(f.key, f.status) for f in report.findings} == {
        ("model.generator", "approximated"), ("param_scheduler.generator", "dropped")}


def test_torchdistill_weighted_sum_loss_and_training():
    text, report = convert_file("kd_cifar.yaml")
    lines = statements(text)
    assert "loss ce = cross_entropy(s_logits, batch.target, reduction=\"mean\") * 0.5" in lines
    assert ('loss kd = kd(s_logits, t_logits, batch.target, tau=4.0, alpha=0.0, '
            'reduction="batchmean", form="torchdistill") * 0.5') in lines
    assert "  batch_size = 128" in lines and "  epochs = 182" in lines
    assert {f.key for f in report.findings} == {"models.student_model", "models.teacher_model",
                                                 "datasets"}


def test_torchdistill_stages_and_frozen_modules():
    text, _ = convert_file("stages.yaml")
    spec = kdsl.loads(text)
    assert [(s.name, s.epochs) for s in spec.stages] == [("stage1", 10), ("stage2", 20)]
    assert "  freeze student.layer1" in statements(text)
    lines = statements(text)
    assert "  loss hint = mse(s_layer2, t_layer2)" in lines
    assert "  optimize student with adam(lr=0.001)" in lines  # stage2's own optimizer
    assert "  epochs = 30" in lines  # the stages' sum
    assert "  optimizer = sgd(lr=0.05, momentum=0.9, weight_decay=0.0)" in lines


def test_torchdistill_adaptations_and_sequential_become_a_connector_and_optimize():
    text, report = convert_file("hint_stages.yaml")
    spec = kdsl.loads(text)
    assert [(s.name, s.epochs) for s in spec.stages] == [("stage1", 4), ("stage2", 6)]
    lines = statements(text)
    for expected in [
        'student = model("kdsl.zoo:wrn_16_2", num_classes=10)',
        'teacher = model("kdsl.zoo:wrn_40_2", num_classes=10) from "ckpt/wrn40_2.pt"',
        'connector hint = conv_bn(in_channels=32, out_channels=64, kernel_size=1, stride=1, '
        'padding=0, bias=true, act="none")',
        '  loss hint_2 = mse(hint(s_block2), t_block2, reduction="mean")',
        "  optimize student.conv1, student.block1, student.block2, hint",
        "  optimize student with sgd(lr=0.01, momentum=0.9, weight_decay=0.0005, nesterov=true)",
        "  epochs = 10", "  batch_size = 96",
    ]:
        assert expected in lines, expected
    assert ("test, train.log_freq", "dropped") in {(f.key, f.status) for f in report.findings}


def test_torchdistill_auxiliary_model_wrappers_become_the_connectors_their_paths_name():
    text, report = convert_file("aux_wrappers.yaml")
    lines = statements(text)
    for expected in [
        "connector translator = translator(in_channels=512, factor_channels=256, use_bn=true)",
        'connector paraphraser = paraphraser(in_channels=512, rate=0.5, use_bn=true) '
        'from "ckpt/paraphraser.pt" frozen',  # distilling: the pretrained paraphraser, fixed
        'connector connector1 = conv_bn(in_channels=64, out_channels=256, kernel_size=1, stride=1, '
        'padding=0, norm="bn", bias=false)',
        'connector connector2 = conv_bn(in_channels=128, out_channels=512, kernel_size=1, '
        'stride=1, padding=0, norm="none", bias=false)',  # no bn2d_kwargs: no batch norm
        '  loss factor = ft(translator(s_layer4), paraphraser(t_layer4), p=1, reduction="mean") '
        '* 1000.0',
        '  loss boundary = mse(connector1(s_layer1), t_layer1, reduction="mean")',
        '  loss boundary2 = mse(connector2(s_layer2), t_layer2)',
    ]:
        assert expected in lines, expected
    assert {(f.key, f.status) for f in report.findings} == {
        ("models.student_model", "dropped"), ("models.teacher_model", "dropped"),
        ("train.stage3.student.auxiliary_model_wrapper", "dropped")}  # VID: no exact connector
    assert "VID's regressors" in report.render()


_CRD_WRAPPERS = """
models:
  student_model: {key: 'kdsl.zoo:resnet8x4'}
  teacher_model: {key: 'kdsl.zoo:resnet32x4'}
train:
  teacher:
    auxiliary_model_wrapper:
      key: 'Teacher4FactorTransfer'
      kwargs: {input_module_path: 'layer3', uses_decoder: True, paraphraser_ckpt: 'p.pt',
               minimal: {key: 'kdsl.zoo:resnet8x4'},
               paraphraser_kwargs: {k: 0.25, num_input_channels: 256, kernel_size: 5, padding: 2}}
  student:
    auxiliary_model_wrapper:
      key: 'Linear4CRD'
      kwargs: {input_module_path: 'avgpool', linear_kwargs: {in_features: 256, out_features: 128}}
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        project:
          criterion: {key: 'MSELoss', kwargs: {}}
          criterion_wrapper:
            key: 'SimpleLossWrapper'
            kwargs:
              input: {is_from_teacher: False, module_path: 'normalizer', io: 'output'}
              target: {is_from_teacher: False, module_path: 'avgpool', io: 'output'}
        factor:
          criterion: {key: 'FTLoss', kwargs: {p: 2, reduction: 'sum'}}
"""


def test_torchdistill_crd_and_ft_wrappers_and_what_they_change():
    text, report = convert(_CRD_WRAPPERS, "torchdistill")
    lines = statements(text)
    for expected in [
        "connector embed = crd_embed(in_features=256, feat_dim=128)",
        # pretraining (uses_decoder): the checkpoint is where the paraphraser starts, not frozen
        'connector paraphraser = paraphraser(in_channels=256, rate=0.25, use_bn=true) '
        'from "p.pt"',
        "loss project = mse(embed(s_avgpool), s_avgpool)",
        # torchdistill's p=2 FTLoss: each sample's 2-norm; no translator wrapper: a plain record
        'loss factor = ft(s_translator, paraphraser(t_layer3), p=2, reduction="sum", '
        'distance="norm")',
    ]:
        assert expected in lines, expected
    notes = [f.reason for f in report.findings
             if f.key == "train.teacher.auxiliary_model_wrapper"]
    assert any("kernel_size=5, padding=2" in n for n in notes), notes
    assert any("uses_decoder" in n for n in notes), notes
    assert any("minimal" in n for n in notes), notes


def test_ofd_margins_come_from_the_recorded_teacher_batchnorm():
    text, report = convert_file("ofd.py")
    lines = statements(text)
    for expected in [
        'student = model("kdsl.zoo:wrn_16_2")',  # from the cfg_path's file name
        'connector s_adapt = conv_bn(in_channels=128, out_channels=128, norm="bn", act="none")',
        "connector t_margin = ofd_margin(bn=teacher.block3.bn)",
        "loss loss_ofd = ofd(s_adapt(s_pre), t_margin(t_pre)) * 0.5",
        "freeze student",  # student_trainable=False
    ]:
        assert expected in lines, expected
    assert {f.key for f in report.findings} == {"model.architecture", "model.teacher"}


def test_self_distillation_reads_its_teacher_records_from_the_student():
    config = ("model = dict(type='SelfDistill', architecture=dict(type='kdsl.zoo:resnet8x4'),\n"
              "    calculate_student_loss=False, distiller=dict(\n"
              "        student_recorders=dict(s=dict(type='ModuleOutputs', source='layer1')),\n"
              "        teacher_recorders=dict(t=dict(type='ModuleOutputs', source='layer3')),\n"
              "        distill_losses=dict(loss_l2=dict(type='L2Loss')),\n"
              "        loss_forward_mappings=dict(loss_l2=dict(\n"
              "            s_feature=dict(recorder='s', from_student=True),\n"
              "            t_feature=dict(recorder='t', from_student=False)))))\n")
    text, report = convert(config, "mmrazor", "self.py")
    lines = statements(text)
    assert "record s_t = output of student.layer3" in lines
    assert "loss loss_l2 = l2(s_s, s_t)" in lines
    assert report.exact and "an exact translation" in text
    kdsl.loads(text)


def test_keys_the_converter_does_not_translate_are_reported():
    config = ("model = dict(type='SingleTeacherDistill', architecture=dict(type='kdsl.zoo:wrn_16_2'),\n"
              "    teacher=dict(type='kdsl.zoo:wrn_40_2'), data_preprocessor=dict(type='X'),\n"
              "    calculate_student_loss=False,\n"
              "    distiller=dict(type='ConfigurableDistiller', mystery=1))\n"
              "default_hooks = dict()\n")
    text, report = convert(config, "mmrazor", "keys.py")
    found = {(f.key, f.where[1]) for f in report.findings}
    assert found == {("model.data_preprocessor", 2), ("model.distiller.mystery", 4),
                     ("default_hooks", 5)}
    assert "# dropped: model.distiller.mystery (keys.py:4): the converter does not translate it" in text


def test_known_tags_are_read_as_data_and_unknown_tags_rejected():
    from kdsl.convert.yamlconfig import Tagged, load_yaml

    data = load_yaml("a: !import_call {key: os.system, init: {args: [rm]}}\n"
                     "b: !join [x, '/', y]\n", "t.yaml")
    assert data["a"] == Tagged("!import_call", {"key": "os.system", "init": {"args": ["rm"]}})
    assert data["b"] == "x/y"
    with pytest.raises(KdslError) as info:
        load_yaml("a: 1\nb: !python/name:os.system\n", "t.yaml")
    assert info.value.diagnostics[0].code == "KD763" and info.value.diagnostics[0].span.line == 2


def test_unsupported_statements_are_reported_and_never_executed(tmp_path):
    marker = tmp_path / "executed"
    config = (f"import os\nos.system('touch {marker}')\nlr = open('{marker}', 'w')\n"
              "model = dict(type='SelfDistill', architecture=dict(type='kdsl.zoo:resnet8x4'),\n"
              "    calculate_student_loss=False, distiller=dict(distill_losses=dict()))\n")
    text, report = convert(config, "mmrazor", str(tmp_path / "c.py"))
    assert not marker.exists()
    dropped = {(f.key, f.where[1]) for f in report.findings}
    assert ("import os", 1) in dropped and ("lr", 3) in dropped
    assert "a call to 'open'" in str(report.findings[-1])


@pytest.mark.parametrize("name,code,line", [
    ("cycle_a.py", "KD762", 2),
    ("missing_base.py", "KD761", 3),
    ("bad_tag.yaml", "KD763", 4),
    ("unknown_algorithm.py", "KD764", 2),
    ("syntax_error.py", "KD760", 2),
])
def test_bad_configs_are_located_errors(name, code, line):
    with pytest.raises(KdslError) as info:
        convert_file(name)
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.code == code
    assert diagnostic.span is not None and diagnostic.span.line == line


@pytest.mark.parametrize("config,message,line", [
    ("model = dict(type='SelfDistill',\n    distiller=dict(distill_losses=[1]))\n",
     "'model.distiller.distill_losses' must be a mapping, not a list", 2),
    ("model = dict(type='SelfDistill', distiller=dict(\n"
     "    student_recorders=dict(fc='head.fc'), distill_losses=dict(kl=dict(type='KLDivergence')),\n"
     "    loss_forward_mappings=dict(kl=dict(preds_S=dict(recorder='fc'), preds_T=dict(recorder='fc')))))\n",
     "'model.distiller.student_recorders.fc' must be a mapping, not a string", 2),
    ("model = dict(type='SelfDistill', distiller=dict())\ntrain_cfg = dict(max_epochs='many')\n",
     "'train_cfg.max_epochs' must be an integer, not a string", 2),
])
def test_values_of_the_wrong_type_are_located_errors(config, message, line):
    with pytest.raises(KdslError) as info:
        convert(config, "mmrazor", "types.py")
    diagnostic = info.value.diagnostics[0]
    assert (diagnostic.code, diagnostic.message, diagnostic.span.line) == ("KD760", message, line)


def test_a_spec_that_would_not_check_is_an_error_with_its_diagnostics():
    config = ("model = dict(type='SelfDistill', architecture=dict(type='kdsl.zoo:resnet8x4'),\n"
              "    calculate_student_loss=False, distiller=dict())\n"
              "optim_wrapper = dict(optimizer=dict(type='SGD', lr=[1]))\n")
    with pytest.raises(KdslError) as info:
        convert(config, "mmrazor", "lr.py")
    codes = [d.code for d in info.value.diagnostics]
    assert codes == ["KD767", "KD309"]
    assert "'lr' of 'sgd' must be float" in info.value.diagnostics[0].message


def test_output_is_in_the_canonical_layout_and_package_bases_are_reported():
    from kdsl.lang.fmt import format_text

    text, report = convert_file("readme_mmrazor.py")
    # the README's example: three keys approximated, one dropped
    assert report.render().endswith("converted from mmrazor: 3 approximated, 1 dropped")
    assert format_text(text).text == text  # what `kdsl fmt` would write
    (base,) = [f for f in report.findings if f.key == "_base_"]
    assert base.status == "dropped" and base.where[1] == 2 and "another package" in base.reason
    assert base.comment() in text


@pytest.mark.parametrize("text,path,fmt", [
    ("model = dict()", "a.py", "mmrazor"), ("models: {}", "a.yaml", "torchdistill"),
    ("models: {}", "a.yml", "torchdistill"), ("_base_ = ['x.py']", None, "mmrazor"),
    ("models:\n  student_model: {}\n", None, "torchdistill"),
])
def test_the_format_is_told_from_the_file(text, path, fmt):
    from kdsl.convert import detect_format

    assert detect_format(text, path) == fmt


def test_a_scheduler_stepped_per_iteration_is_reported():
    config = ("models: {student_model: {key: 'kdsl.zoo:resnet8x4'}, teacher_model: {key: 'kdsl.zoo:resnet32x4'}}\n"
              "train:\n  num_epochs: 10\n"
              "  scheduler: {key: 'CosineAnnealingLR', kwargs: {T_max: 10}, scheduling_step: 1}\n")
    text, report = convert(config, "torchdistill", "sched.yaml")
    assert "  lr_schedule = cosine()" in statements(text)
    (finding,) = [f for f in report.findings if "scheduler" in f.key]
    assert (finding.key, finding.status, finding.where[1]) == ("train.scheduler.scheduling_step",
                                                               "approximated", 4)
    assert "every iteration" in finding.reason


def test_torchdistill_without_pyyaml_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError
    with pytest.raises(KdslError) as info:
        convert_file("kd_cifar.yaml")
    diagnostic = info.value.diagnostics[0]
    assert diagnostic.code == "KD766" and "pip install 'kdsl[convert]'" in diagnostic.hints[0]


def test_fbkd_connectors_and_loss_keep_their_options():
    config = ("model = dict(type='SingleTeacherDistill', architecture=dict(type='kdsl.zoo:resnet8x4'),\n"
              "    teacher=dict(type='kdsl.zoo:resnet32x4'), teacher_ckpt='t.pt',\n"
              "    calculate_student_loss=False, distiller=dict(\n"
              "        student_recorders=dict(f=dict(type='ModuleOutputs', source='layer3')),\n"
              "        teacher_recorders=dict(f=dict(type='ModuleOutputs', source='layer3')),\n"
              "        connectors=dict(\n"
              "            s=dict(type='FBKDStudentConnector', in_channels=256, spatial_T=0.5),\n"
              "            t=dict(type='FBKDTeacherConnector', in_channels=256, channel_T=0.25)),\n"
              "        distill_losses=dict(fbkd=dict(type='FBKDLoss', nonloacl_weight=7e-5)),\n"
              "        loss_forward_mappings=dict(fbkd=dict(\n"
              "            s_input=dict(from_student=True, recorder='f', connector='s'),\n"
              "            t_input=dict(from_student=False, recorder='f', connector='t')))))\n")
    text, report = convert(config, "mmrazor", "fbkd.py")
    lines = statements(text)
    assert "connector s = fbkd_student(in_channels=256, spatial_tau=0.5)" in lines
    assert "connector t = fbkd_teacher(in_channels=256, channel_tau=0.25)" in lines
    assert "loss fbkd = fbkd(s(s_f), t(t_f), nonlocal_weight=7e-05)" in lines
    assert {f.key for f in report.findings} == {"model.distiller.connectors.s",
                                                 "model.distiller.connectors.t"}
