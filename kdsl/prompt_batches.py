"""Prompt/completion batches: the one batch layout every prompt-based language-model path uses.

Readers of prompt/completion or chat data (JSON lines, synthetic tasks) turn each example into a
:class:`PromptExample` of token ids and hand a list of them to :func:`collate`; generation during
training (on-policy and sequence-level distillation) reads the prompt fields, the token losses and
the LM metrics read the full-sequence fields. One batch is a dict of int64 tensors:

* ``input_ids`` ``[B, T]``: prompt then completion, right-padded with ``pad_id``;
* ``attention_mask`` ``[B, T]``: 1 at a real token, 0 at padding;
* ``labels`` ``[B, T]``: the input ids at completion tokens and ``-100`` everywhere else (prompt and
  padding), so a loss or metric over ``labels`` covers the completion only. Targets are not
  shifted, as in :mod:`kdsl.text_data`: position ``t``'s logits predict ``labels[t + 1]``;
* ``prompt_ids`` ``[B, P]``: the prompt alone, *left*-padded, so that a model generating from it
  continues every row at the same position (what ``generate`` expects of decoder-only models);
* ``prompt_mask`` ``[B, P]``: 1 at a real prompt token.

The model inputs are ``input_ids`` and ``attention_mask`` (:data:`MODEL_INPUTS`); the prompt
fields are never passed to a model's forward (:data:`kdsl.text_data.NOT_INPUTS` lists them).
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Sequence

import torch

from kdsl.text_data import IGNORE_INDEX

__all__ = ["PromptExample", "collate", "PROMPT_FIELDS", "MODEL_INPUTS"]

MODEL_INPUTS = ("input_ids", "attention_mask")
PROMPT_FIELDS = ("prompt_ids", "prompt_mask")


class PromptExample(NamedTuple):
    """One example as token ids: the prompt (conditioning, never a target) and the completion."""

    prompt: Sequence[int]
    completion: Sequence[int]


def _padded(rows: List[Sequence[int]], pad_id: int, left: bool) -> tuple:
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, row in enumerate(rows):
        if not len(row):
            continue
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.as_tensor(list(row), dtype=torch.int64)
        mask[i, span] = 1
    return ids, mask


def collate(examples: Sequence[PromptExample], pad_id: int = 0) -> Dict[str, torch.Tensor]:
    """Stack examples into one batch of the layout above (a ``collate_fn`` for a DataLoader over
    a dataset of :class:`PromptExample`; bind ``pad_id`` with :func:`functools.partial`)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    full = [list(e.prompt) + list(e.completion) for e in examples]
    input_ids, attention_mask = _padded(full, pad_id, left=False)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for i, e in enumerate(examples):
        start, end = len(e.prompt), len(e.prompt) + len(e.completion)
        labels[i, start:end] = input_ids[i, start:end]
    prompt_ids, prompt_mask = _padded([list(e.prompt) for e in examples], pad_id, left=True)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask}
