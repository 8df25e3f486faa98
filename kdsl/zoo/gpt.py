"""A small GPT-style causal language model for language-model distillation specs and tests.

``gpt(vocab_size, seq_len, d_model, n_layers, n_heads)`` maps token ids ``[N, T]`` (``T <=
seq_len``), with an optional ``attention_mask [N, T]`` (non-zero: a real token, zero: padding), to
next-token logits ``[N, T, vocab_size]``. Called with ``labels [N, T]`` as well (Hugging Face's
convention: the input ids, -100 where there is no target), it returns a :class:`GPTOutput`, a
dict with ``logits`` and ``loss``, the mean cross-entropy of position ``t``'s logits against
``labels[:, t + 1]`` over the labels that are not -100, as Hugging Face's causal LMs do; a spec
reads them as ``out.logits`` and ``model_loss(out)``. The architecture is GPT-2's: token and learned position
embeddings, pre-LN blocks of causal multi-head self-attention and a GELU MLP, a final LayerNorm and
an LM head (tied to the token embedding by default).

Module names, for records (``output of student.blocks.1``):

* ``embed`` (``tok``, ``pos``, ``drop``): the embedding layer; its output is TinyBERT's
  embedding-layer hidden state ``[N, T, d_model]``;
* ``blocks.i`` (``ln1``, ``attn``, ``ln2``, ``mlp``): block ``i``; its output is the hidden state
  ``[N, T, d_model]``;
* ``blocks.i.attn.scores``: the scaled scores ``Q K^T / sqrt(d_head)`` ``[N, H, T, T]``, with
  ``-10000`` at the keys a query may not see (later tokens, padding) as BERT does, which
  TinyBERT's ``attention_mse`` counts as 0 (its ``masked_below``);
* ``blocks.i.attn.probs``: the attention distributions ``softmax(scores)`` ``[N, H, T, T]``
  (each row sums to 1, zero at hidden keys);
* ``blocks.i.attn.values``: the values ``V`` ``[N, H, T, d_head]``;
* ``blocks.i.attn.value_relation``: MiniLM's value relation ``softmax(V V^T / sqrt(d_head))``
  ``[N, H, T, T]`` over the same keys as the attention. The spec language has no matrix
  product, so the model computes it for ``minilm``;
* ``ln_f``, ``head``: the final LayerNorm and the LM head.

Each of the four attention tensors is the output of an ``nn.Identity``, so a hook sees it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["GPT", "GPTOutput", "gpt"]

# What BERT adds to the scores of hidden keys: finite, so that a query row whose every key is
# hidden (a padded first token) still has a defined softmax, and far below attention_mse's
# masked_below (-100), so TinyBERT's loss counts these entries as 0.
MASKED_SCORE = -10000.0


class GPTOutput(dict):
    """The output of a call with ``labels``: ``{"logits", "loss"}``, readable as attributes too
    (``out.logits``), as Hugging Face's ``ModelOutput`` is."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]``, -100 not counted."""
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                       labels[:, 1:].reshape(-1).long(), ignore_index=-100)


