"""Tiny Hugging Face causal LMs and a tokenizer, saved with save_pretrained into a folder: what a
pretrained checkpoint on disk looks like, built here in a second (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

# a character-level vocabulary: specials, lower-case letters, digits, a few signs
SPECIALS = ["<pad>", "<eos>", "<unk>"]
CHARS = [chr(c) for c in range(97, 123)] + [str(d) for d in range(10)] + [" ", "+", "=", ":", "?", "\n"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}a:{% endif %}")


def tokenizer(chat: bool = True):
    """A character-level PreTrainedTokenizerFast (WordLevel over single characters)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def save(folder: Path, kind: str = "gpt2", layers: int = 1, width: int = 16, chat: bool = True,
         vocab_size: int = 0, seed: int = 0) -> Path:
    """A tiny ``kind`` ("gpt2" or "llama") causal LM and the tokenizer, saved into ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    tok = tokenizer(chat)
    vocab = vocab_size or len(tok)
    ids = dict(bos_token_id=1, eos_token_id=1, pad_token_id=0)
    if kind == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=width, n_head=2, vocab_size=vocab, n_positions=128, **ids)
    else:
        config = LlamaConfig(num_hidden_layers=layers, hidden_size=width, intermediate_size=2 * width,
                             num_attention_heads=2, num_key_value_heads=1, vocab_size=vocab,
                             max_position_embeddings=128, **ids)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
