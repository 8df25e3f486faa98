"""Pretrained Hugging Face models by path (kdsl.hub:hf_pretrained), their tokenizers, chat and
prompt data through them, and the refusals: an id that is not cached, vocabularies that differ.
Tiny GPT-2 and Llama checkpoints are written by save_pretrained into a temporary folder: nothing is
downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app
from kdsl.core.diagnostics import KdslError
from kdsl.hub import hf_pretrained, hf_tokenizer

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
    root = tmp_path_factory.mktemp("hf")
    return {"gpt2": tiny_hf.save(root / "gpt2"), "llama": tiny_hf.save(root / "llama", "llama", layers=2, width=32),
            "wide": tiny_hf.save(root / "wide", vocab_size=80), "plain": tiny_hf.save(root / "plain", chat=False),
            "root": root}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"NO_COLOR": "1", "COLUMNS": "200"})
    return result.exit_code, result.output


def test_a_saved_model_loads_by_path_in_the_dtype_asked(folders):
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(folders["llama"])
    model = hf_pretrained(str(folders["llama"]), dtype="bfloat16")
    assert type(model).__name__ == "LlamaForCausalLM" and next(model.parameters()).dtype == torch.bfloat16
    for (name, a), b in zip(saved.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a.to(torch.bfloat16), b), name
    assert hf_tokenizer(str(folders["llama"]))("ab")["input_ids"] == [3, 4]
    with pytest.raises(KdslError) as info:
        hf_pretrained(str(folders["gpt2"]), dtype="bf16")
    assert info.value.errors[0].code == "KD313" and "float32, bfloat16, float16, auto" in info.value.errors[0].message


def test_an_id_that_is_not_cached_names_it_and_the_offline_setting(folders):
    with pytest.raises(KdslError) as info:
        hf_pretrained("kdsl-tests/absent-model", revision="v1")
    (d,) = info.value.errors
    assert d.code == "KD546" and "'kdsl-tests/absent-model' at revision 'v1'" in d.message
    assert "HF_HUB_OFFLINE=1" in d.message and "hf download kdsl-tests/absent-model" in d.hints[0]
    with pytest.raises(KdslError) as info:
        hf_pretrained(str(folders["root"] / "missing"))
    assert info.value.errors[0].code == "KD546" and "no such folder" in info.value.errors[0].message
    spec = folders["root"] / "absent.kd"
    spec.write_text('student = model("kdsl.hub:hf_pretrained", path="kdsl-tests/absent-model")\n'
                    "record s = output of student\nloss task = model_loss(s.loss)\n")
    code, out = invoke("check", "--dry-run", str(spec))
    assert code == 1 and f"{spec}:1:17: error[KD546]: pretrained model 'kdsl-tests/absent-model'" in out


def test_a_cached_hub_id_loads_from_the_cache_at_its_revision(folders, tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--kdsl-tests--tiny-gpt2"
    shutil.copytree(folders["gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    model = hf_pretrained("kdsl-tests/tiny-gpt2", revision="main")
    assert type(model).__name__ == "GPT2LMHeadModel"
    assert hf_tokenizer("kdsl-tests/tiny-gpt2")("ab")["input_ids"] == [3, 4]


def spec_text(student: Path, teacher: Path, data: str = "") -> str:
    train = f"train {{\n  data = {data}\n  inputs = [\"input_ids\", \"attention_mask\", \"labels\"]\n}}\n" if data else ""
    return (f'student = model("kdsl.hub:hf_pretrained", path="{student.as_posix()}")\n'
            f'teacher = model("kdsl.hub:hf_pretrained", path="{teacher.as_posix()}", dtype="bfloat16")\n'
            "record s = output of student\nrecord t = output of teacher\n"
            "record s_h = output of student.transformer.h.0\nrecord t_h = output of teacher.model.layers.1\n"
            "connector up = linear()\n"
            "loss kd = token_kl(s.logits, t.logits, mask=batch.attention_mask, labels=batch.labels, shift=true)\n"
            "loss task = model_loss(s.loss)\n"
            "loss hid = hidden_mse(up(s_h), t_h, mask=batch.attention_mask)\n"
            + train)


def test_check_and_explain_build_from_the_config_on_meta_without_reading_weights(folders, tmp_path):
    teacher = tmp_path / "teacher"
    shutil.copytree(folders["llama"], teacher)
    (teacher / "model.safetensors").write_bytes(b"not weights")  # reading them would fail
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    spec = tmp_path / "s.kd"
    spec.write_text(spec_text(folders["gpt2"], teacher, f'dataset("kdsl.data:prompts", path="{data.as_posix()}", '
                                                        f'tokenizer="{teacher.as_posix()}", batch_size=4)'))
    data_ref = f'kdsl.data:prompts(path="{data.as_posix()}", tokenizer="{teacher.as_posix()}", val_every=2)'
    code, out = invoke("check", "--data", data_ref, str(spec))
    assert code == 0, out
    assert "[2, 12, 32]" in out and "bfloat16" in out  # the chat batch's shape, the teacher's dtype
    code, out = invoke("explain", str(spec))
    assert code == 0, out
    assert "LlamaForCausalLM" in out and "in_features=16 (inferred), out_features=32 (inferred)" in out
    assert not kdsl.check(spec)  # hf_pretrained loads weights: no KD258 for the teacher


def test_prompt_and_chat_data_train_through_kdsl_train_and_compile(folders, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    spec = tmp_path / "s.kd"
    ref = f'dataset("kdsl.data:prompts", path="{data.as_posix()}", tokenizer="{folders["gpt2"].as_posix()}", batch_size=4)'
    spec.write_text(spec_text(folders["gpt2"], folders["llama"], ref))
    code, out = invoke("train", str(spec), "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "run"))
    assert code == 0, out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "lm" and 1.0 < summary["student"]["ppl"] < 45

    from kdsl.data import prompts

    splits = prompts(str(data), tokenizer=str(folders["gpt2"]))
    row = splits.train[0]
    tok = hf_tokenizer(str(folders["gpt2"]))
    # the chat template's prompt (user turn, then "a:"), the answer and the template's newline
    text = lambda ids: "".join(tok.convert_ids_to_tokens(ids.tolist()))  # noqa: E731
    assert text(row["prompt_ids"][row["prompt_mask"].bool()]) == "u:0+0=?\na:"
    assert text(row["labels"][row["labels"] != -100]) == "0\n"
    batch = {k: torch.stack([splits.train[i][k] for i in range(3)]) for k in row}
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    student, teacher = hf_pretrained(str(folders["gpt2"])), hf_pretrained(str(folders["llama"]))
    with kdsl.compile(kdsl.load(spec), student=student, teacher=teacher, example_input=inputs,
                      example_batch=batch) as distiller:
        out = distiller.step(batch=batch, **inputs)
        out.loss.backward()
        assert torch.isfinite(out.loss) and student.transformer.wte.weight.grad.abs().sum() > 0


def test_chat_data_for_a_tokenizer_without_a_template_is_located(folders, tmp_path):
    from kdsl.data import prompts

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(CHAT[0]) + "\n")
    with pytest.raises(KdslError) as info:
        prompts(str(data), tokenizer=str(folders["plain"]))
    (d,) = info.value.errors
    assert d.code == "KD745" and (d.span.file, d.span.line) == (str(data), 1)


def test_vocabularies_that_differ_are_refused_with_both_sizes(folders, tmp_path):
    spec = tmp_path / "s.kd"
    spec.write_text(spec_text(folders["gpt2"], folders["wide"]).replace("model.layers.1", "transformer.h.0"))
    code, out = invoke("check", "--dry-run", str(spec))
    assert code == 1, out
    assert "error[KD545]" in out and "'preds_S' has 45 tokens and 'preds_T' 80" in out
    assert "student 'student' declared here" in out and "teacher 'teacher' declared here" in out
