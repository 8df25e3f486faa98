"""The specs of the paper-named methods (FBKD, knowledge review, BYOT, ZSKT) pass the model-aware
check and its dry run, and misuse of the new components is a located error: a shape rule
(KD505) naming the spec's line, e.g. a vocabulary or sequence-length mismatch of token logits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import kdsl
from kdsl.reports.checking import check_with_models

ROOT = Path(__file__).resolve().parents[2]


def errors(diagnostics):
    return [d for d in diagnostics if d.severity == "error"]


def dry_run(text: str, input_shape: str = "2,3,32,32"):
    return check_with_models(kdsl.loads(text, "spec.kd"), input_shape=input_shape).diagnostics


def without_checkpoints(name: str) -> str:
    # the teachers' checkpoints are not in the repository; the dry run needs no trained weights
    return re.sub(r' from "checkpoints/[^"]*"', "", (ROOT / "specs" / name).read_text())


@pytest.mark.parametrize("name", ["fbkd.kd", "review_kd.kd", "byot.kd", "zskt.kd"])
def test_paper_specs_check_and_dry_run(name):
    assert kdsl.check(ROOT / "specs" / name) == []
    assert errors(dry_run(without_checkpoints(name))) == []


def test_a_fused_map_compared_with_the_wrong_stage_is_located():
    text = without_checkpoints("review_kd.kd").replace(
        "loss hcl2 = hcl(abf2(s2, abf3(s3)[1])[0], t2)", "loss hcl2 = hcl(abf2(s2, abf3(s3)[1])[0], t3)")
    (problem,) = errors(dry_run(text))
    assert problem.code == "KD505" and "'preds_S' and 'preds_T' must have the same shape" in \
        problem.message
    assert problem.span.line == text.splitlines().index(
        "loss hcl2 = hcl(abf2(s2, abf3(s3)[1])[0], t3)") + 1


# ---- language models: a vocabulary or sequence-length mismatch -----------------------------
class TinyLM(nn.Module):
    """Token ids [N, T] (any dtype, as the dry run's zeros) -> logits [N, T, vocab]."""

    def __init__(self, vocab: int = 11, width: int = 4, cut: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)
        self.cut = cut

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids.long())
        return self.head(hidden[:, self.cut:])


def tiny_lm(vocab: int = 11, width: int = 4, cut: int = 0) -> TinyLM:
    return TinyLM(vocab, width, cut)


LM_SPEC = """student = model("tests.catalog.test_spec_checks:tiny_lm", {student})
teacher = model("tests.catalog.test_spec_checks:tiny_lm", {teacher})

record s_logits = output of student
record t_logits = output of teacher

loss kd = {loss}(s_logits, t_logits{options})
"""


@pytest.mark.parametrize("loss", ["token_kl", "token_reverse_kl", "token_jsd", "token_topk_kl"])
def test_token_losses_dry_run_on_matching_models(loss):
    options = ", k=5" if loss == "token_topk_kl" else ""
    text = LM_SPEC.format(student="vocab=11", teacher="vocab=11, width=8", loss=loss,
                          options=options)
    assert errors(dry_run(text, "2,6")) == []


@pytest.mark.parametrize("teacher,code,words", [("vocab=13", "KD545", "vocabulary sizes differ"),
                                                ("vocab=11, cut=1", "KD505", "sequence length")])
def test_token_logit_mismatches_are_located(teacher, code, words):
    text = LM_SPEC.format(student="vocab=11", teacher=teacher, loss="token_kl", options="")
    (problem,) = errors(dry_run(text, "2,6"))
    assert problem.code == code and words in problem.message
    assert problem.span.line == 7  # the loss statement
