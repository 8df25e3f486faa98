"""Choosing the next token from a model's logits: greedy, or sampled with a temperature and nucleus
(top-p) filtering (Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020),
as Hugging Face's ``generate`` does. Used by :meth:`kdsl.zoo.gpt.GPT.generate`."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["next_tokens", "top_p_filter"]


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``logits [N, V]`` with every token outside the smallest set whose probability reaches
    ``top_p`` set to ``-inf`` (the most likely token always stays)."""
    if top_p >= 1.0:
        return logits
    ordered, order = logits.sort(dim=-1, descending=True)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    # drop a token when the tokens before it already reach top_p
    drop = (cumulative - ordered.softmax(dim=-1)) >= top_p
    drop[:, 0] = False
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def next_tokens(logits: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_p: float = 1.0,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The next token of each row of ``logits [N, V]``: the argmax, or a draw from
    ``softmax(logits / temperature)`` restricted to the top-p nucleus."""
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1)
    probs = top_p_filter(logits.float() / temperature, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
