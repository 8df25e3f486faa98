"""The LM demo specs pass the checks (with and without models), and a 1-epoch tiny `kdsl train`
of an LM spec through the CLI reports perplexity (seconds: a tiny corpus, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kdsl
from kdsl.cli.app import app
from kdsl.reports.checking import check_with_models

ROOT = Path(__file__).resolve().parents[2]
SPECS = ["teacher.kd", "baseline.kd", "kd.kd", "reverse_kl.kd", "gkd.kd", "tinybert.kd", "minilm.kd"]


@pytest.mark.parametrize("name", SPECS)
def test_lm_spec_passes_the_checks(name):
    spec = kdsl.load(ROOT / "specs" / "lm" / name)
    assert kdsl.check(ROOT / "specs" / "lm" / name) == []
    assert [s.key for s in spec.train.settings][:2] == ["data", "inputs"]
    found = check_with_models(spec, data="kdsl.data:text(seq_len=16, max_bytes=5000)")
    assert [d for d in found.diagnostics if d.severity == "error"] == []


def test_unknown_inputs_field_is_kd740_in_the_model_aware_check():
    text = (ROOT / "specs" / "lm" / "baseline.kd").read_text().replace('"labels"]', '"label"]')
    with pytest.raises(kdsl.KdslError) as info:  # a data problem, raised as KD702's are
        check_with_models(kdsl.loads(text, str(ROOT / "specs" / "lm" / "baseline.kd")),
                          data="kdsl.data:text(seq_len=16, max_bytes=5000)")
    (problem,) = info.value.errors
    assert problem.code == "KD740" and "did you mean 'labels'" in " ".join(problem.hints)


def test_tiny_lm_train_through_the_cli(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 6)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", str(ROOT / "specs" / "lm" / "baseline.kd"), "--data",
        f'kdsl.data:text(path="{corpus.as_posix()}", seq_len=16, batch_size=8)',
        "--epochs", "1", "--threads", "1", "--out", str(out)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    assert "val ppl" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "lm"
    student = summary["student"]
    assert set(student) == {"ppl", "loss", "token_acc"} and 1.0 < student["ppl"] < 256.0
    assert summary["best"]["metric"] == "val_ppl" and summary["best"]["mode"] == "min"
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["val_ppl"] == pytest.approx(2.718281828459045 ** row["val_loss"])
