"""Synthetic instruction tasks with exact answers, where what a model generates can be checked:
``kdsl.data:strings`` (string transformations) and ``kdsl.data:arith`` (arithmetic), exposed by
:mod:`kdsl.data`. :func:`strings` is described at the function.

In ``arith``, each example is an arithmetic problem as bytes: the prompt ``"47+05="`` and the completion
``"052\\n"`` (the answer, then a newline that ends it: :data:`EOS`). Every pair of operands below
``10 ** digits`` is an example, once per operator in ``ops`` (``+``, ``-``, ``*``). Numbers are
written with leading zeros at a fixed width (operands ``digits`` wide; a sum ``digits + 1``, a
difference a sign and ``digits``, a product ``2 * digits``), so each digit of the answer has one
position, which a model of 1M parameters learns to generalize to held-out problems in minutes. The split is
fixed by the problem, not by a draw: an example is held out for validation when
``(a * 7919 + b * 104729 + operator index) % val_every == 0``, so every run, seed and process holds
out the same problems (about ``1 / val_every`` of them).

Batches have the layout of :mod:`kdsl.prompt_batches` (``input_ids``, ``attention_mask``,
``labels`` -100 outside the completion, left-padded ``prompt_ids``/``prompt_mask``); the whole set
is collated once, so every item has the same width and the default collate stacks them. Token ids
are bytes (vocabulary 256, ``pad_id`` 0, which no problem's text contains). The metrics of task
``lm`` then include ``exact_match``: greedy completions of the held-out prompts that equal the
answer, newline included (:func:`kdsl.training.evaluate.evaluate`).
"""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

import torch
from torch.utils.data import Dataset

from kdsl.prompt_batches import MODEL_INPUTS, PromptExample, collate
from kdsl.text_data import BYTE_VOCAB, TextSplits

__all__ = ["arith", "strings", "PromptDataset", "problems", "EOS", "OPS", "STRING_OPS"]

EOS = ord("\n")  # ends every completion
PAD = 0
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _answer(op: str, value: int, digits: int) -> str:
    if op == "+":
        return f"{value:0{digits + 1}d}"
    if op == "-":
        return ("-" if value < 0 else "+") + f"{abs(value):0{digits}d}"
    return f"{value:0{2 * digits}d}"


class PromptDataset(Dataset):
    """Prompt/completion examples collated once: ``dataset[i]`` is row ``i`` of every field of
    :func:`kdsl.prompt_batches.collate`; ``texts`` holds each example's (prompt, completion)."""

    task = "lm"
    model_inputs = MODEL_INPUTS

    def __init__(self, fields: Dict[str, torch.Tensor], texts: List[Tuple[str, str]]) -> None:
        self.fields, self.texts = fields, texts
        self.vocab_size, self.pad_id, self.eos_id = BYTE_VOCAB, PAD, EOS

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.fields.items()}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(examples={len(self)}, width={self.fields['input_ids'].shape[1]}, "
                f"prompt_width={self.fields['prompt_ids'].shape[1]})")


def _splits(found: List[Tuple[str, str]], held: torch.Tensor) -> TextSplits:
    """Train and validation datasets of (prompt, completion) texts, ``held`` marking validation;
    collated together, so both have one width."""
    fields = collate([PromptExample(p.encode(), c.encode()) for p, c in found], pad_id=PAD)
    splits = []
    for keep in (~held, held):
        rows = keep.nonzero().squeeze(1)
        splits.append(PromptDataset({k: v[rows] for k, v in fields.items()}, [found[i] for i in rows.tolist()]))
    return TextSplits(splits[0], splits[1], BYTE_VOCAB, (fields["input_ids"].shape[1],))


def problems(digits: int, ops: str) -> List[Tuple[int, int, int, str, str]]:
    """Every problem: (a, b, operator index, prompt, completion), in a fixed order."""
    out = []
    for k, op in enumerate(ops):
        for a in range(10 ** digits):
            for b in range(10 ** digits):
                out.append((a, b, k, f"{a:0{digits}d}{op}{b:0{digits}d}=",
                            _answer(op, OPS[op](a, b), digits) + "\n"))
    return out


def arith(digits: int = 2, ops: str = "+", val_every: int = 10) -> TextSplits:
    """Arithmetic problems on operands below ``10 ** digits`` (see the module docstring)."""
    if not 1 <= digits <= 3:
        raise ValueError(f"digits must be 1, 2 or 3, got {digits}")
    if not ops or any(op not in OPS for op in ops) or len(set(ops)) != len(ops):
        raise ValueError(f"ops must be distinct operators among {''.join(OPS)}, got {ops!r}")
    if val_every < 2:
        raise ValueError(f"val_every must be at least 2, got {val_every}")
    found = problems(digits, ops)
    held = torch.tensor([(a * 7919 + b * 104729 + k) % val_every == 0 for a, b, k, _, _ in found])
    return _splits([(p, c) for *_, p, c in found], held)


STRING_OPS = {"reverse": lambda w: w[::-1], "sort": lambda w: "".join(sorted(w)),
              "upper": lambda w: w.upper()}


def strings(op: str = "reverse", length: int = 5, train_size: int = 20000, val_size: int = 1000,
            alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> TextSplits:
    """String transformations: the prompt ``"hello="``, the completion ``"olleh\\n"`` (``op``, the
    one transformation of the set, is ``reverse``, ``sort`` or ``upper``). Words of ``length`` letters of ``alphabet``,
    drawn once from a generator of fixed seed (never the run's), all distinct: the first
    ``val_size`` are the validation set, the next ``train_size`` the training set, so no held-out
    word is ever trained on, whatever the run's seed."""
    if op not in STRING_OPS:
        raise ValueError(f"op must be one of {', '.join(STRING_OPS)}, got {op!r}")
    if length < 1 or len(alphabet) < 2 or len(alphabet) ** length < 2 * (train_size + val_size):
        raise ValueError(f"{len(alphabet)} letters make too few words of length {length} for "
                         f"{train_size} + {val_size} distinct examples")
    draw, words, seen = random.Random(20240601), [], set()
    while len(words) < train_size + val_size:
        w = "".join(draw.choice(alphabet) for _ in range(length))
        if w not in seen:
            seen.add(w)
            words.append(w)
    found = [(f"{w}=", STRING_OPS[op](w) + "\n") for w in words]
    held = torch.arange(len(found)) < val_size
    return _splits(found, held)
