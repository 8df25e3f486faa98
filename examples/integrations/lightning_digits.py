"""A kdsl spec as a LightningModule (kdsl.integrations.lightning) on digits, on CPU in seconds.

    python examples/integrations/lightning_digits.py --out runs/pl_digits              # one process
    python examples/integrations/lightning_digits.py --out runs/pl_ddp --devices 2     # DDP, 2 processes

specs/digits/kd.kd (Hinton KD; the teacher from the spec's teacher.pt) under ``L.Trainer``: the
spec's optimizer and cosine schedule, kdsl's data order, kdsl's terms in Lightning's CSV log
(OUT/lightning_logs/version_0/metrics.csv), the student's weights in OUT/student.pt at the end.
With ``--devices 2`` Lightning's launcher starts the second process (gloo) and each reads its
shard of the data. Needs ``pip install 'kdsl[lightning]'``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
KD_SPEC = ROOT / "specs" / "digits" / "kd.kd"


def digits_module(student=None, **settings):
    from kdsl.integrations.lightning import DistillationModule

    if student is None:
        from kdsl.zoo import digits_cnn

        torch.manual_seed(0)
        student = digits_cnn()
    return DistillationModule(str(KD_SPEC), student, **settings)


def trainer(out: str, epochs: int, steps: int, devices: int = 1):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    return pl.Trainer(max_epochs=epochs, limit_train_batches=steps, accelerator="cpu", devices=devices,
                      strategy="ddp" if devices > 1 else "auto", use_distributed_sampler=False,
                      logger=CSVLogger(out, name="lightning_logs"), default_root_dir=out, log_every_n_steps=1,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/pl_digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--devices", type=int, default=1)
    a = parser.parse_args()
    torch.set_num_threads(1)
    module = digits_module()
    run = trainer(a.out, a.epochs, a.steps, a.devices)
    run.fit(module)
    student = module.distiller.student
    if run.global_rank == 0:
        torch.save(student.state_dict(), os.path.join(a.out, "student.pt"))
    # each rank's copy, to check that DDP kept them equal
    torch.save(student.state_dict(), os.path.join(a.out, f"student.rank{run.global_rank}.pt"))
    if run.global_rank == 0:
        print({k: round(float(v), 4) for k, v in run.callback_metrics.items()})


if __name__ == "__main__":
    main()
