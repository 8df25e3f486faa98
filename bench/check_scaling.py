"""Check time and memory against input size, on the inputs that once were not bounded.

Each input is checked (``check_text``, then both renderers, as ``kdsl check [--format json]``
does) in a fresh process, which reports its CPU seconds and its peak resident memory; the sizes
double, so time and memory that are linear in the input double too (or stay flat once a cap is
reached). The families:

- ``closers``: N characters of ``)`` (one diagnostic each: the diagnostic caps);
- ``misspelled``: N records of 80-character names, alike but for a number, and ten misspelled
  uses (did-you-mean's budget);
- ``statements``: N record statements (the spec size limit: 512 KiB);
- ``errors``: N statements with an unknown loss each.

    python bench/check_scaling.py                    # this tree
    python bench/check_scaling.py --root /path/to/other/checkout --timeout 120   # another one

An input that takes longer than ``--timeout`` seconds is reported as such, and the larger ones of
its family are not tried.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
from typing import Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[1]

FAMILIES: Dict[str, List[int]] = {
    "closers": [62_500, 125_000, 250_000, 500_000, 1_000_000],
    "misspelled": [500, 1_000, 2_000, 4_000, 20_000],
    "statements": [1_500, 3_000, 6_000, 12_000, 100_000],
    "errors": [750, 1_500, 3_000, 6_000, 12_000],
}

CHILD = r'''
import json, resource, sys, time
family, size = sys.argv[1], int(sys.argv[2])
head = 'student = model("kdsl.zoo:digits_cnn")\nteacher = model("kdsl.zoo:digits_teacher") from "t.pt"\n'
long = lambda i: f"rec_{i:06d}_" + "x" * 69
if family == "closers":
    text = ")" * size + "\n"
elif family == "misspelled":
    text = head + "".join(f"record {long(i)} = output of student\n" for i in range(size)) \
        + "".join(f"loss l{j} = mse({long(j)[:-2]}zz, {long(j)})\n" for j in range(10))
elif family == "statements":
    text = head + "".join(f"record r{i} = output of student.conv{i % 7}\n" for i in range(size))
else:
    text = head + "loss x = nothing(a)\n" * size
from kdsl.core.diagnostics import render, to_json
from kdsl.lang.loader import check_text
start = time.process_time()
_, diags, sources = check_text(text, "bench.kd")
shown = len(render(diags, sources)) + len(to_json(diags))
seconds = time.process_time() - start
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"bytes": len(text.encode()), "seconds": seconds, "peak_mb": peak_mb,
                  "diagnostics": len(diags), "output": shown}))
'''


def measure(root: pathlib.Path, family: str, size: int, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, family, str(size)], env=env, cwd=root,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if done.returncode != 0:
        return {"failed": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}
    return json.loads(done.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per input")
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append")
    args = parser.parse_args(argv)
    print(f"{'family':<11} {'size':>9} {'bytes':>9} {'CPU s':>7} {'peak MB':>8} {'diags':>8} {'output':>8}")
    for family in args.family or list(FAMILIES):
        slow = False  # past an input that timed out, the larger ones are not tried
        for size in FAMILIES[family]:
            if slow:
                print(f"{family:<11} {size:>9} (not tried: a smaller input timed out)")
                continue
            r = measure(args.root, family, size, args.timeout)
            slow = "timeout" in r
            if "timeout" in r or "failed" in r:
                why = f"> {r['timeout']:.0f} s" if "timeout" in r else f"failed: {r['failed']}"
                print(f"{family:<11} {size:>9} {why}")
                continue
            print(f"{family:<11} {size:>9} {r['bytes']:>9} {r['seconds']:>7.2f} {r['peak_mb']:>8.0f} "
                  f"{r['diagnostics']:>8} {r['output']:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
