"""Tests for the zoo's small GPT: shapes, causality, padding, the parameter count in closed form,
and the attention tensors that language-model distillation records."""

from __future__ import annotations

import pytest
import torch

from kdsl.zoo import MODELS, gpt


def ids(n: int = 2, t: int = 10, vocab: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(seed))


def outputs(model: torch.nn.Module, names, *args):
    """Forward ``args`` and return the outputs of the modules ``names``, captured by hooks."""
    seen, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o)))
    try:
        with torch.no_grad():
            logits = model(*args)
    finally:
        for h in handles:
            h.remove()
    return logits, seen


def expected_count(vocab, seq_len, d, layers, r, tied):
    """Counted by hand: embeddings (V + T) D; per block two LayerNorms (4D), qkv (3D^2 + 3D),
    the output projection (D^2 + D), the MLP (r D^2 + r D) + (r D^2 + D); the final LN 2D; an
    untied head V D (no bias)."""
    block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (r * d * d + r * d) + (r * d * d + d)
    return (vocab + seq_len) * d + layers * block + 2 * d + (0 if tied else vocab * d)


def test_registered_in_the_zoo():
    assert MODELS["gpt"] is gpt


@pytest.mark.parametrize("kwargs", [{}, dict(vocab_size=128, seq_len=32, d_model=64, n_layers=3),
                                    dict(d_model=96, n_heads=3, mlp_ratio=2, tie_weights=False)])
def test_parameter_count(kwargs):
    model = gpt(**kwargs)
    full = dict(vocab_size=256, seq_len=64, d_model=128, n_layers=2, mlp_ratio=4, tie_weights=True)
    full.update({k: v for k, v in kwargs.items() if k != "n_heads"})
    got = sum(p.numel() for p in model.parameters())
    assert got == expected_count(full["vocab_size"], full["seq_len"], full["d_model"],
                                 full["n_layers"], full["mlp_ratio"], full["tie_weights"])


def test_default_count_is_the_quoted_number():
    # (256 + 64) * 128 + 2 * (12 * 128^2 + 13 * 128) + 2 * 128 = 40960 + 396544 + 256
    assert sum(p.numel() for p in gpt().parameters()) == 437_760


def test_head_is_tied_to_the_token_embedding_by_default():
    model = gpt()
    assert model.head.weight is model.embed.tok.weight
    untied = gpt(tie_weights=False)
    assert untied.head.weight is not untied.embed.tok.weight


def test_logits_shape_and_recorded_shapes():
    model = gpt(vocab_size=100, d_model=64, n_layers=3, n_heads=4).eval()
    names = ["embed", "blocks.0", "blocks.2", "blocks.1.attn.scores", "blocks.1.attn.probs",
             "blocks.1.attn.values", "blocks.1.attn.value_relation"]
    logits, seen = outputs(model, names, ids(3, 7, 100))
    assert logits.shape == (3, 7, 100)
    assert seen["embed"].shape == seen["blocks.0"].shape == seen["blocks.2"].shape == (3, 7, 64)
    for name in ("scores", "probs", "value_relation"):
        assert seen[f"blocks.1.attn.{name}"].shape == (3, 4, 7, 7)
    assert seen["blocks.1.attn.values"].shape == (3, 4, 7, 16)


def test_attention_rows_are_causal_distributions():
    model = gpt().eval()
    _, seen = outputs(model, ["blocks.0.attn.probs", "blocks.1.attn.value_relation",
                              "blocks.0.attn.scores"], ids())
    for name in ("blocks.0.attn.probs", "blocks.1.attn.value_relation"):
        p = seen[name]
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        future = torch.ones(10, 10, dtype=torch.bool).triu(1)
        assert float(p[..., future].abs().max()) == 0.0
    scores = seen["blocks.0.attn.scores"]
    assert bool((scores[..., torch.ones(10, 10, dtype=torch.bool).triu(1)] == -10000.0).all())


def test_logits_at_t_do_not_see_later_tokens():
    model = gpt().eval()
    a = ids(2, 12)
    b = a.clone()
    b[:, 7:] = (b[:, 7:] + 1) % 256  # change every token after position 6
    la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :7], lb[:, :7])
    assert not torch.allclose(la[:, 7:], lb[:, 7:])


def test_padding_keys_get_no_attention_and_do_not_change_real_tokens():
    model = gpt().eval()
    a = ids(2, 8)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 3] = 0  # a padded token in the middle of the second sequence
    _, seen = outputs(model, ["blocks.0.attn.probs"], a, mask)
    assert float(seen["blocks.0.attn.probs"][1, :, :, 3].abs().max()) == 0.0
    b = a.clone()
    b[1, 3] = (b[1, 3] + 5) % 256  # what the padded position holds does not matter
    torch.testing.assert_close(model(a, mask)[1, 4:], model(b, mask)[1, 4:])


def test_float_token_ids_and_too_long_inputs():
    model = gpt(seq_len=8).eval()
    torch.testing.assert_close(model(torch.zeros(2, 5)), model(torch.zeros(2, 5, dtype=torch.long)))
    with pytest.raises(ValueError, match="more than seq_len"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of n_heads"):
        gpt(d_model=10, n_heads=4)


def test_gradients_reach_every_parameter():
    model = gpt(d_model=32, n_layers=2, dropout=0.1).train()
    model(ids(2, 6)).logsumexp(-1).sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
