"""The teacher-output store on the language-model job: disk per token, epoch time with and without
the store, and what keeping only the top-k teacher logits costs in the student's perplexity.

    python bench/lm_store.py [--topk 16] [--seed 0]

Builds a float32 store and a top-k store of ``specs/lm/kd.kd``'s teacher logits (``kdsl
teacher-cache``), then trains the student three times with the same seed (one thread each): with
the teacher run every step, from the float32 store, and from the top-k store. Prints each store's
bytes per token, each run's epoch time (training and validation), and validation perplexity; the
float32 store's run must equal the run without a store exactly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kdsl  # noqa: E402
from kdsl.training.teacher_store_build import build_store  # noqa: E402

SPEC = os.path.join(ROOT, "specs", "lm", "kd.kd")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topk", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        stores = {}
        for name, form in (("float32", {}), (f"top{args.topk}", {"topk": args.topk})):
            stores[name] = os.path.join(work, name)
            t0 = time.perf_counter()
            manifest = build_store(SPEC, out=stores[name], threads=1, seed=args.seed, **form)
            tokens = manifest["samples"] * manifest["epochs"] * 64  # seq_len=64 in the spec
            per_token = f", {manifest['bytes'] / tokens:.1f} bytes per token"
            print(f"store {name}: {manifest['bytes']:,} bytes{per_token}, built in {time.perf_counter() - t0:.1f} s")
        runs = {"teacher every step": {}, "float32 store": {"teacher_cache": stores["float32"]},
                f"top-{args.topk} store": {"teacher_cache": stores[f"top{args.topk}"]}}
        for name, extra in runs.items():
            r = kdsl.train(SPEC, out=os.path.join(work, name.replace(" ", "_")), overwrite=True, threads=1,
                           seed=args.seed, eval_teachers=False, **extra)
            row = r.history[-1]
            print(f"{name}: epoch {row['time_s']:.1f} s, val ppl {row['val_ppl']:.4f}, "
                  f"token acc {row['val_token_acc']:.2f}%, train/kd {row['train/kd']:.6f}")


if __name__ == "__main__":
    main()
