"""What drawing curves.png costs the main job: the share of a run's time spent in
``RunDir.write_curves``, for this tree and (``--baseline DIR``) another.

    python bench/curves_cost.py [--baseline DIR] [--epochs 30] [SPEC]

Each tree trains ``SPEC`` (default specs/digits/kd.kd) in a fresh process with ``--threads 1``,
timing every call of ``write_curves`` with the process's CPU time (``time.process_time``: steadier
than wall time on a machine busy with other work) and its wall time. ``--baseline DIR`` is a
checkout of another kdsl (``git archive REV | tar -x -C DIR``) put first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import torch
import kdsl
from kdsl.training.rundir import RunDir

spent = {"calls": 0, "cpu": 0.0, "wall": 0.0}
real = RunDir.write_curves

def timed(self, *args, **kwargs):
    c, w = time.process_time(), time.perf_counter()
    try:
        return real(self, *args, **kwargs)
    finally:
        spent["calls"] += 1
        spent["cpu"] += time.process_time() - c
        spent["wall"] += time.perf_counter() - w

RunDir.write_curves = timed
spec, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
c, w = time.process_time(), time.perf_counter()
result = kdsl.train(spec, out=out, epochs=epochs, threads=1)
spent.update(run_cpu=time.process_time() - c, run_wall=time.perf_counter() - w, top1=result.final.get("top1"))
print(json.dumps(spent))
"""


def measure(tree: str, spec: str, epochs: int) -> dict:
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", CHILD, spec, os.path.join(tmp, "run"), str(epochs)],
                              cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/digits/kd.kd")
    parser.add_argument("--baseline", help="another kdsl tree to measure first")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    trees = ([("baseline", os.path.abspath(args.baseline))] if args.baseline else []) + [("this tree", ROOT)]
    with open("/proc/loadavg") as fh:
        print(f"load average at start: {fh.read().split()[0]}")
    for name, tree in trees:
        m = measure(tree, args.spec, args.epochs)
        print(f"{name}: run {m['run_wall']:.1f} s wall, {m['run_cpu']:.1f} s CPU; curves.png drawn {m['calls']} "
              f"times, {m['wall']:.1f} s wall, {m['cpu']:.1f} s CPU ({100 * m['cpu'] / m['run_cpu']:.0f}% of the "
              f"run's CPU); final top-1 {m['top1']:.2f}%")


if __name__ == "__main__":
    main()
