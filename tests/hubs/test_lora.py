"""LoRA students (kdsl.lora through peft): adapters on the modules named, only they train, records
keep the user's paths, the run directory holds the adapters and a merged student.pt, and explain
counts trainable and frozen parameters. Tiny GPT-2/Llama saved by path; nothing downloaded."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError
from tests.conftest import interrupted_as_epoch_starts

from . import tiny_hf

CHAT = [{"messages": [{"role": "user", "content": f"{a}+{b}=?"}, {"role": "assistant", "content": str(a + b)}]}
        for a in range(4) for b in range(3)]


@pytest.fixture(scope="module", autouse=True)
def transformers_installed():
    """The file's tests skip, saying why, where transformers is missing. Imported as the file's
    first test runs, not at import: every pytest-xdist worker collects every file (~0.5 s CPU for
    transformers), one of them runs it."""
    return pytest.importorskip("transformers")


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


def _lora_run(folders, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    spec = tmp_path / "lora.kd"
    spec.write_text(spec_text(folders, data).replace("epochs = 1", "epochs = 2"))
    return spec


def test_a_lora_run_resumes_to_the_uninterrupted_run_and_evaluates_its_merged_student(folders, tmp_path, monkeypatch):
    """--resume restores the adapters from checkpoint.pt; --eval-only reads the merged student.pt
    into the adapted student (the merged weights become the base, the adapters add nothing), so
    it scores what training's last validation scored."""
    spec = _lora_run(folders, tmp_path)
    full = kdsl.train(str(spec), out=str(tmp_path / "full"), threads=1, seed=1)
    with interrupted_as_epoch_starts(monkeypatch, 1):
        kdsl.train(str(spec), out=str(tmp_path / "cut"), threads=1, seed=1)
    kdsl.train(str(spec), out=str(tmp_path / "cut"), threads=1, seed=1, resume=True)
    for name in ("student.pt", "student_adapter/adapter_model.safetensors"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name

    evaluated = kdsl.train(str(spec), out=str(tmp_path / "full"), threads=1, eval_only=True)
    assert evaluated.eval_only and set(evaluated.final) == set(full.final) and full.final
    for key, value in full.final.items():
        assert evaluated.final[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_merged_weights_load_into_an_adapted_model_as_its_base_and_a_misfit_is_kd509(folders, tmp_path):
    """What --eval-only and a LoRA student ``from "run/student.pt"`` do: the merged file becomes
    the base weights, the adapters add nothing, so the model computes the merged model."""
    from transformers import AutoModelForCausalLM

    from kdsl.hub import hf_pretrained
    from kdsl.io.weights import load_into
    from kdsl.lora import plain_state_dict

    trained = hf_pretrained(str(folders["gpt2"]), lora_modules=["c_attn"], lora_rank=2)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_()  # adapters that change the output
    torch.save(plain_state_dict(trained), tmp_path / "student.pt")
    fresh = hf_pretrained(str(folders["gpt2"]), lora_modules=["c_attn"], lora_rank=2)
    load_into(fresh, str(tmp_path / "student.pt"), what="student")
    ids = torch.randint(0, 45, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, trained(ids).logits, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, plain_state_dict(trained)[k]) for k, v in plain_state_dict(fresh).items())

    other = AutoModelForCausalLM.from_pretrained(folders["llama"]).state_dict()
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(KdslError) as info:
        load_into(fresh, str(tmp_path / "other.pt"), what="student")
    (d,) = info.value.errors
    assert d.code == "KD509" and "transformer.h.0.attn.c_attn.weight" in " ".join(d.hints)
