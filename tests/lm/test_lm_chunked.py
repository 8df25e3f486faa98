"""The chunked token losses (issue #22 item 4): equal to the unchunked losses on hidden @ weight^T
+ bias, values and gradients, whatever the chunk size; through kdsl.compile (the teacher's pass
stops before its head; what kdsl explain says), kdsl.train (specs/lm/kd_chunked.kd) and the
language server."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

import kdsl
from kdsl.components.lm_chunked_losses import TokenJSDChunked, TokenKLChunked, TokenReverseKLChunked
from kdsl.components.lm_losses import TokenJSD, TokenKL, TokenReverseKL
from kdsl.reports.explain import explain
from kdsl.zoo.gpt import gpt

ROOT = Path(__file__).resolve().parents[2]
PAIRS = [(TokenKLChunked, TokenKL, {"tau": 2.0}), (TokenReverseKLChunked, TokenReverseKL, {"tau": 1.5}),
         (TokenJSDChunked, TokenJSD, {"beta": 0.3, "tau": 1.2})]


def _heads(dtype, n=2, t=7, d_s=5, d_t=6, vocab=11):
    g = torch.Generator().manual_seed(0)
    made = [torch.randn(*shape, generator=g, dtype=dtype, requires_grad=True)
            for shape in ((n, t, d_s), (vocab, d_s), (vocab,), (n, t, d_t), (vocab, d_t), (vocab,))]
    labels = torch.randint(0, vocab, (n, t), generator=g)
    labels[0, 2] = -100
    mask = torch.ones(n, t, dtype=torch.int64)
    mask[1, -2:] = 0
    return made, mask, labels


def _both(chunked, plain, opts, dtype, chunk, detach, labels_all_ignored=False):
    (h_s, w_s, b_s, h_t, w_t, b_t), mask, labels = _heads(dtype)
    if labels_all_ignored:
        labels = torch.full_like(labels, -100)
    inputs = [h_s, w_s, b_s, h_t, w_t, b_t]
    common = dict(shift=True, detach_teacher=detach, **opts)
    a = chunked(chunk=chunk, **common)(h_s, w_s, h_t, w_t, mask=mask, labels=labels, bias_S=b_s, bias_T=b_t)
    b = plain(**common)(h_s @ w_s.T + b_s, h_t @ w_t.T + b_t, mask=mask, labels=labels)
    wrt = inputs if not detach else inputs[:3]
    return (a, torch.autograd.grad(a, wrt)), (b, torch.autograd.grad(b, wrt))


@pytest.mark.parametrize("chunked,plain,opts", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("detach", [True, False])
def test_chunked_equals_unchunked_values_and_gradients(chunked, plain, opts, chunk, detach):
    (a, grads_a), (b, grads_b) = _both(chunked, plain, opts, torch.float64, chunk, detach)
    assert float(b.detach()) > 0
    assert torch.allclose(a, b, rtol=1e-12, atol=0)
    for ga, gb in zip(grads_a, grads_b):  # hidden states, head weight and bias (the teacher's too)
        assert gb.abs().max() > 0 and torch.allclose(ga, gb, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("chunked,plain,opts", PAIRS[:1], ids=["kl"])
def test_chunked_in_float32_to_1e_6(chunked, plain, opts):
    (a, grads_a), (b, grads_b) = _both(chunked, plain, opts, torch.float32, 4, True)
    assert abs(float(a.detach()) - float(b.detach())) <= 1e-6 * abs(float(b.detach()))
    for ga, gb in zip(grads_a, grads_b):
        assert float((ga - gb).norm()) <= 1e-6 * float(gb.norm())


def test_no_token_counts_gives_zero_and_zero_gradients():
    (a, grads), _ = _both(TokenKLChunked, TokenKL, {}, torch.float64, 3, True, labels_all_ignored=True)
    assert float(a.detach()) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)


def _spec(loss: str) -> "kdsl.ir.Spec":
    return kdsl.loads(f"""
