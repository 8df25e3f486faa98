"""What the teacher store's integrity checks cost, next to a training epoch from the store.

    python bench/store_integrity.py [--epochs 3] [--mib 256]

A run (1) hashes each 1 MiB chunk of each store file once, the first time it reads from it, and
(2) digests every sample's model input in every step it serves, to compare it with the store's.
Measured on the digits KD job (one thread): the epoch time from the store, the time to verify
every chunk of the store (once per run), and the time to digest one epoch's inputs (every epoch);
and the sha256 rate on a larger file (``--mib``), which bounds (1) for any store: a run hashes each
byte it reads once.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kdsl  # noqa: E402
from kdsl.training.batches import model_call  # noqa: E402
from kdsl.training.config import resolve_config  # noqa: E402
from kdsl.training.data import load_data  # noqa: E402
from kdsl.training.teacher_store import TeacherStore  # noqa: E402
from kdsl.training.teacher_store_build import build_store  # noqa: E402
from kdsl.training.teacher_store_format import input_digests  # noqa: E402

KD = os.path.join(ROOT, "specs", "digits", "kd.kd")


def _seconds(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        store = os.path.join(work, "store")
        build_store(KD, out=store, threads=1, seed=0)
        run = kdsl.train(KD, out=os.path.join(work, "run"), threads=1, epochs=args.epochs, eval_teachers=False,
                         teacher_cache=store)
        epoch = statistics.median(row["time_s"] for row in run.history[1:] or run.history)

        def verify_every_chunk() -> None:
            reader = TeacherStore(store)
            for parts in reader.arrays.values():
                for part in parts.values():
                    part.verify_all()
            reader.digests.verify_all()

        cfg = resolve_config(kdsl.load(KD), {"threads": 1})
        data = load_data(cfg, 0, 1)
        batches = list(data.train)

        def digest_one_epoch() -> None:
            for batch in batches:
                call = model_call(batch, cfg.inputs, torch.device("cpu"))
                input_digests(call.args, call.kwargs)

        chunks = _seconds(verify_every_chunk)
        digests = _seconds(digest_one_epoch)
        print(f"digits KD from the store: epoch {epoch:.3f} s (median of epochs 2..{args.epochs})")
        print(f"  verify every chunk of the store (once per run): {chunks * 1000:.2f} ms "
              f"= {chunks / epoch:.1%} of one epoch")
        print(f"  digest one epoch's inputs (every epoch, {len(batches)} batches): {digests * 1000:.2f} ms "
              f"= {digests / epoch:.1%} of the epoch")
        blob = os.urandom(1 << 20) * args.mib
        rate = _seconds(lambda: [hashlib.sha256(memoryview(blob)[i << 20:(i + 1) << 20]).digest()
                                 for i in range(args.mib)], repeats=3)
        print(f"sha256 of {args.mib} MiB in 1 MiB chunks: {rate:.3f} s ({args.mib / 1024 / rate:.2f} GiB/s): "
              "the once-per-run cost of verifying a store of that size")


if __name__ == "__main__":
    main()
