"""Prompt/completion and chat data from JSON lines: ``kdsl.data:prompts``.

Each line of the file is one JSON object, either

* ``{"prompt": "...", "completion": "..."}``: the prompt's tokens, then the completion's (and the
  tokenizer's end-of-sequence token, so that the model learns to stop); with ``chat=true`` the
  pair is formatted as a user turn and an assistant turn through the tokenizer's chat template; or
* ``{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", ...}]}``: a
  conversation formatted with the tokenizer's chat template; its last message, the assistant's,
  is the completion and everything before it (with the template's generation prompt) the prompt.

Examples become :class:`kdsl.prompt_batches.PromptExample` and are laid out by
:func:`kdsl.prompt_batches.collate` (the one prompt batch layout): right-padded ``input_ids`` and
``attention_mask``, ``labels`` -100 outside the completion (so the loss and the LM metrics cover
completion tokens only) and the left-padded ``prompt_ids``/``prompt_mask`` that generation reads.
With ``pack=true`` short examples are concatenated into rows of at most ``max_length`` tokens
(fewer padding tokens; attention then crosses example boundaries within a row, as in TRL's
classic packing, and packed rows have no prompt fields to generate from).

Tokenizers: ``None`` reads bytes (vocabulary 256, as ``kdsl.data:text`` and ``kdsl.zoo:gpt`` do;
no chat template), or a folder or cached Hugging Face id (:func:`kdsl.hub.hf_tokenizer`, never
downloaded). Mistakes in the file are located errors: bad JSON (KD743) and a missing field
(KD744) at ``file:line:column``; chat data for a tokenizer without a chat template is KD745.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from kdsl.core.diagnostics import error
from kdsl.core.span import Span
from kdsl.prompt_batches import MODEL_INPUTS, PromptExample, collate
from kdsl.text_data import IGNORE_INDEX, TextSplits

__all__ = ["prompts", "PromptRows", "read_examples", "pack_rows"]


class PromptRows(Dataset):
    """Rows of the prompt batch layout held as ``[N, width]`` tensors (one per field); an item is
    one row of each. ``dropped`` counts examples whose completion did not fit ``max_length``."""

    task = "lm"
    model_inputs = MODEL_INPUTS

    def __init__(self, fields: Dict[str, torch.Tensor], vocab_size: int, dropped: int = 0) -> None:
        self.fields, self.vocab_size, self.dropped = fields, vocab_size, dropped

    def __len__(self) -> int:
        return self.fields["input_ids"].shape[0]

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {name: value[index] for name, value in self.fields.items()}

    def __repr__(self) -> str:
        ids = self.fields["input_ids"]
        return (f"{type(self).__name__}(rows={ids.shape[0]}, width={ids.shape[1]}, "
                f"completion_tokens={int((self.fields['labels'] != IGNORE_INDEX).sum())}, "
                f"vocab_size={self.vocab_size})")


class _Bytes:
    """UTF-8 bytes as token ids (vocabulary 256); no special tokens, no chat template."""

    vocab_size, pad_id, eos_id, chat_template = 256, 0, None, None

    def ids(self, text: str, specials: bool) -> List[int]:
        return list(text.encode("utf-8"))


class _Hub:
    """A Hugging Face tokenizer (local folder or cache)."""

    def __init__(self, path: str, revision: Optional[str]) -> None:
        from kdsl.hub import hf_tokenizer

        self.tok = hf_tokenizer(path, revision)
        self.vocab_size = len(self.tok)
        self.eos_id = self.tok.eos_token_id
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_id
        self.pad_id = 0 if pad is None else int(pad)
        self.chat_template = getattr(self.tok, "chat_template", None)

    def ids(self, text: str, specials: bool) -> List[int]:
        return list(self.tok(text, add_special_tokens=specials)["input_ids"])

    def chat(self, messages: List[dict], generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _line_span(file: str, number: int, line: str, column: int = 1) -> Span:
    end = column if column > 1 else max(2, len(line.rstrip("\r\n")) + 1)
    return Span(file=file, line=number, column=column, end_line=number, end_column=end)


def _parse(file: str, number: int, line: str) -> Dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error("KD743", f"{file}: line {number} is not valid JSON: {exc.msg}",
                    Span.point(file, number, exc.colno),
                    hint="each line is one JSON object, e.g. {\"prompt\": \"...\", \"completion\": \"...\"}") from None
    if not isinstance(obj, dict):
        raise error("KD743", f"{file}: line {number} is a JSON {type(obj).__name__}, not an object",
                    _line_span(file, number, line), hint="each line is one JSON object")
    return obj


def _messages(obj: Dict[str, Any], span: Span, chat: bool) -> Optional[List[dict]]:
    """The conversation of a line (its ``messages``, or its pair with ``chat``), or None for a
    plain prompt/completion pair."""
    if "messages" in obj:
        msgs = obj["messages"]
        ok = isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs)
        if not ok or msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise error("KD744", f"line {span.line}: 'messages' must be a list of at least two "
                        "{role, content} objects (strings) ending with the assistant's answer",
                        span, hint="the last message, the assistant's, is what the student learns")
        return msgs
    missing = [k for k in ("prompt", "completion") if not isinstance(obj.get(k), str)]
    if missing:
        have = ", ".join(sorted(map(str, obj))) or "none"
        raise error("KD744", f"line {span.line}: no {' and no '.join(repr(k) for k in missing)} "
                    f"string (fields: {have})", span,
                    hint="each line holds \"prompt\" and \"completion\" strings, or \"messages\"")
    if chat:
        return [{"role": "user", "content": obj["prompt"]},
                {"role": "assistant", "content": obj["completion"]}]
    return None


def _example(tok: Any, obj: Dict[str, Any], span: Span, chat: bool) -> PromptExample:
    msgs = _messages(obj, span, chat)
    if msgs is None:
        completion = tok.ids(obj["completion"], False)
        if tok.eos_id is not None:
            completion.append(int(tok.eos_id))
        return PromptExample(tok.ids(obj["prompt"], True), completion)
    if not tok.chat_template:
        raise error("KD745", f"line {span.line} is chat data, but the tokenizer has no chat template",
                    span, hint="use prompt/completion lines (without chat = true), or a tokenizer "
                    "that has a chat template (the byte tokenizer has none)")
    prompt_text = tok.chat(msgs[:-1], True)
    full_text = tok.chat(msgs, False)
    if not full_text.startswith(prompt_text):
        raise error("KD744", f"line {span.line}: the chat template does not write the conversation "
                    "as its prompt followed by the answer", span)
    return PromptExample(tok.ids(prompt_text, False), tok.ids(full_text[len(prompt_text):], False))


def read_examples(path: Path, tok: Any, chat: bool = False) -> List[Tuple[int, PromptExample]]:
    """Every non-blank line of the JSON-lines file as (line number, example)."""
    file = str(path)
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                out.append((number, _example(tok, _parse(file, number, line), _line_span(file, number, line), chat)))
    return out


def _fit(examples: Sequence[PromptExample], max_length: int, max_prompt: int) -> Tuple[List[PromptExample], int]:
    """Examples cut to ``max_length`` tokens: the prompt keeps its last ``max_prompt`` tokens
    (the ones nearest the answer), the completion its first; one left without a completion token
    is dropped (counted)."""
    kept = []
    for e in examples:
        prompt = list(e.prompt)[-max_prompt:] if max_prompt else []
        completion = list(e.completion)[: max_length - len(prompt)]
        if completion:
            kept.append(PromptExample(prompt, completion))
    return kept, len(examples) - len(kept)


def pack_rows(examples: Sequence[PromptExample], max_length: int, pad_id: int) -> Dict[str, torch.Tensor]:
    """Consecutive examples concatenated into rows of at most ``max_length`` tokens, each
    example's tokens and labels as :func:`kdsl.prompt_batches.collate` lays them out."""
    groups: List[List[PromptExample]] = [[]]
    for e in examples:
        size = len(e.prompt) + len(e.completion)
        if groups[-1] and sum(len(g.prompt) + len(g.completion) for g in groups[-1]) + size > max_length:
            groups.append([])
        groups[-1].append(e)
    rows = []
    for group in groups:
        batch = collate(group, pad_id)
        real = batch["attention_mask"].bool()
        rows.append((batch["input_ids"][real], batch["labels"][real]))  # row-major: in order
    width = max(ids.numel() for ids, _ in rows)
    fields = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.int64),
              "attention_mask": torch.zeros((len(rows), width), dtype=torch.int64),
              "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.int64)}
    for i, (ids, labels) in enumerate(rows):
        fields["input_ids"][i, :ids.numel()] = ids
        fields["attention_mask"][i, :ids.numel()] = 1
        fields["labels"][i, :ids.numel()] = labels
    return fields


