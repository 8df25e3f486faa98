"""Top-k teacher stores with the tail (issue #22 item 5): the tail's log-mass is stored (format 3),
the KL with the tail as one bucket is exact on tiny tensors and equal on the store's logits, and
format 2 stores (a uniform "rest" logit) are still read, to the same logits."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from kdsl.components.lm_losses import TokenKL, TokenTopKKL
from kdsl.core.diagnostics import KdslError
from kdsl.training.teacher_store import TeacherStore
from kdsl.training.teacher_store_build import build_store
from kdsl.training.teacher_store_format import (Part, compress_topk, expand_topk, seal_part, topk_error,
                                                uniform_rest)
from train_helpers import KD_SPEC


# ---------------------------------------------------------------------------------- exact math
def _hand_bucket_kl(z_t, z_s, k, tau):
    """tau^2 [sum_top p log(p / q) + p_rest log(p_rest / q_rest)] per row, by explicit loops."""
    out = []
    for t_row, s_row in zip(z_t.tolist(), z_s.tolist()):
        p = [math.exp(v / tau) for v in t_row]
        q = [math.exp(v / tau) for v in s_row]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        top = sorted(range(len(p)), key=lambda i: -t_row[i])[:k]
        p_rest, q_rest = 1 - sum(p[i] for i in top), 1 - sum(q[i] for i in top)
        kl = sum(p[i] * math.log(p[i] / q[i]) for i in top) + p_rest * math.log(p_rest / q_rest)
        out.append(tau ** 2 * kl)
    return out


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_bucket_kl_is_the_kl_over_the_top_k_and_one_rest_category(tau):
    g = torch.Generator().manual_seed(0)
    z_t, z_s = torch.randn(6, 9, generator=g, dtype=torch.float64) * 2, torch.randn(6, 9, generator=g, dtype=torch.float64)
    z_s.requires_grad_(True)
    loss = TokenTopKKL(k=3, tau=tau, tail="bucket")
    per_row = loss.per_token(z_s, z_t)
    assert per_row.tolist() == pytest.approx(_hand_bucket_kl(z_t, z_s.detach(), 3, tau), rel=1e-12)
    # gradient wrt the student's logits: (q_j - p_j) on the top k, (q_j - p_rest q_j / q_rest) on the rest, times tau
    (grad,) = torch.autograd.grad(per_row.sum(), z_s)
    p, q = (z_t / tau).softmax(-1), (z_s.detach() / tau).softmax(-1)
    top = torch.zeros_like(p, dtype=torch.bool).scatter(-1, z_t.topk(3, -1).indices, True)
    p_rest = p.masked_fill(top, 0).sum(-1, keepdim=True)
    q_rest = q.masked_fill(top, 0).sum(-1, keepdim=True)
    want = tau * torch.where(top, q - p, q - p_rest * q / q_rest)
    assert torch.allclose(grad, want, rtol=1e-10, atol=1e-14)
    # the bucket KL is at most the full KL (the rest's own KL is left out), and equals it at k = V
    full = TokenKL(tau=tau).per_token(z_s, z_t)
    assert bool((per_row <= full + 1e-12).all())
    assert torch.allclose(TokenTopKKL(k=9, tau=tau, tail="bucket").per_token(z_s, z_t), full, rtol=1e-12)


def test_store_parts_keep_the_bucket_kl_of_the_full_logits_at_tau_1():
    g = torch.Generator().manual_seed(1)
    z_t, z_s = torch.randn(40, 30, generator=g) * 3, torch.randn(40, 30, generator=g)
    values, indices, tail = compress_topk(z_t, 5)
    served = expand_topk(values, indices, uniform_rest(values, tail, 30), 30)
    bucket = TokenTopKKL(k=5, tail="bucket")
    assert float(bucket(z_s, served)) == pytest.approx(float(bucket(z_s, z_t)), rel=1e-6)
    # the tail round trip: the served logits compress to the stored parts again
    again = compress_topk(served, 5)
    assert torch.equal(again[1], indices) and torch.equal(again[0], values)
    assert torch.allclose(again[2], tail, atol=1e-5)
    # the loss errors against token_kl on the full logits: both vanish when one class is left out
    error, one_left = topk_error(z_t, 5, student=z_s), topk_error(z_t, 29, student=z_s)
    full = TokenKL().per_token(z_s, z_t)
    assert error["full"] == pytest.approx(float(full.mean()), rel=1e-6)
    assert error["bucket"] == pytest.approx(float((bucket.per_token(z_s, z_t) - full).abs().mean()), rel=1e-5)
    assert min(error["bucket"], error["uniform"], error["kl"]) > 1e-3
    assert max(one_left["bucket"], one_left["uniform"], one_left["bucket_grad"], one_left["uniform_grad"]) < 1e-5


# ---------------------------------------------------------------------------------- the store, both formats
@pytest.fixture(scope="module")
def top3(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tail") / "top3"
    build_store(KD_SPEC, out=str(out), threads=1, topk=3)
    return out


def _served(directory: Path) -> torch.Tensor:
    return TeacherStore(str(directory)).values("teacher", 0, torch.arange(0, 1438, 5), torch.device("cpu"))["t_logits"]


def _as_format_2(store: Path, out: Path) -> None:
    """``store`` rewritten as kdsl wrote stores before the tail: a "rest" logit, version 2."""
    out.mkdir()
    manifest = json.loads((store / "manifest.json").read_text())
    for name in os.listdir(store):
        if name.endswith(".bin") or name.startswith("."):
            (out / name).write_bytes((store / name).read_bytes())
    entry = manifest["records"]["t_logits"]
    rows = manifest["samples"]
    values = torch.from_numpy(__import__("numpy").fromfile(out / "t_logits.values.bin", dtype="<f4")).reshape(rows, 3)
    tail = torch.from_numpy(__import__("numpy").fromfile(out / "t_logits.tail.bin", dtype="<f4"))
    uniform_rest(values, tail, 10).to(torch.float32).numpy().tofile(out / "t_logits.rest.bin")
    os.remove(out / "t_logits.tail.bin")
    del entry["parts"]["tail"]
    entry["parts"]["rest"] = seal_part(str(out), Part("t_logits.rest.bin", (), "float32")).describe()
    manifest["version"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_format_3_store_holds_the_tail_and_format_2_stores_still_read(top3, tmp_path):
    manifest = json.loads((top3 / "manifest.json").read_text())
    assert manifest["version"] == 3 and set(manifest["records"]["t_logits"]["parts"]) == {"values", "indices", "tail"}
    new = _served(top3)
    old_format = tmp_path / "format2"
    _as_format_2(top3, old_format)
    old = _served(old_format)
    assert torch.allclose(old, new, rtol=1e-6, atol=1e-6)
    # the probability the served logits give the other 7 classes is the stored tail's
    tail = torch.from_numpy(__import__("numpy").fromfile(top3 / "t_logits.tail.bin", dtype="<f4"))[::5][:len(new)]
    p = new.double().softmax(-1)
    assert torch.allclose(p.topk(7, -1, largest=False).values.sum(-1).log(), tail.double(), atol=1e-5)
    # a manifest that mixes the formats is refused, located
    bad = json.loads((old_format / "manifest.json").read_text())
    bad["version"] = 3
    (old_format / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(KdslError) as info:
        TeacherStore(str(old_format))
    assert info.value.diagnostics[0].code == "KD710" and "format 3 top-k record keeps the other classes in part 'tail', not 'rest'" in str(info.value)
