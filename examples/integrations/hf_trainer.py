"""A kdsl spec as the loss of a Hugging Face ``Trainer`` (kdsl.integrations.hf), on CPU in seconds.

    python examples/integrations/hf_trainer.py digits --out runs/hf_digits   # FitNets on digits
    python examples/integrations/hf_trainer.py gpt2 --out runs/hf_gpt2       # token KD, tiny GPT-2s

``digits``: specs/digits/fitnets.kd (its teacher loaded from the spec's teacher.pt, its connector
trained with the student) on scikit-learn's digits. ``gpt2``: gpt2_kd.kd between two tiny GPT-2
models built from a config, saved with ``save_pretrained`` and loaded back by path (nothing is
downloaded), on token windows of a kdsl source file. Needs ``pip install 'kdsl[hf]'``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FITNETS = ROOT / "specs" / "digits" / "fitnets.kd"
GPT2_SPEC = HERE / "gpt2_kd.kd"


class DigitsItems(torch.utils.data.Dataset):
    """kdsl's digits as dict items (``x``: the image the models take, ``target``: its label), the
    layout Hugging Face collators stack."""

    def __init__(self, split: str = "train") -> None:
        from kdsl.data import digits

        self.data = getattr(digits(), split)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i][:2]
        return {"x": x, "target": torch.as_tensor(y)}


def training_args(out: str, steps: int, **options):
    from transformers import TrainingArguments

    defaults = dict(max_steps=steps, per_device_train_batch_size=32, learning_rate=0.05, optim="sgd",
                    lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=5,
                    save_steps=steps, report_to=[], use_cpu=True, seed=0, dataloader_num_workers=0,
                    disable_tqdm=True)
    return TrainingArguments(output_dir=out, **dict(defaults, **options))


def digits_trainer(out: str, steps: int = 40, **options):
    """FitNets on digits under the Trainer: the student is a fresh digits CNN."""
    from kdsl.integrations.hf import DistillationTrainer
    from kdsl.zoo import digits_cnn

    torch.manual_seed(0)
    return DistillationTrainer(str(FITNETS), model=digits_cnn(), args=training_args(out, steps, **options),
                               train_dataset=DigitsItems())


def gpt2_models(folder: str):
    """A 1-layer student and a 2-layer teacher GPT-2, saved and loaded back by path."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    paths = {}
    for name, layers, width in (("student", 1, 32), ("teacher", 2, 64)):
        # no dropout: a run is then a function of the data order alone (the tests compare two loops)
        config = GPT2Config(n_layer=layers, n_embd=width, n_head=2, vocab_size=256, n_positions=32, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        paths[name] = os.path.join(folder, name)
        GPT2LMHeadModel(config).save_pretrained(paths[name])
    return (GPT2LMHeadModel.from_pretrained(paths["student"]),
            GPT2LMHeadModel.from_pretrained(paths["teacher"]).eval())


def text_windows(seq_len: int = 32):
    """Byte-token windows of one kdsl source file (input_ids, attention_mask, labels)."""
    from kdsl.text_data import text

    return text(ROOT / "kdsl" / "lang" / "parser.py", seq_len=seq_len).train


def gpt2_trainer(out: str, steps: int = 40, **options):
    from kdsl.integrations.hf import DistillationTrainer

    student, teacher = gpt2_models(os.path.join(out, "models"))
    options = dict(dict(optim="adamw_torch", learning_rate=3e-3, per_device_train_batch_size=8), **options)
    return DistillationTrainer(str(GPT2_SPEC), model=student, models={"teacher": teacher},
                               args=training_args(out, steps, **options), train_dataset=text_windows())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["digits", "gpt2"])
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=40)
    a = parser.parse_args()
    out = a.out or f"runs/hf_{a.task}"
    trainer = (digits_trainer if a.task == "digits" else gpt2_trainer)(out, a.steps)
    trainer.train()
    for row in trainer.state.log_history:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
    main()
