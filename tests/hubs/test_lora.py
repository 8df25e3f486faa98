"""LoRA students (kdsl.lora through peft): adapters on the modules named, only they train, records
keep the user's paths, the run directory holds the adapters and a merged student.pt, and explain
counts trainable and frozen parameters. Tiny GPT-2/Llama saved by path; nothing downloaded."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import kdsl  # noqa: E402
from kdsl.cli.app import app  # noqa: E402
from kdsl.core.diagnostics import KdslError  # noqa: E402

from . import tiny_hf  # noqa: E402

CHAT = [{"messages": [{"role": "user", "content": f"{a}+{b}=?"}, {"role": "assistant", "content": str(a + b)}]}
        for a in range(4) for b in range(3)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("peft")
    root = tmp_path_factory.mktemp("hf")
    return {"gpt2": tiny_hf.save(root / "gpt2"), "llama": tiny_hf.save(root / "llama", "llama", layers=2, width=32)}


def spec_text(folders, data) -> str:
    return (f'student = model("kdsl.hub:hf_pretrained", path="{folders["gpt2"].as_posix()}", '
            'lora_modules=["c_attn", "transformer.h.0.mlp.c_fc"], lora_rank=4, lora_alpha=8)\n'
            f'teacher = model("kdsl.hub:hf_pretrained", path="{folders["llama"].as_posix()}")\n'
            "record s = output of student\nrecord t = output of teacher\n"
            "record s_qkv = output of student.transformer.h.0.attn.c_attn\n"
            "record w = param student.transformer.h.0.attn.c_attn.weight\n"
            "loss kd = token_kl(s.logits, t.logits, mask=batch.attention_mask, labels=batch.labels, shift=true)\n"
            "loss task = model_loss(s.loss)\n"
            "loss qkv = hidden_mse(s_qkv, s_qkv) * 0.5\nloss norm = model_loss(w) * 0.001\n"
            f'train {{\n  data = dataset("kdsl.data:prompts", path="{data.as_posix()}", '
            f'tokenizer="{folders["gpt2"].as_posix()}", batch_size=4)\n'
            '  inputs = ["input_ids", "attention_mask", "labels"]\n  epochs = 1\n'
            '  optimizer = adamw(lr=0.01)\n}\n')


def test_lora_student_trains_only_its_adapters_and_the_run_holds_them_and_a_merged_student(folders, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    spec = tmp_path / "lora.kd"
    spec.write_text(spec_text(folders, data))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["explain", str(spec)], env={"NO_COLOR": "1", "COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "6,656 (576 trainable, 6,080 frozen)" in result.output
    # the path as written resolves (peft's wrapper is what is hooked), with the adapted output
    assert any(line.startswith("│ s_qkv ") and "[2, 16, 48]" in line for line in result.output.splitlines())
    kdsl.train(str(spec), out=str(out), threads=1)

    base = AutoModelForCausalLM.from_pretrained(folders["gpt2"])
    state = torch.load(out / "checkpoint.pt", weights_only=True)["distiller"]
    trained = {k[len("models.student."):]: v for k, v in state.items() if k.startswith("models.student.")}
    for name, value in base.state_dict().items():  # the base weights did not move
        key = name.replace("c_attn.", "c_attn.base_layer.").replace("c_fc.", "c_fc.base_layer.") \
            if (".c_attn." in name or ".c_fc." in name) else name
        assert torch.equal(trained[key], value), name
    assert trained["transformer.h.0.attn.c_attn.lora_B.default.weight"].abs().sum() > 0  # the adapters did

    merged = torch.load(out / "student.pt", weights_only=True)
    assert list(merged) == list(base.state_dict())  # the model without LoRA's keys
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folders["gpt2"]), str(out / "student_adapter"))
    ids = torch.randint(0, 45, (2, 9))
    plain = AutoModelForCausalLM.from_pretrained(folders["gpt2"])
    plain.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, adapted(ids).logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(plain(ids).logits, base(ids).logits)


def test_lora_on_a_module_the_model_lacks_is_kd547(folders):
    from kdsl.hub import hf_pretrained

    with pytest.raises(KdslError) as info:
        hf_pretrained(str(folders["llama"]), lora_modules=["c_attn"])
    (d,) = info.value.errors
    assert d.code == "KD547" and "q_proj" in d.hints[0]


def test_without_peft_lora_says_how_to_install(folders, monkeypatch):
    from kdsl.hub import hf_pretrained

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(KdslError) as info:
        hf_pretrained(str(folders["gpt2"]), lora_modules=["c_attn"])
    assert info.value.errors[0].code == "KD404" and 'kdsl[peft]' in info.value.errors[0].hints[0]
