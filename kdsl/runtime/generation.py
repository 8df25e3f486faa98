"""Generation during training: a model completes the batch's prompts, and the batch the losses
see becomes the prompts with those completions (the ``generate`` statement; on-policy and
sequence-level distillation).

A step generates with probability ``lmbda`` (GKD's fraction of on-policy batches; 1: every
step), decided by a draw that depends only on (seed, step), never on torch's generator, so a run
with ``lmbda = 0`` is the run without the statement, draw for draw. The tokens are drawn under
``torch.no_grad()`` with the model in eval mode, from torch's generator forked and seeded from
(seed, step) (the run's own random stream is left as it was). The new batch has
:mod:`kdsl.prompt_batches`' layout: ``input_ids`` the real prompt tokens then the completion
(cut after the first ``eos`` token, which it keeps), ``labels`` the completion only; generated
token ids are integers, so nothing flows back through them: what the losses differentiate is the
student's log-probabilities of them, computed by its ordinary forward on the new batch.

Hugging Face models generate with their ``generate`` (``do_sample``, ``temperature``, ``top_p``,
``max_new_tokens``; their key/value cache); ``kdsl.zoo:gpt`` with its own, which has the same
contract. A model without ``generate`` is refused when compiled (KD550).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.prompt_batches import PROMPT_FIELDS, PromptExample, collate

__all__ = ["can_generate", "complete", "Rollout", "rollout_batch"]


def can_generate(model: nn.Module) -> bool:
    """Whether ``model`` has a ``generate`` (a Hugging Face model also says it can use it)."""
    if not callable(getattr(model, "generate", None)):
        return False
    says = getattr(model, "can_generate", None)
    return bool(says()) if callable(says) else True


def _is_hugging_face(model: nn.Module) -> bool:
    return hasattr(model, "generation_config")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def complete(model: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
             temperature: float = 0.0, top_p: float = 1.0, eos: Optional[int] = None, pad: int = 0,
             seed: int = 0) -> List[List[int]]:
    """Each row's completion of the left-padded prompts: its new tokens up to and including the
    first ``eos`` (all ``max_new_tokens`` of them when none). ``temperature`` 0 is greedy."""
    if eos is None and _is_hugging_face(model):  # its own end token (a list: the first)
        found = model.generation_config.eos_token_id
        eos = found[0] if isinstance(found, (list, tuple)) and found else found
    was_training = model.training
    model.eval()
    sample = temperature > 0
    options: Dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=pad)
    if sample:
        options.update(temperature=temperature, top_p=top_p)
    if eos is not None:
        options["eos_token_id"] = eos
    if sample and _is_hugging_face(model):
        options["top_k"] = 0  # its generation config's default top-k (50) would filter too
    try:
        with _seeded(seed, prompt_ids.device):
            sequences = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **options)
    finally:
        model.train(was_training)
    new = sequences[:, prompt_ids.shape[1]:].tolist()
    out = []
    for row in new:
        cut = row.index(eos) + 1 if eos is not None and eos in row else len(row)
        out.append(row[:cut])
    return out


def rollout_batch(fields: Dict[str, torch.Tensor], completions: List[List[int]], pad: int = 0) -> Dict[str, torch.Tensor]:
    """The batch of the prompts in ``fields`` with ``completions`` (fields other than the layout's
    are kept; the layout's are replaced), on the prompts' device."""
    prompts = [ids[mask != 0].tolist() for ids, mask in zip(fields["prompt_ids"], fields["prompt_mask"])]
    made = collate([PromptExample(p, c) for p, c in zip(prompts, completions)], pad_id=pad)
    device = fields["prompt_ids"].device
    return dict(fields, **{k: v.to(device) for k, v in made.items()})


@dataclass
class Rollout:
    """What a ``generate`` statement asks for, bound to its model (see the module docstring)."""

    model_name: str
    model: nn.Module
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    lmbda: float = 1.0
    eos: Optional[int] = None
    pad: int = 0
    seed: int = 0

    def describe(self) -> str:
        """One line for ``kdsl explain``."""
        how = "greedily" if self.temperature == 0 else \
            f"sampling at temperature {self.temperature:g}" + (f", top-p {self.top_p:g}" if self.top_p < 1 else "")
        when = "every step" if self.lmbda >= 1 else f"a fraction {self.lmbda:g} of the steps (else the data's)"
        return (f"generate: {self.model_name} completes the batch's prompts ({how}, at most "
                f"{self.max_new_tokens} new tokens, no grad) in {when}; the models run on prompt + completion")

    def on_policy(self, step: int) -> bool:
        """Whether step ``step`` generates: a draw from (seed, step) alone."""
        if self.lmbda >= 1.0:
            return True
        if self.lmbda <= 0.0:
            return False
        return random.Random(self.seed * 1_000_003 + step).random() < self.lmbda

    def batch(self, fields: Optional[Dict[str, Any]], step: int) -> Optional[Dict[str, Any]]:
        """``fields`` with generated completions at an on-policy step, else ``fields`` itself."""
        if fields is None or not self.on_policy(step):
            return fields
        missing = [f for f in PROMPT_FIELDS if f not in fields]
        if missing:
            raise error("KD612", f"generate from {self.model_name} needs the batch's prompts, but the "
                        f"batches have no '{missing[0]}' field (their fields: {', '.join(fields)})",
                        hint="use prompt/completion data (kdsl.data:arith, JSON lines with prompt "
                             "and completion), whose batches carry prompt_ids and prompt_mask")
        try:
            completions = complete(self.model, fields["prompt_ids"], fields["prompt_mask"], self.max_new_tokens,
                                   self.temperature, self.top_p, self.eos, self.pad,
                                   seed=self.seed * 1_000_003 + step + 1)
        except Exception as exc:  # noqa: BLE001 - the model's own error, said in kdsl's words
            raise error("KD613", f"generate from {self.model_name} failed: {type(exc).__name__}: {exc}",
                        hint="a prompt plus max_new_tokens must fit the model's context "
                             "(kdsl.zoo:gpt's seq_len); lower max_new_tokens or use shorter prompts") from exc
        return rollout_batch(fields, completions, self.pad)
