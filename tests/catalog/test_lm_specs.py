"""The language-model distillation specs (specs/lm/: token KD, reverse KL, GKD, TinyBERT, MiniLM)
and specs/skd.kd compile against the zoo models with a dry run, and one step gives a finite loss
whose gradients reach the student. A vocabulary mismatch between student and teacher is a located
KD505 error at the loss line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.reports.checking import check_with_models

ROOT = Path(__file__).resolve().parents[2]
LM_SPECS = ["lm/kd.kd", "lm/reverse_kl.kd", "lm/gkd.kd", "lm/tinybert.kd", "lm/minilm.kd"]
# the losses of each spec, so that a spec that silently lost a term fails here
LM_TERMS = {
    "lm/kd.kd": {"kd", "task"},
    "lm/reverse_kl.kd": {"rkl", "task"},
    "lm/gkd.kd": {"jsd"},
    "lm/tinybert.kd": {"embd", "hidn0", "hidn1", "attn0", "attn1", "pred"},
    "lm/minilm.kd": {"minilm"},
}


def lm_batch(n: int = 3, t: int = 12, vocab: int = 256, seed: int = 0):
    """(the models' keyword input, the batch fields): token ids, an attention mask with right
    padding in two rows, and Hugging Face style labels (the ids, -100 at padding). The specs call
    their models with all three (their train blocks' inputs), so the zoo GPT returns {logits, loss}."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    fields = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    return fields, fields


def assert_step_trains_the_student(distiller, args, batch, terms):
    kwargs = args if isinstance(args, dict) else {}
    result = distiller.step(*(() if kwargs else args), batch=batch, **kwargs)
    assert set(result.losses) == terms
    assert math.isfinite(float(result.loss.detach())) and float(result.loss.detach()) > 0
    result.loss.backward()
    # MiniLM reads the last attention only: the layers after it get no gradient, rightly
    grads = [p.grad for p in distiller.student.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    teacher = distiller.model("teacher")
    assert all(p.grad is None for p in teacher.parameters())  # a frozen teacher learns nothing


@pytest.mark.parametrize("name", LM_SPECS + ["skd.kd"])
def test_spec_checks(name):
    assert kdsl.check(ROOT / "specs" / name) == []


@pytest.mark.parametrize("name", LM_SPECS)
def test_lm_spec_dry_runs_and_steps(name):
    torch.manual_seed(0)
    ids, batch = lm_batch()
    with kdsl.compile(kdsl.load(ROOT / "specs" / name), example_input=ids,
                      example_batch=batch) as distiller:
        assert_step_trains_the_student(distiller, ids, batch, LM_TERMS[name])


def test_tinybert_connector_maps_the_student_width_to_the_teacher_width():
    ids, batch = lm_batch()
    with kdsl.compile(kdsl.load(ROOT / "specs" / "lm/tinybert.kd"), example_input=ids,
                      example_batch=batch) as distiller:
        (w_h,) = [m for name, m in distiller.named_modules() if name.endswith("w_h")]
        linear = [m for m in w_h.modules() if isinstance(m, torch.nn.Linear)][0]
        assert (linear.in_features, linear.out_features) == (64, 128)
        assert_step_trains_the_student(distiller, ids, batch, LM_TERMS["lm/tinybert.kd"])
        assert linear.weight.grad is not None and float(linear.weight.grad.abs().sum()) > 0


def test_padding_does_not_change_the_token_kd_loss():
    """Padded positions hold arbitrary ids; with the mask and labels they do not count, and the
    causal models' real tokens never see them (right padding)."""
    ids, batch = lm_batch()
    other = dict(ids, input_ids=ids["input_ids"].clone())
    other["input_ids"][batch["attention_mask"] == 0] = 7
    losses = []
    for x in (ids, other):
        torch.manual_seed(0)  # the same initial weights in both compiles
        with kdsl.compile(kdsl.load(ROOT / "specs" / "lm/kd.kd"), example_input=x,
                          example_batch=batch) as distiller:
            losses.append(float(distiller.step(batch=batch, **x).loss.detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_skd_spec_dry_runs_and_steps_on_digits():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    target = torch.randint(0, 10, (8,))
    with kdsl.compile(kdsl.load(ROOT / "specs" / "skd.kd"), example_input=x,
                      example_batch={"target": target}) as distiller:
        assert_step_trains_the_student(distiller, (x,), {"target": target},
                                       {"instance", "direction", "task"})


def test_model_aware_check_on_the_text_data_is_clean():
    """kdsl check SPEC --data kdsl.data:text(...) dry-runs on one batch of named fields, called
    as the train block's inputs say: the structured outputs' .logits and .loss resolve."""
    for name in LM_SPECS:
        spec = kdsl.load(ROOT / "specs" / name)
        result = check_with_models(spec, data="kdsl.data:text(seq_len=64, max_bytes=20000)")
        assert [d for d in result.diagnostics if d.severity == "error"] == [], name
        assert result.tables, name


def test_vocabulary_mismatch_is_kd545_at_the_loss_line_with_both_sizes():
    text = (ROOT / "specs" / "lm/kd.kd").read_text()
    bad = text.replace('model("kdsl.zoo:gpt", vocab_size=256, seq_len=64, d_model=64',
                       'model("kdsl.zoo:gpt", vocab_size=128, seq_len=64, d_model=64')
    assert bad != text
    ids, batch = lm_batch(vocab=128)
    with pytest.raises(kdsl.KdslError) as info:
        kdsl.compile(kdsl.loads(bad, str(ROOT / "specs" / "lm" / "kd.kd")), example_input=ids,
                     example_batch=batch)
    (problem,) = info.value.errors
    assert problem.code == "KD545"  # two tokenizers: refused as such, not as a shape to connect
    assert "'preds_S' has 128 tokens and 'preds_T' 256" in problem.message
    assert "(cross-tokenizer distillation) is not supported" in problem.message
    loss_line = next(i for i, line in enumerate(bad.splitlines(), 1) if line.startswith("loss kd"))
    assert problem.span.line == loss_line
    # the notes point at the loss's inputs and at both models' declarations
    assert [n.span.line for n in problem.notes if "declared here" in n.message] == [
        i for i, line in enumerate(bad.splitlines(), 1) if line.startswith(("student =", "teacher ="))]
