"""Language-model distillation losses against their papers' formulas, written out here as loops
over the tokens (independent of the implementations' vectorized code), in float64: values and
gradients, masked and unmasked, plus the shape rules that `kdsl check` applies."""

from __future__ import annotations

import math

import pytest
import torch

from kdsl.catalog.binding import instantiate
from kdsl.catalog.lm_losses import COMPONENTS as LM
from kdsl.catalog.registry import REGISTRY
from kdsl.catalog.shapes import TensorInfo, check_rules
from tests.catalog.reference import assert_implements, assert_imports_without_torch
from tests.catalog.reference import assert_same_value_and_grads, seeded

F64 = torch.float64
N, T, V = 2, 5, 7


def build(name, **options):
    return instantiate(REGISTRY.get("loss", name), **options)


def rand(*shape, seed, scale=1.0):
    return seeded(*shape, seed=seed, scale=scale)


same = assert_same_value_and_grads


# ---- per-token formulas, one token at a time ------------------------------------------------
def kl(p, q):
    """KL(p || q) of two distributions given as lists of tensors (kept differentiable)."""
    return sum(pi * (torch.log(pi) - torch.log(qi)) for pi, qi in zip(p, q))


def tsoftmax(z, tau=1.0):
    """Softmax of a 1-D tensor, element by element, differentiable."""
    e = [torch.exp(z[v] / tau) for v in range(z.shape[0])]
    total = sum(e)
    return [x / total for x in e]


def forward_kl(s, t, tau):
    return tau ** 2 * kl(tsoftmax(t, tau), tsoftmax(s, tau))


def reverse_kl(s, t, tau):
    return tau ** 2 * kl(tsoftmax(s, tau), tsoftmax(t, tau))


def jsd(s, t, tau, beta):
    p, q = tsoftmax(t, tau), tsoftmax(s, tau)
    m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def topk_kl(s, t, tau, k):
    order = sorted(range(t.shape[0]), key=lambda v: -float(t[v].detach()))[:k]
    idx = torch.tensor(order)
    return tau ** 2 * kl(tsoftmax(t[idx], tau), tsoftmax(s[idx], tau))


def token_loop(per_token, s, t, keep):
    """Mean of per_token over the (n, t) positions with keep[n][t] true."""
    terms = [per_token(s[n, i], t[n, i]) for n in range(s.shape[0]) for i in range(s.shape[1])
             if keep[n][i]]
    return sum(terms) / len(terms)


MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
LABELS = torch.tensor([[-100, 3, 2, 1, -100], [4, -100, 0, 6, 5]])

