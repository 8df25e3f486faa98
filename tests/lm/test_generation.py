"""Generation during training (the ``generate`` statement, kdsl.runtime.generation): the zoo
GPT's cached generation equals recomputing the whole sequence, GKD's JSD(beta) on generated
sequences against its formula (gradients too), generated tokens carry no gradient while the
student's log-probabilities of them do, lmbda = 0 is the off-policy run, sequence-level KD trains
on the teacher's answers, and the refusals (KD550, KD612). Tiny models, a few steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdsl
from kdsl.cli.train_view import progress_line
from kdsl.data import arith, strings
from kdsl.runtime.generation import Rollout, complete
from kdsl.training.report import TOKENS_PER_S, Reporter
from kdsl.zoo.gpt import gpt
from kdsl.zoo.sampling import top_p_filter

ROOT = Path(__file__).resolve().parents[2]
TINY = 'model("kdsl.zoo:gpt", vocab_size=256, seq_len=16, d_model=16, n_layers=1, n_heads=2)'
DATA = 'dataset("kdsl.data:strings", length=3, train_size=48, val_size=16, alphabet="abcdefgh", batch_size=8)'


def spec_text(generate: str, loss: str, teacher: bool = True) -> str:
    lines = [f"student = {TINY}"]
    if teacher:
        lines += [f"teacher = {TINY}", "record t = output of teacher"]
    lines += ["record s = output of student", generate, loss,
              "train {", f"  data = {DATA}", '  inputs = ["input_ids", "attention_mask", "labels"]',
              "  epochs = 1", "  optimizer = adam(lr=0.01)", "  seed = 0",
              "  allow_random_teacher = true", "}"]
    return "\n".join(lines) + "\n"


def left_padded(prompts, width):
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    return ids, mask


def test_cached_generation_equals_recomputing_the_sequence():
    torch.manual_seed(0)
    model = gpt(vocab_size=20, seq_len=16, d_model=32, n_layers=2).eval()
    prompts = [[3, 4, 5], [7, 8, 9, 10, 11]]
    ids, mask = left_padded(prompts, 5)
    made = model.generate(ids, mask, max_new_tokens=6)
    for row, prompt in zip(made, prompts):
        seq = list(prompt)
        for _ in range(6):  # no cache, no padding: the whole sequence each time
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert row[5:].tolist() == seq[len(prompt):]
    eos = int(made[0, 5])  # the first row's first new token ends it: the rest is padding
    stopped = model.generate(ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=0)
    assert stopped[0, 6:].tolist() == [0] * (stopped.shape[1] - 6)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_p_filter(logits, 0.7).isfinite()[0].tolist()
    assert kept == [True, True, False, False]
    assert top_p_filter(logits, 0.4).isfinite()[0].tolist() == [True, False, False, False]


def compiled(text, tmp_path, **models):
    path = tmp_path / "spec.kd"
    path.write_text(text)
    return kdsl.compile(kdsl.load(path), **models)


def a_batch():
    data = strings(length=3, train_size=48, val_size=16, alphabet="abcdefgh")
    return {k: v[:6] for k, v in data.train.fields.items()}


def test_gkd_jsd_on_generated_sequences_matches_the_formula_with_gradients(tmp_path):
    torch.manual_seed(0)
    beta = 0.3
    text = spec_text("generate from student(max_new_tokens=4, temperature=1.0, lmbda=1.0)",
                     f"loss jsd = token_jsd(s.logits, t.logits, mask=batch.attention_mask, "
                     f"labels=batch.labels, beta={beta}, shift=true)")
    distiller = compiled(text, tmp_path)
    batch = distiller.generated_batch(a_batch(), step=3)
    assert distiller.generated_batch(a_batch(), step=3)["input_ids"].equal(batch["input_ids"])  # (seed, step)
    for name in ("input_ids", "attention_mask", "labels"):  # integers, outside autograd
        assert batch[name].dtype == torch.int64 and batch[name].grad_fn is None
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    result = distiller.step(batch=batch, **inputs)
    result.loss.backward()
    got = [p.grad.clone() for p in distiller.student.parameters()]
    distiller.student.zero_grad()
    s = distiller.student(**inputs).logits[:, :-1]
    with torch.no_grad():
        t = distiller.model("teacher")(**inputs).logits[:, :-1]
    keep = (batch["labels"][:, 1:] != -100) & (batch["attention_mask"][:, 1:] != 0)
    p, q = F.softmax(t.double(), -1), F.softmax(s.double(), -1)  # the formula in float64
    m = beta * p + (1 - beta) * q
    kl = lambda a, b: (a * (a.log() - b.log())).sum(-1)  # noqa: E731 - the formula, as written
    want = (beta * kl(p, m) + (1 - beta) * kl(q, m))[keep].mean()
    assert result.loss.item() == pytest.approx(want.item(), rel=2e-4)  # float32 against float64
    want.backward()  # the student's log-probabilities of the generated tokens carry the gradient
    for g, p_ in zip(got, distiller.student.parameters()):
        torch.testing.assert_close(g, p_.grad.float(), rtol=2e-3, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in got)
    distiller.close()


def test_the_generated_batch_is_the_layout_of_prompt_batches(tmp_path):
    text = spec_text("generate from teacher(max_new_tokens=4, temperature=0, eos=10)",
                     "loss task = model_loss(s.loss)", teacher=True)
    distiller = compiled(text, tmp_path)
    source = a_batch()
    batch = distiller.generated_batch(source, step=0)
    answers = complete(distiller.model("teacher"), source["prompt_ids"], source["prompt_mask"], 4, eos=10)
    for i, answer in enumerate(answers):
        prompt = source["prompt_ids"][i][source["prompt_mask"][i] != 0].tolist()
        n = len(prompt) + len(answer)
        assert batch["input_ids"][i, :n].tolist() == prompt + answer
        assert batch["labels"][i].tolist() == [-100] * len(prompt) + answer + [-100] * (batch["labels"].shape[1] - n)
        assert len(answer) <= 4 and (10 not in answer[:-1])
    distiller.close()


class Terms(Reporter):
    def __init__(self):
        self.terms = []

    def step(self, epoch, steps_done, steps, terms):
        self.terms.append(dict(terms))


def run(tmp_path, name, text, reporter=None, **settings):
    path = tmp_path / f"{name}.kd"
    path.write_text(text)
    kdsl.train(path, out=str(tmp_path / name), threads=1, steps_per_epoch=4, reporter=reporter, **settings)
    return torch.load(tmp_path / name / "student.pt", weights_only=True), tmp_path / name


def test_lmbda_zero_is_the_off_policy_run_and_seqkd_reports_exact_match(tmp_path):
    loss = ("loss jsd = token_jsd(s.logits, t.logits, mask=batch.attention_mask, labels=batch.labels, "
            "beta=0.5, shift=true)")
    off, _ = run(tmp_path, "off", spec_text("", loss))
    zero, _ = run(tmp_path, "zero", spec_text("generate from student(max_new_tokens=4, lmbda=0)", loss))
    assert off.keys() == zero.keys() and all(off[k].equal(zero[k]) for k in off)
    terms = Terms()
    _, out = run(tmp_path, "seqkd", spec_text("generate from teacher(max_new_tokens=4, temperature=0)",
                                              "loss task = model_loss(s.loss)"), reporter=terms)
    assert terms.terms[-1][TOKENS_PER_S] > 0  # the progress line's tokens/s
    line = progress_line(0, 1, 4, 4, terms.terms[-1], 10.0, 0.0, None)
    assert f"{terms.terms[-1][TOKENS_PER_S]:.0f} tokens/s" in line and f"loss {terms.terms[-1]['task']:.4g}" in line
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["student"]) == {"ppl", "loss", "token_acc", "exact_match"}
    assert 0.0 <= summary["student"]["exact_match"] <= 100.0


def test_compile_refuses_a_model_without_generate(tmp_path):
    class Plain(torch.nn.Module):  # a language model without generate
        def __init__(self):
            super().__init__()
            self.inner = gpt(vocab_size=256, seq_len=16, d_model=16, n_layers=1, n_heads=2)

        def forward(self, input_ids, attention_mask=None, labels=None):
            return self.inner(input_ids, attention_mask, labels)

    text = spec_text("generate from student(max_new_tokens=4)", "loss task = model_loss(s.loss)", teacher=False)
    with pytest.raises(kdsl.KdslError) as info:
        compiled(text, tmp_path, student=Plain())
    (problem,) = info.value.errors
    assert problem.code == "KD550" and problem.span.line == 3 and "Plain has no generate" in problem.message


def test_generation_needs_prompts_in_the_batch(tmp_path):
    text = spec_text("generate from student(max_new_tokens=4)", "loss task = model_loss(s.loss)", teacher=False)
    distiller = compiled(text, tmp_path)
    batch = {k: v for k, v in a_batch().items() if not k.startswith("prompt")}
    with pytest.raises(kdsl.KdslError) as info:
        distiller.generated_batch(batch, step=0)
    assert info.value.errors[0].code == "KD612" and "prompt_ids" in info.value.errors[0].message
    distiller.rollout.max_new_tokens = 12  # 8 prompt tokens + 12 new ones: past seq_len 16
    with pytest.raises(kdsl.KdslError) as info:
        distiller.generated_batch({**a_batch(), "prompt_ids": torch.ones(2, 8, dtype=torch.long),
                                   "prompt_mask": torch.ones(2, 8, dtype=torch.long)}, step=0)
    assert info.value.errors[0].code == "KD613" and "more than seq_len (16)" in info.value.errors[0].message
    distiller.close()


def test_hugging_face_models_generate_with_their_own_generate():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids, mask = left_padded([[3, 4, 5], [7, 8, 9, 10]], 4)
    made = complete(model, ids, mask, max_new_tokens=3)
    for answer, prompt in zip(made, [[3, 4, 5], [7, 8, 9, 10]]):
        seq = list(prompt)
        for _ in range(3):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert answer == seq[len(prompt):]
    sampled = Rollout("m", model, max_new_tokens=3, temperature=1.0, top_p=0.9, seed=1)
    batch = sampled.batch({"prompt_ids": ids, "prompt_mask": mask}, step=0)
    assert batch["input_ids"].shape[0] == 2 and (batch["labels"] != -100).sum() == 6


def test_the_tasks_split_the_same_way_every_time():
    a, b = strings(length=3, train_size=48, val_size=16, alphabet="abcdefgh"), \
        strings(length=3, train_size=48, val_size=16, alphabet="abcdefgh")
    assert a.train.texts == b.train.texts and not set(a.train.texts) & set(a.val.texts)
    prompt, answer = a.val.texts[0]
    assert answer == prompt[:-1][::-1] + "\n"
    sums = arith(digits=1)
    assert len(sums.train) + len(sums.val) == 100 and ("3+4=", "07\n") in sums.train.texts + sums.val.texts
    row = sums.train[0]
    assert set(row) == {"input_ids", "attention_mask", "labels", "prompt_ids", "prompt_mask"}
    assert math.isclose(len(sums.val) / 100, 0.1, abs_tol=0.05)


@pytest.mark.parametrize("name", ["gkd_onpolicy.kd", "seqkd.kd", "minillm.kd", "strings_teacher.kd"])
def test_generation_specs_pass_the_checks(name):
    assert kdsl.check(ROOT / "specs" / "lm" / name) == []


def test_fmt_and_graph_know_the_statement():
    from kdsl.lang.fmt import format_text
    from kdsl.reports.graph import build, to_mermaid

    messy = spec_text("generate   from student( lmbda=0.5,max_new_tokens=4 )", "loss task = model_loss(s.loss)",
                      teacher=False)
    formatted = format_text(messy).text
    assert "generate from student(lmbda=0.5, max_new_tokens=4)\n" in formatted
    assert format_text(formatted.replace("(lmbda=0.5, max_new_tokens=4)", "")).text.count("generate from student\n") == 1
    graph = to_mermaid(build(kdsl.load(ROOT / "specs" / "lm" / "seqkd.kd")))
    assert 'model_teacher -->|"generate (no grad)"|' in graph and '-->|"input"| model_student' in graph


def test_lmbda_is_the_fraction_of_steps_that_generate():
    draws = [Rollout("m", None, lmbda=0.3, seed=5).on_policy(step) for step in range(2000)]
    assert draws == [Rollout("m", None, lmbda=0.3, seed=5).on_policy(step) for step in range(2000)]
    assert abs(sum(draws) / 2000 - 0.3) < 0.03
    assert not any(Rollout("m", None, lmbda=0.0).on_policy(s) for s in range(50))
    assert all(Rollout("m", None, lmbda=1.0).on_policy(s) for s in range(50))


def test_the_generation_bench_compares_checked_specs():
    """bench/lm_generation_table.py's five methods are specs that load and check clean."""
    import importlib.util

    found = importlib.util.spec_from_file_location("lm_generation_table", ROOT / "bench" / "lm_generation_table.py")
    bench = importlib.util.module_from_spec(found)
    found.loader.exec_module(bench)
    methods = bench.variants()
    assert [key for _, key, _ in methods] == ["labels", "offpolicy", "gkd", "seqkd", "minillm"]
    for _, key, text in methods:
        spec = kdsl.loads(text, str(ROOT / "specs" / "lm" / f"{key}.kd"))
        assert (spec.generation is None) == (key in ("labels", "offpolicy")), key
