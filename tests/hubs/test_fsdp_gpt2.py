"""`kdsl train --strategy fsdp` on Hugging Face GPT-2 models (issue 21): tiny GPT2LMHeadModels
saved with save_pretrained into a temporary folder and loaded by path (kdsl.hub:hf_pretrained).
KD + hint through a connector + a delivery of the teacher's attention outputs into the student's
attention calls: 2 CPU processes (gloo; tests/forked.run_ranks, torchrun's environment) with
FSDP2 give the losses of one process with the same global batch, within 1e-5 relative (float32
sums in another order). Dropout is off in the configs: each process draws its own masks."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from forked import run_ranks

pytestmark = pytest.mark.slow(seconds=8)


@pytest.fixture(scope="module", autouse=True)
def transformers_installed():
    """The file's test skips, saying why, where transformers is missing: imported as it runs, not
    as every pytest-xdist worker collects the file (as tests/hubs/test_lora.py)."""
    return pytest.importorskip("transformers")

FSDP_TESTS = Path(__file__).resolve().parents[1] / "fsdp"
REL = 1e-5

SPEC = """
student = model("kdsl.hub:hf_pretrained", path="{student}")
teacher = model("kdsl.hub:hf_pretrained", path="{teacher}")

deliver output of method "transformers.models.gpt2.modeling_gpt2:GPT2Attention.forward" from teacher to student keep 2

record s_h1  = output of student.transformer.h.1
record t_h1  = output of teacher.transformer.h.1
record s_out = output of student
record t_out = output of teacher

connector w_h = linear()

loss kd   = token_kl(s_out.logits, t_out.logits, mask=batch.attention_mask, labels=batch.labels, tau=2, shift=true) * 0.5
loss hint = hidden_mse(w_h(s_h1), t_h1, mask=batch.attention_mask)
loss task = model_loss(s_out.loss) * 0.5

train {{
  inputs = ["input_ids", "attention_mask", "labels"]
  epochs = 1
  steps_per_epoch = 6
  optimizer = adamw(lr=0.01, weight_decay=0.01)
  grad_clip = 0.5
  eval_teachers = false
  seed = 0
  strategy = "fsdp"
}}
"""


def _helpers():
    """tests/fsdp/fsdp_helpers.py (a folder of tests, not a package): the corpus."""
    if "fsdp_helpers" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fsdp_helpers", FSDP_TESTS / "fsdp_helpers.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["fsdp_helpers"] = module
    return sys.modules["fsdp_helpers"]


def _save_gpt2(folder: Path, seed: int) -> str:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=256, n_positions=32,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder.as_posix()


def _rows(run: Path):
    rows = json.loads((run / "summary.json").read_text())["history"]
    return [{k: v for k, v in row.items() if k not in ("time_s", "lr", "step", "stage", "epoch")} for row in rows]


def test_fsdp_on_hf_gpt2_equals_one_process(tmp_path):
    import kdsl

    helpers = _helpers()
    spec = tmp_path / "gpt2_fsdp.kd"
    spec.write_text(SPEC.format(student=_save_gpt2(tmp_path / "student", 0), teacher=_save_gpt2(tmp_path / "teacher", 1)))
    data = helpers.corpus(tmp_path)
    code, out, err = run_ranks("train", str(spec), "--data", data, "--out", str(tmp_path / "fsdp"))
    assert code == 0, (out + err)[-3000:]
    assert "2 processes" in out
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            env.delenv(key, raising=False)
        kdsl.train(str(spec), out=str(tmp_path / "single"), data=data.replace("batch_size=4", "batch_size=8"), threads=1)
    got, expected = _rows(tmp_path / "fsdp"), _rows(tmp_path / "single")
    assert len(got) == len(expected) == 1 and got[0].keys() == expected[0].keys()
    for key, value in expected[0].items():
        assert got[0][key] == pytest.approx(value, rel=REL), key