CASES = {
    "token_kl": (dict(tau=2.0), lambda s, t: forward_kl(s, t, 2.0)),
    "token_reverse_kl": (dict(tau=1.5), lambda s, t: reverse_kl(s, t, 1.5)),
    "token_jsd": (dict(beta=0.3, tau=1.2), lambda s, t: jsd(s, t, 1.2, 0.3)),
    "token_topk_kl": (dict(k=3, tau=2.0), lambda s, t: topk_kl(s, t, 2.0, 3)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("selection", ["all", "mask", "labels", "both"])
def test_token_losses_equal_a_loop_over_tokens(name, selection):
    options, per_token = CASES[name]
    s, t = rand(N, T, V, seed=1, scale=2.0), rand(N, T, V, seed=2, scale=2.0)
    mask = MASK if selection in ("mask", "both") else None
    labels = LABELS if selection in ("labels", "both") else None
    keep = [[(mask is None or bool(mask[n, i])) and (labels is None or int(labels[n, i]) != -100)
             for i in range(T)] for n in range(N)]
    loss = build(name, detach_teacher=False, **options)
    same(loss(s, t, mask, labels), token_loop(per_token, s, t, keep), [s, t])


@pytest.mark.parametrize("name", sorted(CASES))
def test_shift_scores_position_t_against_label_t_plus_1(name):
    options, per_token = CASES[name]
    s, t = rand(N, T, V, seed=3), rand(N, T, V, seed=4)
    loss = build(name, shift=True, detach_teacher=False, **options)
    # position i of the logits counts when label i + 1 is not ignored
    keep = [[int(LABELS[n, i + 1]) != -100 for i in range(T - 1)] for n in range(N)]
    want = token_loop(per_token, s[:, :-1], t[:, :-1], keep)
    same(loss(s, t, None, LABELS), want, [s, t])


def test_token_kl_on_rows_is_kl_div():
    s, t = rand(4, 6, seed=5), rand(4, 6, seed=6)
    same(build("token_kl", tau=3.0)(s, t), build("kl_div", tau=3.0)(s, t), [s])


def test_topk_with_k_equal_to_the_vocabulary_is_token_kl():
    s, t = rand(N, T, V, seed=7), rand(N, T, V, seed=8)
    same(build("token_topk_kl", k=V, tau=2.0)(s, t, MASK),
         build("token_kl", tau=2.0)(s, t, MASK), [s])


def test_topk_larger_than_the_vocabulary_is_refused():
    s, t = rand(N, T, V, seed=9), rand(N, T, V, seed=10)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        build("token_topk_kl", k=V + 1)(s, t)


def test_jsd_half_is_the_symmetric_jensen_shannon_divergence():
    s, t = rand(1, 1, V, seed=11), rand(1, 1, V, seed=12)
    ours = build("token_jsd", beta=0.5)(s, t)
    swapped = build("token_jsd", beta=0.5, detach_teacher=False)(t, s)
    torch.testing.assert_close(ours, swapped)
    assert 0 < float(ours.detach()) < math.log(2)


def test_no_token_counting_gives_zero_with_zero_gradients():
    s, t = rand(N, T, V, seed=13), rand(N, T, V, seed=14)
    loss = build("token_kl")(s, t, torch.zeros(N, T))
    assert float(loss.detach()) == 0.0
    (grad,) = torch.autograd.grad(loss, s)
    assert not grad.abs().sum()


def test_teacher_is_detached_by_default():
    s, t = rand(N, T, V, seed=15), rand(N, T, V, seed=16)
    build("token_reverse_kl")(s, t).backward()
    assert t.grad is None and s.grad is not None


# ---- TinyBERT ------------------------------------------------------------------------------
def test_hidden_mse_masked_equals_a_loop():
    s, t = rand(N, T, 4, seed=17), rand(N, T, 4, seed=18)
    terms = [((s[n, i] - t[n, i]) ** 2).sum() for n in range(N) for i in range(T) if MASK[n, i]]
    want = sum(terms) / (len(terms) * 4)
    same(build("hidden_mse")(s, t, MASK), want, [s, t])
    same(build("hidden_mse")(s, t), ((s - t) ** 2).mean(), [s, t])


def test_hidden_mse_with_a_linear_connector_maps_the_width():
    connector = instantiate(REGISTRY.get("connector", "linear"), in_features=3,
                            out_features=4).double()
    s, t = rand(N, T, 3, seed=19), rand(N, T, 4, seed=20)
    mapped = connector(s)
    want = ((s @ connector.weight.t() + connector.bias - t) ** 2).mean()
    same(build("hidden_mse")(mapped, t), want, [s, t])


@pytest.mark.parametrize("masked_below", [-100.0, None])
def test_attention_mse_equals_a_loop_over_heads_and_pairs(masked_below):
    h = 3
    s, t = rand(N, h, T, T, seed=21, scale=3.0), rand(N, h, T, T, seed=22, scale=3.0)
    # BERT's additive mask: -10000 at the padded keys of the first sample
    pad = torch.zeros(N, 1, 1, T, dtype=F64)
    pad[0, ..., 3:] = -10000.0
    s, t = (s + pad), (t + pad)

    def clean(x):
        if masked_below is None:
            return x
        return x if float(x.detach()) > masked_below else x * 0

    def loop(keep):
        terms = [(clean(s[n, a, q, k]) - clean(t[n, a, q, k])) ** 2
                 for n in range(N) for a in range(h) for q in range(T) for k in range(T)
                 if keep[n][q] and keep[n][k]]
        return sum(terms) / len(terms)

    loss = build("attention_mse", masked_below=masked_below)
    everything = [[True] * T for _ in range(N)]
    same(loss(s, t), loop(everything), [s, t])
    same(loss(s, t, MASK), loop(MASK.bool().tolist()), [s, t])


# ---- MiniLM --------------------------------------------------------------------------------
def minilm_loop(a_s, a_t, v_s, v_t, keep):
    def part(s, t):
        rows = [kl([t[n, a, q, k] for k in range(T)], [s[n, a, q, k] for k in range(T)])
                for n in range(N) for a in range(s.shape[1]) for q in range(T) if keep[n][q]]
        return sum(rows) / len(rows)

    return part(a_s, a_t) + part(v_s, v_t)


def test_minilm_on_distributions_equals_a_loop():
    h = 2
    raw = [rand(N, h, T, T, seed=30 + i) for i in range(4)]
    loss = build("minilm", detach_teacher=False)
    for keep, mask in [([[True] * T] * N, None), (MASK.bool().tolist(), MASK)]:
        maps = [torch.softmax(x, -1) for x in raw]  # a fresh graph for each comparison
        same(loss(*maps, mask), minilm_loop(*maps, keep), raw)


def test_minilm_scores_mask_the_keys_before_the_softmax():
    h = 2
    raw = [rand(N, h, T, T, seed=40 + i) for i in range(4)]
    keys = MASK.bool()[:, None, None, :]

    def masked_softmax(x):
        return torch.softmax(x.masked_fill(~keys, float("-inf")), -1)

    probabilities = [masked_softmax(x) for x in raw]
    ours = build("minilm", scores=True, detach_teacher=False)(*raw, MASK)
    # zero-probability keys contribute nothing: compare with the distributions' loop over the
    # unmasked keys only
    def loop():
        def part(s, t):
            rows = []
            for n in range(N):
                ks = [k for k in range(T) if MASK[n, k]]
                for a in range(h):
                    for q in ks:
                        rows.append(kl([t[n, a, q, k] for k in ks], [s[n, a, q, k] for k in ks]))
            return sum(rows) / len(rows)

        a_s, a_t, v_s, v_t = probabilities
        return part(a_s, a_t) + part(v_s, v_t)

    same(ours, loop(), raw)


def test_minilm_is_zero_for_equal_relations():
    a = torch.softmax(rand(N, 2, T, T, seed=50), -1).detach()
    assert float(build("minilm")(a, a, a, a, MASK)) == pytest.approx(0.0, abs=1e-15)


# ---- the catalog -----------------------------------------------------------------------------
@pytest.mark.parametrize("component", LM, ids=lambda c: c.name)
def test_catalog_entry_matches_its_implementation(component):
    assert_implements(component)
    assert component.paper
    for option in component.options:
        if option.type.name in ("float", "int") and option.name != "ignore_index":
            assert option.constraint is not None, (component.name, option.name)


def infos(**shapes):
    return {k: TensorInfo(v[0], v[1]) if isinstance(v[1], str) else TensorInfo(v)
            for k, v in shapes.items()}


def test_token_rules_name_the_vocabulary_and_the_sequence():
    rules = REGISTRY.get("loss", "token_kl").rules
    assert check_rules(rules, infos(preds_S=(2, 5, 7), preds_T=(2, 5, 7))) == []
    (vocab,) = check_rules(rules, infos(preds_S=(2, 5, 7), preds_T=(2, 5, 9)))
    assert "vocabulary size" in vocab and "[2, 5, 7] and [2, 5, 9]" in vocab
    (sequence,) = check_rules(rules, infos(preds_S=(2, 5, 7), preds_T=(2, 6, 7)))
    assert "sequence length" in sequence
    (mask,) = check_rules(rules, infos(preds_S=(2, 5, 7), preds_T=(2, 5, 7), mask=(2, 6)))
    assert "'mask' must have shape [2, 5]" in mask
    (labels,) = check_rules(rules, {"preds_S": TensorInfo((2, 5, 7)),
                                    "labels": TensorInfo((2, 5), "float32")})
    assert "integer token labels" in labels


def test_attention_rules():
    rules = REGISTRY.get("loss", "minilm").rules
    ok = dict(attn_S=(2, 3, 5, 5), attn_T=(2, 3, 5, 5), value_S=(2, 3, 5, 5),
              value_T=(2, 3, 5, 5), mask=(2, 5))
    assert check_rules(rules, infos(**ok)) == []
    assert check_rules(rules, infos(**dict(ok, attn_T=(2, 4, 5, 5))))
    assert check_rules(rules, infos(**dict(ok, mask=(2, 4))))
    (square,) = check_rules(REGISTRY.get("loss", "attention_mse").rules,
                            infos(preds_S=(2, 3, 5, 4), preds_T=(2, 3, 5, 4)))
    assert "[N, H, T, T]" in square


def test_catalog_does_not_import_torch():
    assert_imports_without_torch("kdsl.catalog.lm_losses")
