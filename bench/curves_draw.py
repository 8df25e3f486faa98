"""CPU seconds of one drawing of curves.png (``plot_curves``), for this tree and (``--baseline DIR``)
another, on the histories of tests/train/test_curves.py: a 1-epoch language model, 30 epochs of
digits. Both trees' ``kdsl/training/curves.py`` load into one process and draw in turn, so that the
machine's load weighs on both alike; each figure is the least CPU time of ``--repeat`` drawings.

    python bench/curves_draw.py [--baseline DIR] [--repeat 7]

``DIR`` is a checkout of another kdsl (``git archive REV | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEACHERS = {"teacher": {"top1": 99.0, "ppl": 6.567}}


def _lm(n):
    return [{"epoch": e, "stage": "main", "lr": 0.0 if e == n else 0.003 / e, "train_loss": 2.0 / e,
             "train/kd": 0.5 / e, "train/task": 1.5 / e, "val_loss": 1.8 / e, "val_ppl": 6.0 + 1 / e,
             "val_token_acc": 40.0 + e} for e in range(1, n + 1)]


def _digits(n):
    return [{"epoch": e, "stage": "main", "lr": 0.05 / e, "train_loss": 10.0 / e ** 2, "train/kd": 9.9 / e ** 2,
             "train/task": 0.1 / e ** 2, "val_top1": 50.0 + e, "val_top5": 90.0 + e, "val_loss": 1.0 / e}
            for e in range(1, n + 1)]


def _load(tree: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(tree, "kdsl", "training", "curves.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="another kdsl tree to compare with")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    trees = ([("baseline", _load(os.path.abspath(args.baseline), "curves_baseline"))] if args.baseline else []) + \
        [("this tree", _load(ROOT, "curves_here"))]
    histories = {"lm 1 epoch": _lm(1), "digits 30 epochs": _digits(30)}
    for _, module in trees:  # matplotlib's import and first-use caches: not a drawing's cost
        module.plot_curves(_digits(3), TEACHERS, 0.003)
    best = {(t, h): float("inf") for t, _ in trees for h in histories}
    for _ in range(args.repeat):
        for h, history in histories.items():
            for t, module in trees:
                start = time.process_time()
                module.plot_curves(history, TEACHERS, 0.003)
                best[t, h] = min(best[t, h], time.process_time() - start)
    with open("/proc/loadavg") as fh:
        print(f"load average: {fh.read().split()[0]}")
    for h in histories:
        print(f"{h}: " + ", ".join(f"{t} {best[t, h]:.3f} s" for t, _ in trees))


if __name__ == "__main__":
    main()