def _rows(examples: List[PromptExample], tok: Any, max_length: int, max_prompt: int, pack: bool,
          what: str) -> PromptRows:
    kept, dropped = _fit(examples, max_length, max_prompt)
    if not kept:
        raise error("KD746", f"{what}: no example to train on ({len(examples)} read, {dropped} "
                    f"without a completion token within max_length={max_length})",
                    hint="raise max_length, or lower max_prompt_length")
    fields = pack_rows(kept, max_length, tok.pad_id) if pack else collate(kept, tok.pad_id)
    return PromptRows(fields, tok.vocab_size, dropped)


def prompts(path: str, tokenizer: Optional[str] = None, val_path: Optional[str] = None,
            val_every: int = 10, max_length: int = 256, max_prompt_length: Optional[int] = None,
            chat: bool = False, pack: bool = False, revision: Optional[str] = None) -> TextSplits:
    """Prompt/completion or chat JSON lines as prompt batches (see the module docstring).

    Args:
        path: the training file (JSON lines).
        tokenizer: None (bytes) or a tokenizer folder / cached Hugging Face id (``revision``).
        val_path: the validation file; without it every ``val_every``-th example of ``path``
            (the ``val_every // 2``-th, ...) validates.
        max_length: tokens per example (prompt and completion); ``max_prompt_length`` (default
            ``max_length - 1``) bounds the prompt, which keeps its last tokens.
        chat: format prompt/completion pairs with the tokenizer's chat template.
        pack: concatenate short examples into rows of up to ``max_length`` tokens.
    """
    for name, value, low in (("max_length", max_length, 2), ("val_every", val_every, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")
    max_prompt = max_length - 1 if max_prompt_length is None else int(max_prompt_length)
    if not 0 <= max_prompt < max_length:
        raise ValueError(f"max_prompt_length must be in [0, max_length), got {max_prompt_length!r}")
    tok = _Bytes() if tokenizer in (None, "bytes") else _Hub(tokenizer, revision)
    train_file = Path(path).expanduser()
    if not train_file.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    examples = [e for _, e in read_examples(train_file, tok, chat)]
    if val_path is not None:
        val_examples = [e for _, e in read_examples(Path(val_path).expanduser(), tok, chat)]
    else:
        is_val = [i % val_every == val_every // 2 - 1 for i in range(len(examples))]
        val_examples = [e for e, v in zip(examples, is_val) if v]
        examples = [e for e, v in zip(examples, is_val) if not v]
    train = _rows(examples, tok, max_length, max_prompt, pack, f"{path} (training)")
    val = _rows(val_examples, tok, max_length, max_prompt, pack, f"{val_path or path} (validation)")
    width = max(train.fields["input_ids"].shape[1], val.fields["input_ids"].shape[1])
    return TextSplits(train, val, tok.vocab_size, (width,))
