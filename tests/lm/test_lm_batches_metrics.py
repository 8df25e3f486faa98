"""Keyword batches (the train block's inputs), masked token losses against a hand-written loop,
and the LM metrics of a tiny model against a hand computation, all in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import kdsl
from kdsl.components.lm_losses import TokenKL
from kdsl.core.diagnostics import KdslError
from kdsl.text_data import TokenWindows
from kdsl.training.batches import model_call
from kdsl.training.data import _Indexed
from kdsl.training.distributed import Dist
from kdsl.training.evaluate import evaluate, lm_token_sums

CPU = torch.device("cpu")


def _fields(seed=0, n=3, t=6, vocab=5):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.int64)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_model_call_of_dict_and_tuple_batches():
    b = dict(_fields(), index=torch.arange(3))
    call = model_call(b, None, CPU)  # default: every field but labels, target and index
    assert list(call.kwargs) == ["input_ids", "attention_mask"] and call.args == ()
    assert set(call.fields) == {"input_ids", "attention_mask", "labels", "index"} and call.target is None
    call = model_call(b, ["input_ids", "labels"], CPU)
    assert list(call.kwargs) == ["input_ids", "labels"]
    with pytest.raises(KdslError) as info:
        model_call(b, ["input_id"], CPU)
    assert info.value.errors[0].code == "KD740" and "input_ids" in " ".join(info.value.errors[0].hints)
    x, y, i = torch.zeros(2, 3), torch.tensor([0, 1]), torch.arange(2)
    call = model_call((x, y, i), None, CPU)
    assert call.args[0] is x and call.target is y and call.fields == {"index": i}
    with pytest.raises(KdslError) as info:
        model_call((x, y, i), ["input_ids"], CPU)
    assert info.value.errors[0].code == "KD741"


def test_indexed_dict_items_collate_with_their_index():
    ds = TokenWindows(*(_fields()[k] for k in ("input_ids", "attention_mask", "labels")), vocab_size=5)
    batch = next(iter(DataLoader(_Indexed(ds), batch_size=3)))
    assert batch["index"].tolist() == [0, 1, 2] and torch.equal(batch["labels"], ds.labels)


class _Keywords(nn.Module):
    """A model that must be called by keyword, returning a dict (a structured output)."""

    def __init__(self, vocab=5, width=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)
        self.calls = []

    def forward(self, *, input_ids, attention_mask):
        self.calls.append(sorted(("input_ids", "attention_mask")))
        return {"logits": self.head(self.emb(input_ids)) * attention_mask[..., None]}


def test_distiller_step_calls_models_with_keywords_and_selects_output_fields():
    spec = kdsl.loads("""
student = model("x:y")
teacher = model("x:y")
record s = output of student
record t = output of teacher
loss kd = token_kl(s.logits, t.logits, mask=batch.attention_mask, labels=batch.labels, shift=true)
""", "kw.kd")
    f = _fields()
    inputs = {"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]}
    torch.manual_seed(0)
    student, teacher = _Keywords(), _Keywords()
    with kdsl.compile(spec, example_input=inputs, example_batch=f, student=student, teacher=teacher) as d:
        result = d.step(batch=f, **inputs)
        assert math.isfinite(float(result.loss.detach())) and float(result.loss.detach()) > 0
    assert student.calls and teacher.calls


def _hand_token_kl(s, t, mask, labels, tau):
    """KL per token by explicit loops over positions and vocabulary (shifted), float64."""
    total, count = 0.0, 0
    n, steps, vocab = s.shape
    for i in range(n):
        for j in range(steps - 1):
            if mask[i, j + 1] == 0 or labels[i, j + 1] == -100:
                continue
            zs = [float(s[i, j, v]) / tau for v in range(vocab)]
            zt = [float(t[i, j, v]) / tau for v in range(vocab)]
            ls = [z - math.log(sum(math.exp(w) for w in zs)) for z in zs]
            lt = [z - math.log(sum(math.exp(w) for w in zt)) for z in zt]
            total += tau ** 2 * sum(math.exp(lt[v]) * (lt[v] - ls[v]) for v in range(vocab))
            count += 1
    return total / count


def test_masked_token_kl_equals_a_hand_loop_in_float64():
    f = _fields(seed=1)
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    labels = f["labels"].clone()
    labels[0, 3] = -100  # a prompt token inside a real row does not count either
    loss = TokenKL(tau=2.0, shift=True)(s, t, mask=f["attention_mask"], labels=labels)
    assert loss.dtype == torch.float64
    assert float(loss.detach()) == pytest.approx(_hand_token_kl(s.detach(), t, f["attention_mask"], labels, 2.0), rel=1e-12)
    assert torch.autograd.gradcheck(lambda x: TokenKL(tau=2.0, shift=True)(x, t, f["attention_mask"], labels),
                                    (s,))


class _Table(nn.Module):
    """Logits looked up from a fixed table by token id: a tiny LM whose outputs are known."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None):
        return self.table[input_ids]


def test_lm_metrics_equal_a_hand_computation():
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(3)
        model = _Table(torch.randn(5, 5, generator=g))
        f = _fields(seed=4, n=4, t=7)
        ds = TokenWindows(f["input_ids"], f["attention_mask"], f["labels"], vocab_size=5)
        loader = DataLoader(_Indexed(ds), batch_size=3)  # two batches: sums across batches
        got = evaluate(model, loader, CPU, None, Dist(), task="lm")
    finally:
        torch.set_default_dtype(torch.float32)
    nll, hits, count = 0.0, 0, 0
    for i in range(4):
        for j in range(6):
            if f["labels"][i, j + 1] == -100 or f["attention_mask"][i, j + 1] == 0:
                continue
            row = [float(v) for v in model.table[f["input_ids"][i, j]]]
            gold = int(f["labels"][i, j + 1])
            nll -= row[gold] - math.log(sum(math.exp(v) for v in row))
            hits += int(max(range(5), key=lambda v: row[v]) == gold)
            count += 1
    assert got["loss"] == pytest.approx(nll / count, rel=1e-9)
    assert got["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-9)
    assert got["token_acc"] == pytest.approx(100.0 * hits / count)
    assert lm_token_sums(torch.zeros(1, 3, 5), torch.full((1, 3), -100)) == (0.0, 0.0, 0.0)


def test_lm_task_without_labels_is_a_located_error():
    ds = [{"input_ids": torch.zeros(4, dtype=torch.int64)}] * 2
    with pytest.raises(KdslError) as info:
        evaluate(_Table(torch.zeros(5, 5)), DataLoader(_Indexed(ds), batch_size=2), CPU, None, Dist(), task="lm")
    assert info.value.errors[0].code == "KD742"
