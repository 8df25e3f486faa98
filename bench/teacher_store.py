"""The teacher-output store on the digits job: epoch time of labels-only training (the floor), of
KD, and of KD reading a store, measured side by side in one process on one thread; the store's
size; the float16 and top-k forms' effect on the KD loss and on accuracy.

    python bench/teacher_store.py [--epochs 3] [--repeats 3]

``epoch_times`` is the reusable part (bench/teacher_cost.py can call it with other specs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from typing import Dict, List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kdsl  # noqa: E402
from kdsl.training.teacher_store_build import build_store  # noqa: E402

KD = os.path.join(ROOT, "specs", "digits", "kd.kd")
BASELINE = os.path.join(ROOT, "specs", "digits", "baseline.kd")


def epoch_times(runs: Dict[str, dict], epochs: int, repeats: int, workdir: str) -> Dict[str, float]:
    """Median seconds per training epoch of each run (``name -> kdsl.train keyword arguments``,
    ``spec`` included), the runs interleaved ``repeats`` times so that a busy machine slows them
    alike. The first epoch of each run is left out (warm-up); evaluation is not timed."""
    times: Dict[str, List[float]] = {name: [] for name in runs}
    for r in range(repeats):
        for name, args in runs.items():
            args = dict(args)
            result = kdsl.train(args.pop("spec"), out=os.path.join(workdir, f"{name}{r}"), overwrite=True,
                                epochs=epochs + 1, threads=1, eval_teachers=False, **args)
            # time_s covers the epoch's steps and its validation; the steps are what differ
            times[name] += [row["time_s"] for row in result.history[1:]]
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        stores = {}
        for name, form in (("f32", {}), ("f16", {"dtype": "float16"}), ("top3", {"topk": 3}), ("top5", {"topk": 5})):
            stores[name] = os.path.join(work, f"store_{name}")
            manifest = build_store(KD, out=stores[name], threads=1, seed=0, **form)
            print(f"store {name}: {manifest['bytes']} bytes, built in {manifest['seconds']:.2f} s")
        t = epoch_times({"labels_only": {"spec": BASELINE}, "kd": {"spec": KD},
                         "kd_store": {"spec": KD, "teacher_cache": stores["f32"]}}, args.epochs, args.repeats, work)
        print(json.dumps({k: round(v, 4) for k, v in t.items()}))
        print(f"kd / labels-only = {t['kd'] / t['labels_only']:.3f}; "
              f"kd with store / labels-only = {t['kd_store'] / t['labels_only']:.3f}")
        # the compressed forms over a full 30-epoch run: final KD loss and accuracy vs float32
        for name in ("f32", "f16", "top3", "top5"):
            r = kdsl.train(KD, out=os.path.join(work, f"full_{name}"), overwrite=True, threads=1,
                           eval_teachers=False, teacher_cache=stores[name])
            first, last = r.history[0], r.history[-1]
            print(f"{name}: epoch-1 train/kd {first['train/kd']:.6f}, final val_top1 {last['val_top1']:.2f}")


if __name__ == "__main__":
    main()
