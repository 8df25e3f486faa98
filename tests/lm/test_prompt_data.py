"""kdsl.data:prompts: prompt/completion and chat JSON lines laid out as prompt batches (loss on the
completion only), packing, located errors for bad lines, and a zoo GPT trained on them with the
byte tokenizer through kdsl.train (a few steps of a tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.core.diagnostics import KdslError
from kdsl.data import prompts
from kdsl.prompt_batches import PromptExample, collate

PAIRS = [("2+3=", "5"), ("10+1=", "11"), ("4+4=", "8"), ("7+2=", "9"), ("1+1=", "2"), ("6+3=", "9")]


def write_lines(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def pairs_file(tmp_path: Path, n: int = 6) -> Path:
    return write_lines(tmp_path / "train.jsonl", [{"prompt": p, "completion": c} for p, c in (PAIRS * 4)[:n]])


def test_bytes_examples_are_the_prompt_batch_layout_with_completion_only_labels(tmp_path):
    splits = prompts(str(pairs_file(tmp_path)), val_every=3)  # examples 0, 3 validate
    assert splits.train.task == "lm" and splits.num_classes == 256
    train = [PromptExample(list(p.encode()), list(c.encode())) for i, (p, c) in enumerate(PAIRS) if i % 3 != 0]
    expected = collate(train, pad_id=0)
    assert set(splits.train.fields) == set(expected)
    for name, value in expected.items():
        assert torch.equal(splits.train.fields[name], value), name
    row = splits.train[0]  # "10+1=" then "11": labels only at the completion
    assert row["labels"].tolist() == [-100] * 5 + list(b"11")
    assert len(splits.val) == 2 and splits.val[0]["prompt_ids"].tolist() == list(b"2+3=")


def test_max_length_keeps_the_prompts_end_and_drops_examples_without_a_completion(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [{"prompt": "abcdef", "completion": "xyz"},
                                              {"prompt": "q", "completion": "w"}])
    rows = prompts(str(path), val_path=str(path), max_length=5, max_prompt_length=3).train
    assert rows[0]["input_ids"].tolist() == list(b"defxy")  # the prompt's last 3, the answer's first 2
    path = write_lines(tmp_path / "u.jsonl", [{"prompt": "abcdef", "completion": ""}])
    with pytest.raises(KdslError) as info:  # bytes add no end-of-sequence token: nothing to learn
        prompts(str(path), val_path=str(path), max_length=4)
    assert info.value.errors[0].code == "KD746" and "1 without a completion token" in info.value.errors[0].message


def test_packing_concatenates_examples_and_keeps_each_ones_labels(tmp_path):
    splits = prompts(str(pairs_file(tmp_path)), val_every=3, pack=True, max_length=14)
    ids, labels = splits.train.fields["input_ids"], splits.train.fields["labels"]
    assert ids[0].tolist()[:9] == list(b"10+1=11") + list(b"4+")  # two examples in one row
    assert labels[0].tolist()[:9] == [-100] * 5 + list(b"11") + [-100] * 2
    completion = sum(len(c) for i, (_, c) in enumerate(PAIRS) if i % 3)
    assert int((labels != -100).sum()) == completion and "prompt_ids" not in splits.train.fields
    assert ids.shape[0] < 4  # fewer rows than examples


@pytest.mark.parametrize("line, code, column, words", [
    ('{"prompt": "a", "completion": }', "KD743", 31, "not valid JSON"),
    ('["prompt"]', "KD743", 1, "a JSON list, not an object"),
    ('{"prompt": "a", "answer": "b"}', "KD744", 1, "no 'completion' string (fields: answer, prompt)"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "KD744", 1, "ending with the assistant's answer"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "KD745", 1,
     "chat data, but the tokenizer has no chat template"),
])
def test_bad_lines_are_located_errors(tmp_path, line, code, column, words):
    path = write_lines(tmp_path / "bad.jsonl", [{"prompt": "x", "completion": "y"}, line])
    with pytest.raises(KdslError) as info:
        prompts(str(path))
    (d,) = info.value.errors
    assert (d.code, d.span.file, d.span.line, d.span.column) == (code, str(path), 2, column)
    assert words in d.message


def test_a_bad_line_reaches_kdsl_train_located(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [{"prompt": "x", "completion": "y"}, '{"prompt": 1}'])
    spec = kdsl.loads('student = model("kdsl.zoo:gpt", vocab_size=256, seq_len=32, d_model=16, n_layers=1)\n'
                      "record s = output of student\nloss task = model_loss(s.loss)\n")
    with pytest.raises(KdslError) as info:
        kdsl.train(spec, out=str(tmp_path / "run"), data=f'kdsl.data:prompts(path="{path.as_posix()}")',
                   inputs=["input_ids", "attention_mask", "labels"], epochs=1, threads=1)
    (d,) = info.value.errors
    assert d.code == "KD744" and (d.span.file, d.span.line) == (str(path), 2)


def test_zoo_gpt_learns_completions_from_byte_prompts_through_kdsl_train(tmp_path):
    path = pairs_file(tmp_path, n=24)
    spec = kdsl.loads('student = model("kdsl.zoo:gpt", vocab_size=256, seq_len=32, d_model=32, n_layers=1)\n'
                      "record s = output of student\nloss task = model_loss(s.loss)\n")
    result = kdsl.train(spec, out=str(tmp_path / "run"),
                        data=f'kdsl.data:prompts(path="{path.as_posix()}", val_every=4, batch_size=6)',
                        inputs=["input_ids", "attention_mask", "labels"], epochs=2, threads=1,
                        optimizer="adamw(lr=0.01)", seed=0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["task"] == "lm"
    # perplexity over completion tokens only: below the 256 of a uniform byte guess after 6 steps
    assert summary["student"]["ppl"] < 100, summary
    assert result is not None
