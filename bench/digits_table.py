"""The results table of docs/results.md: each digits spec trained with `kdsl train` over several seeds.

    python bench/digits_table.py [--seeds 5] [--out runs/table] [--epochs N] [--steps-per-epoch N]

Prints a markdown table of the final validation top-1 (mean +- std over seeds) and writes it to
OUT/table.md. Every number comes from a real `kdsl train` process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROWS = [
    ("teacher (digits_teacher, 56.6k params)", "specs/digits/teacher.kd"),
    ("student, labels only (digits_cnn, 3.8k)", "specs/digits/baseline.kd"),
    ("student + KD (Hinton, tau 4)", "specs/digits/kd.kd"),
    ("student + attention transfer", "specs/digits/at.kd"),
    ("student + FitNets hint", "specs/digits/fitnets.kd"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    # the table was measured with 2 threads: another count sums in another order, and the last
    # digits of a 30-epoch run (one validation image or two) move with it
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/table")
    parser.add_argument("--epochs", type=int, default=None, help="override the specs' epochs (quick runs)")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="stop each epoch after N batches (quick runs: a check that the table is made)")
    args = parser.parse_args()
    lines = ["| model | top-1 (%), mean +- std | seeds | per-seed top-1 |",
             "|---|---|---|---|"]
    results = {}
    for label, spec in ROWS:
        accs = []
        for seed in range(args.seeds):
            out = os.path.join(args.out, os.path.splitext(os.path.basename(spec))[0], f"seed{seed}")
            extra = ["--epochs", str(args.epochs)] if args.epochs else []
            if args.steps_per_epoch:
                extra += ["--steps-per-epoch", str(args.steps_per_epoch)]
            subprocess.run([sys.executable, "-m", "kdsl", "train", spec, "--seed", str(seed),
                            "--out", out, "--overwrite", "--threads", str(args.threads), *extra], check=True, capture_output=True, text=True)
            with open(os.path.join(out, "summary.json")) as fh:
                accs.append(json.load(fh)["student"]["top1"])
        mean, std = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        results[spec] = accs
        lines.append(f"| {label} | {mean:.2f} +- {std:.2f} | {len(accs)} | "
                     f"{', '.join(f'{a:.2f}' for a in accs)} |")
        print(lines[-1], flush=True)
    base = statistics.mean(results["specs/digits/baseline.kd"])
    for spec in ("specs/digits/kd.kd", "specs/digits/at.kd", "specs/digits/fitnets.kd"):
        lines.append(f"\n{spec}: {statistics.mean(results[spec]) - base:+.2f} points over labels only")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
