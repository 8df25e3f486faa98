"""``kdsl teacher-cache SPEC --out DIR``: run the frozen teachers once and store their records
(:mod:`kdsl.training.teacher_store_build`), for ``kdsl train SPEC --teacher-cache DIR``."""

from __future__ import annotations

import enum
import os
from typing import Any, List, Optional

import typer

from kdsl.cli.errors import CliError, guarded
from kdsl.cli.options import MODEL, STUDENT, TEACHER, TEACHER_CKPT, given_settings, with_setting_flags
from kdsl.cli.render import echo


class StoreDtype(str, enum.Enum):
    float32 = "float32"
    float16 = "float16"


# The flags that are not training settings (those come from the table: with_setting_flags).
_FIXED = [
    ("spec", str, typer.Argument(..., metavar="SPEC", help="the spec file")),
    ("out", str, typer.Option(..., "--out", help="the store's directory")),
    ("dtype", StoreDtype, typer.Option(StoreDtype.float32, "--dtype",
                                       help="float32 (training is bit-exact) or float16 (half the size)")),
    ("topk", Optional[int], typer.Option(None, "--topk", min=1, help="keep the K largest logits of logit "
                                         "records (the rest: one shared value)")),
    ("max_size", Optional[str], typer.Option(None, "--max-size", help="refuse a larger store before writing, "
                                             "e.g. 500M, 2G")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="replace the store in --out (built "
                                     "beside it and swapped in; only the store's own files are removed)")),
    ("student", Optional[str], STUDENT),
    ("teacher", Optional[str], TEACHER),
    ("model", List[str], MODEL),
    ("teacher_ckpt", Optional[str], TEACHER_CKPT),
]
# where a setting means something else here than in `kdsl train`
_HELP = {"epochs": "epochs to store when the data is augmented (default: the spec's); data without "
                   "randomness stores one, which serves every epoch",
         "seed": "as kdsl train --seed (it picks the augmentations)",
         "amp": "bf16 or fp16, as the training run will use"}


def teacher_cache(spec: str, out: str, dtype: StoreDtype, topk: Optional[int], max_size: Optional[str],
                  overwrite: bool, student: Optional[str], teacher: Optional[str], model: List[str],
                  teacher_ckpt: Optional[str], **settings: Any) -> None:
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
    build_store(spec, out=out, dtype=dtype.value, topk=topk, max_size=limit, overwrite=overwrite,
                student=student, teacher=teacher, models=list(model), teacher_ckpt=teacher_ckpt,
                progress=echo, **given_settings(settings))


with_setting_flags(teacher_cache, "teacher-cache", _FIXED, _HELP)


def register(app: typer.Typer) -> None:
    """Add ``teacher-cache`` to the application."""
    app.command("teacher-cache")(guarded(teacher_cache))