class Embeddings(nn.Module):
    """Token plus learned position embeddings, then dropout."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor, positions: Optional[torch.Tensor] = None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.drop(self.tok(input_ids) + self.pos(positions))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which token t attends to tokens 0..t that are not padding."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)
        self.scores = nn.Identity()
        self.probs = nn.Identity()
        self.values = nn.Identity()
        self.value_relation = nn.Identity()

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[dict] = None) -> torch.Tensor:
        """``cache`` (generation): this layer's keys and values of the tokens before ``x``
        (``{"k", "v"}``, extended in place); ``attention_mask`` then covers those tokens too."""
        n, t, d = x.shape
        # [N, T, 3D] -> three [N, H, T, Dh]
        q, k, v = self.qkv(x).view(n, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        past = k.shape[2] - t
        scale = 1.0 / math.sqrt(q.shape[-1])
        # query i (token past + i) sees keys 0..past + i
        visible = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=past)
        if attention_mask is not None:
            visible = visible & (attention_mask[:, None, None, :] != 0)
        scores = self.scores((q @ k.transpose(-2, -1) * scale).masked_fill(~visible, MASKED_SCORE))
        probs = self.probs(scores.softmax(dim=-1))
        v = self.values(v)
        if cache is None:  # MiniLM's records read it; generation never does
            relation = (v @ v.transpose(-2, -1) * scale).masked_fill(~visible, MASKED_SCORE)
            self.value_relation(relation.softmax(dim=-1))
        out = (self.attn_drop(probs) @ v).transpose(1, 2).reshape(n, t, d)
        return self.resid_drop(self.proj(out))


class MLP(nn.Module):
    """Linear -> GELU -> linear, ``mlp_ratio`` times wider inside."""

    def __init__(self, d_model: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.act = nn.GELU()
        self.out = nn.Linear(mlp_ratio * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(self.act(self.fc(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                cache: Optional[dict] = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attention_mask, cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A GPT-2-style causal language model; see the module docstring for its module names."""

    def __init__(self, vocab_size: int = 256, seq_len: int = 64, d_model: int = 128,
                 n_layers: int = 2, n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0,
                 tie_weights: bool = True) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.embed = Embeddings(vocab_size, seq_len, d_model, dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.apply(_init_gpt2)
        if tie_weights:
            self.head.weight = self.embed.tok.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None):
        if input_ids.shape[1] > self.seq_len:
            raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, more than seq_len "
                             f"({self.seq_len})")
        # kdsl check --input-shape feeds float zeros; token ids are integers whatever their dtype
        x = self.embed(input_ids.long())
        for block in self.blocks:
            x = block(x, attention_mask)
        logits = self.head(self.ln_f(x))
        if labels is None:
            return logits
        return GPTOutput(logits=logits, loss=next_token_loss(logits, labels))

    def _logits_cached(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                       caches: list) -> torch.Tensor:
        """The last position's logits of ``input_ids`` after the tokens in ``caches``."""
        x = self.embed(input_ids, positions)
        for block, cache in zip(self.blocks, caches):
            x = block(x, mask, cache)
        return self.head(self.ln_f(x[:, -1]))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 max_new_tokens: int = 16, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, eos_token_id: Optional[int] = None, pad_token_id: int = 0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Continue left-padded prompts ``input_ids [N, P]`` by up to ``max_new_tokens`` tokens with
        a key/value cache (each step runs one token through the model), as Hugging Face's
        ``generate`` does: ``[N, P + new]``, the prompt then the new tokens, ``pad_token_id``
        after a row's ``eos_token_id``. Greedy unless ``do_sample`` (then ``temperature`` and
        nucleus ``top_p``, drawn from ``generator``). Positions count real tokens only, so a
        left-padded prompt has the positions it has unpadded (as in training)."""
        from kdsl.zoo.sampling import next_tokens

        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
        if input_ids.shape[1] + max_new_tokens > self.seq_len:
            raise ValueError(f"a prompt of {input_ids.shape[1]} tokens plus {max_new_tokens} new ones "
                             f"is more than seq_len ({self.seq_len})")
        caches = [dict() for _ in self.blocks]
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self._logits_cached(input_ids.long(), positions, mask, caches)
        out, done = [input_ids], torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            token = next_tokens(logits, do_sample, temperature, top_p, generator)
            token = token.masked_fill(done, pad_token_id)
            out.append(token[:, None])
            if eos_token_id is not None:
                done = done | (token == eos_token_id)
            if bool(done.all()) or step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # done rows: ignored
            positions = positions[:, -1:] + 1
            logits = self._logits_cached(token[:, None], positions, mask, caches)
        return torch.cat(out, dim=1)


def _init_gpt2(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases (LayerNorms keep 1 and 0)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def gpt(vocab_size: int = 256, seq_len: int = 64, d_model: int = 128, n_layers: int = 2,
        n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0,
        tie_weights: bool = True) -> GPT:
    """A small GPT-style causal LM: ``input_ids [N, T]`` (and an optional ``attention_mask [N,
    T]``) to logits ``[N, T, vocab_size]``; with ``labels``, a :class:`GPTOutput` (logits, loss). Records reach ``blocks.i`` (hidden states) and
    ``blocks.i.attn.{scores,probs,values,value_relation}``; see :mod:`kdsl.zoo.gpt`."""
    return GPT(vocab_size, seq_len, d_model, n_layers, n_heads, mlp_ratio, dropout, tie_weights)

