"""``kdsl teacher-cache SPEC --out DIR``: run the frozen teachers once and store their records
(:mod:`kdsl.training.teacher_store_build`), for ``kdsl train SPEC --teacher-cache DIR``."""

from __future__ import annotations

import enum
import os
from typing import List, Optional

import typer

from kdsl.cli.errors import CliError, guarded
from kdsl.cli.options import MODEL, STUDENT, TEACHER, TEACHER_CKPT
from kdsl.cli.render import echo


class StoreDtype(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"


def teacher_cache(
    spec: str = typer.Argument(..., metavar="SPEC", help="the spec file"),
    out: str = typer.Option(..., "--out", help="the store's directory"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, max=100_000,
                                         help="epochs to store when the data is augmented (default: the spec's); "
                                         "data without randomness stores one, which serves every epoch"),
    dtype: StoreDtype = typer.Option(StoreDtype.float32, "--dtype",
                                     help="float32 (training is bit-exact) or float16 (half the size)"),
    topk: Optional[int] = typer.Option(None, "--topk", min=1,
                                       help="keep the K largest logits of logit records (the rest: one shared value)"),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="refuse a larger store before writing, "
                                           "e.g. 500M, 2G"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the store in --out (built beside it and "
                                   "swapped in; only the store's own files are removed)"),
    data: Optional[str] = typer.Option(None, "--data", help="the data, as kdsl train --data"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="as kdsl train --batch-size"),
    seed: Optional[int] = typer.Option(None, "--seed", help="as kdsl train --seed (it picks the augmentations)"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch's CPU threads"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto"),
    amp: Optional[str] = typer.Option(None, "--amp", help="bf16 or fp16, as the training run will use"),
    student: Optional[str] = STUDENT, teacher: Optional[str] = TEACHER, model: List[str] = MODEL,
    teacher_ckpt: Optional[str] = TEACHER_CKPT,
) -> None:
    """Run SPEC's frozen teachers over its training data once and store what its records take
    from them, for `kdsl train SPEC --teacher-cache DIR` (which then skips the teachers' passes).

    The store holds a fingerprint of the teachers' weights, the spec's teacher records, the data,
    its augmentation and the seed, a digest of every sample's input and a checksum of every chunk
    of its files; a run that differs in any of them, or a store altered since, is refused.
    """
    if not os.path.isfile(spec):
        raise CliError(f"no such spec file: {spec}", "KD401")
    from kdsl.training.teacher_store_build import build_store
    from kdsl.training.teacher_store_format import parse_size

    limit = parse_size(max_size) if max_size is not None else None
    settings = {"data": data, "batch_size": batch_size, "seed": seed, "threads": threads, "device": device,
                "amp": amp}
    build_store(spec, out=out, epochs=epochs, dtype=dtype.value, topk=topk, max_size=limit, overwrite=overwrite,
                student=student, teacher=teacher, models=list(model), teacher_ckpt=teacher_ckpt,
                progress=echo, **{k: v for k, v in settings.items() if v is not None})


def register(app: typer.Typer) -> None:
    """Add ``teacher-cache`` to the application."""
    app.command("teacher-cache")(guarded(teacher_cache))