student = model("kdsl.zoo:gpt", vocab_size=64, seq_len=12, d_model=16, n_layers=1)
teacher = model("kdsl.zoo:gpt", vocab_size=64, seq_len=12, d_model=24, n_layers=1)
record s = output of student
record hs = output of student.ln_f
record ws = param student.head.weight
record ht = output of teacher.ln_f
record wt = param teacher.head.weight
{"" if "chunked" in loss else "record t = output of teacher"}
loss kd = {loss}
""", "chunked.kd")


def test_compiled_step_equals_the_logits_form_and_the_teacher_stops_before_its_head():
    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    grads, losses = [], []
    for loss in ("token_jsd_chunked(hs, ws, ht, wt, mask=batch.attention_mask, labels=batch.labels, "
                 "shift=true, chunk=5)",
                 "token_jsd(s, t, mask=batch.attention_mask, labels=batch.labels, shift=true)"):
        torch.manual_seed(0)
        student, teacher = gpt(64, 12, 16, 1), gpt(64, 12, 24, 1)
        with kdsl.compile(_spec(loss), example_input=ids, example_batch=batch,
                          student=student, teacher=teacher) as d:
            step = d.step(ids, batch=batch)
            step.loss.backward()
            losses.append(float(step.loss.detach()))
            grads.append(torch.cat([p.grad.reshape(-1) for p in student.parameters()]))
            if "chunked" in loss:
                assert d.plan.cuts[("main", "step", "teacher")].needed == ["ht"]
                text = _explained(d)
                assert "teacher stops after teacher.ln_f (record ht)" in text
                assert "token_jsd_chunked(shift=true, chunk=5)" in text
                assert "chunks of positions, never [N, T, V] at once" in text
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert float((grads[0] - grads[1]).norm()) <= 1e-5 * float(grads[1].norm())


def _explained(distiller) -> str:
    console = Console(width=400, record=True, file=io.StringIO(), color_system=None)
    for part in explain(distiller):
        console.print(part)
    return console.export_text()


def test_kd_chunked_spec_trains(tmp_path):
    """specs/lm/kd_chunked.kd through kdsl.train (the step's equality with the logits form is tested
    above, through kdsl.compile)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 4)
    run = kdsl.train(ROOT / "specs" / "lm" / "kd_chunked.kd", out=str(tmp_path / "run"), threads=1, epochs=1,
                     data=f'kdsl.data:text(path="{corpus.as_posix()}", seq_len=16, batch_size=8)',
                     eval_teachers=False)
    row = run.history[-1]
    assert 0 < row["train/kd"] < 10 and 1 < row["val_ppl"] < 256


def test_memory_bench_measures_both_forms_on_the_same_loss():
    """bench/lm_memory.py's step, in this process at a tiny size (the bench runs each in its own)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_memory", ROOT / "bench" / "lm_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sizes = dict(positions=32, d_student=8, d_teacher=12, chunk=8, steps=1, threads=1)
    plain, chunked = (bench.measure(form, 300, **sizes) for form in ("plain", "chunked"))
    assert chunked["loss"] == pytest.approx(plain["loss"], rel=1e-6) and plain["loss"] > 0
    assert plain["logits_bytes"] == 32 * 300 * 4 and min(plain["peak_bytes"], chunked["peak_bytes"]) >= 0


def test_the_language_server_shows_the_chunked_losses_and_their_options():
    from kdsl.lsp.hover import hover_text
    from kdsl.lsp.names import Index

    text = (ROOT / "specs" / "lm" / "kd_chunked.kd").read_text()
    index = Index({"kd_chunked.kd": text})
    shown = hover_text(text, text.index("token_kl_chunked(") + 3, index)
    assert "token_kl from hidden states and LM head weights" in shown and "chunk" in shown
    option = hover_text(text, text.index("chunk=256") + 1, index)
    assert "chunk: int = 1024" in option and "token positions whose logits are computed at once" in option
