"""Model hubs as references: Hugging Face transformers built from an inline config (kdsl.hub),
torchvision and timm factories. Each test runs where its package is installed; kdsl never imports
them unless a reference names them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "220"})
    return result.exit_code, result.output


def test_importing_kdsl_imports_no_hub():
    code = ("import sys, kdsl, kdsl.hub, kdsl.lora, kdsl.data, kdsl.lang.refs; "
            "print(sorted(m for m in ('transformers', 'timm', 'torchvision', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "[]", out.stderr


def test_hub_without_transformers_says_how_to_install(monkeypatch):
    from kdsl import hub

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(KdslError) as info:
        hub.hf_causal_lm(n_layer=1)
    d = info.value.diagnostics[0]
    assert d.code == "KD404" and d.hints == ("pip install transformers (CPU is enough; nothing is downloaded)",)


GPT2 = ('student = model("kdsl.hub:hf_causal_lm", config="GPT2Config", n_layer=2, n_embd=32, n_head=2, '
        'vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)\n'
        'teacher = model("kdsl.hub:hf_causal_lm", config="GPT2Config", n_layer=3, n_embd=48, n_head=2, '
        'vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0) from "teacher.pt"\n'
        "record s = output of student\nrecord t = output of teacher\n"
        "record s_attn = output of student.transformer.h.0.attn\n"
        "record t_attn = output of teacher.transformer.h.2.attn\n"
        "record s_h = output of student.transformer.h.1\n"
        "record t_h = output of teacher.transformer.h.2\n"
        "connector w = linear()\n"
        "loss kd = token_kl(s.logits, t.logits, mask=batch.attention_mask, labels=batch.labels, shift=true)\n"
        "loss attn = hidden_mse(w(s_attn[0]), t_attn[0], mask=batch.attention_mask)\n"
        "loss hid = hidden_mse(w(s_h), t_h, mask=batch.attention_mask)\n")


def test_transformers_records_in_check_and_explain(tmp_path):
    pytest.importorskip("transformers")
    spec = tmp_path / "gpt2.kd"
    spec.write_text(GPT2)
    code, out = invoke("check", "--dry-run", str(spec))
    assert code == 0, out
    # shapes seen by the dry run on token ids (32 positions: 16 tokens, kdsl's example length)
    assert "[2, 16, 32]" in out and "[2, 16, 48]" in out
    assert "KD530" in out  # teacher.pt is looked for, not read
    code, out = invoke("explain", str(spec))
    assert code == 0, out
    assert "student.transformer.h.0.attn" in out
    assert "in_features=32 (inferred), out_features=48 (inferred)" in out
    assert "preds_S = s.logits  [2, 16, 64] float32" in out


def test_transformers_model_trains_a_step_through_the_distiller():
    """A compiled distiller over two transformers models: one step gives a finite loss whose
    gradient reaches the student, and closing leaves the models without hooks."""
    pytest.importorskip("transformers")
    import torch

    import kdsl
    from kdsl.hub import hf_causal_lm

    spec = kdsl.loads("student = model(\"kdsl.hub:hf_causal_lm\")\nteacher = model(\"kdsl.hub:hf_causal_lm\")\n"
                      "record s = output of student\nrecord t = output of teacher\n"
                      "record s_h = output of student.transformer.h.0\nrecord t_h = output of teacher.transformer.h.0\n"
                      "loss kd = token_kl(s.logits, t.logits, shift=true)\nloss h = hidden_mse(s_h, t_h)\n")
    torch.manual_seed(0)
    student = hf_causal_lm(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16, bos_token_id=0,
                           eos_token_id=0)
    teacher = hf_causal_lm(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16, bos_token_id=0,
                           eos_token_id=0)
    ids = torch.randint(0, 32, (2, 8))
    with kdsl.compile(spec, example_input=ids, student=student, teacher=teacher) as distiller:
        out = distiller.step(ids)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert student.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0
    assert not any(m._forward_hooks for m in student.modules())


def test_hf_model_names_a_config_class_it_cannot_find():
    pytest.importorskip("transformers")
    from kdsl.hub import hf_model

    with pytest.raises(KdslError) as info:
        hf_model(config="GPT2Confg")
    assert info.value.diagnostics[0].code == "KD508"
    assert "did you mean 'GPT2Config'?" in info.value.diagnostics[0].hints


def test_hf_model_builds_an_encoder_without_download():
    pytest.importorskip("transformers")
    from kdsl.hub import hf_model

    bert = hf_model(config="BertConfig", model="AutoModelForMaskedLM", num_hidden_layers=1,
                    hidden_size=16, num_attention_heads=2, intermediate_size=32, vocab_size=40)
    assert type(bert).__name__ == "BertForMaskedLM" and len(bert.bert.encoder.layer) == 1


def test_torchvision_reference():
    pytest.importorskip("torchvision")
    code, out = invoke("check", "--student", "torchvision.models:resnet18(weights=none, num_classes=10)",
                       "--input-shape", "2,3,32,32", str(ROOT / "specs" / "digits" / "baseline.kd"))
    assert code == 0, out
    assert "[2, 10]" in out


def test_timm_reference(tmp_path):
    pytest.importorskip("timm")
    spec = tmp_path / "timm.kd"
    spec.write_text('student = model("timm:create_model", "resnet18", pretrained=false, num_classes=10)\n'
                    "record s = output of student\nloss task = cross_entropy(s, batch.target)\n")
    code, out = invoke("check", "--input-shape", "2,3,32,32", str(spec))
    assert code == 0, out
    assert "[2, 10]" in out
