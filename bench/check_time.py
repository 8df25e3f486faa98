"""How long ``kdsl check SPEC`` (no models) takes per process, next to Python's own start-up.

    python bench/check_time.py [--runs 10] [--baseline DIR] [SPEC ...]

Every spec under specs/ (or the ones given) is checked in a fresh process ``--runs`` times, round
by round interleaved with ``python -c pass``, ``python -c "import pydantic, lark"`` (the floor: the
libraries a check cannot do without) and ``python -c "import kdsl"``, so that machine noise hits all
of them alike. The last line gives ``kdsl check`` over that floor (issue #27, item 5b: at most 2x). The figures are medians of the wall-clock time and of the CPU time
(user + system, from the child's rusage: steadier than wall time on a machine busy with other
work). The command is ``python -m kdsl check SPEC`` with this interpreter (a shell shim such as
pyenv's adds its own start-up, which is not kdsl's).

Every command runs from bytecode, as an installed kdsl does (pip compiles it) and as pydantic and
lark already do: where the environment sets PYTHONDONTWRITEBYTECODE (this project's sandbox does,
and its checkouts then have no __pycache__), kdsl would be compiled from source in every process
(about 20 ms) while the floor's libraries load their shipped bytecode. So the children write and
read bytecode under a temporary PYTHONPYCACHEPREFIX, after one untimed warm-up round.

``--baseline DIR`` also times the kdsl found in DIR (e.g. ``git archive HEAD | tar -x -C DIR``),
put first on PYTHONPATH, in the same rounds: before/after side by side.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOOR = "import pydantic, lark"
CHECK = "kdsl check (this tree)"
PYCACHE = os.path.join(tempfile.gettempdir(), "kdsl-check-time-pycache")


def timed(cmd: List[str], pythonpath: Optional[str] = None) -> Tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``cmd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPYCACHEPREFIX": PYCACHE}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    # run outside the checkout: `python -m` puts the working directory first on sys.path
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.sep, env=env)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = 0  # reaped by wait4 above
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="processes per command (default 10)")
    ap.add_argument("--baseline", help="a directory holding another kdsl tree to time alongside")
    ap.add_argument("specs", nargs="*", help="spec files (default: every spec under specs/)")
    args = ap.parse_args()
    specs = [os.path.abspath(s) for s in args.specs] or sorted(
        glob.glob(os.path.join(ROOT, "specs", "**", "*.kd"), recursive=True))
    py = sys.executable
    cases: Dict[str, Tuple[List[List[str]], Optional[str]]] = {
        "python -c pass": ([[py, "-c", "pass"]], None),
        FLOOR: ([[py, "-c", "import pydantic, lark"]], None),
        "python -c 'import kdsl'": ([[py, "-c", "import kdsl"]], None),
        CHECK: ([[py, "-m", "kdsl", "check", s] for s in specs], ROOT),
    }
    if args.baseline:
        cases["kdsl check (baseline)"] = ([[py, "-m", "kdsl", "check", s] for s in specs],
                                          os.path.abspath(args.baseline))
    for commands, path in cases.values():  # the warm-up round: compile and cache every module
        for cmd in commands:
            timed(cmd, path)
    times: Dict[str, List[Tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (commands, path) in cases.items():
            for cmd in commands:
                times[name].append(timed(cmd, path))
    load = "load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(f"{len(specs)} specs, {args.runs} runs each, {os.cpu_count()} CPUs, {load}")
    print(f"  {'command':<28} {'wall median':>12} {'CPU median':>12}")
    medians: Dict[str, Tuple[float, float]] = {}
    for name, runs in times.items():
        medians[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
        print(f"  {name:<28} {medians[name][0]:>10.3f} s {medians[name][1]:>10.3f} s")
    (wall, cpu), (floor_wall, floor_cpu) = medians[CHECK], medians[FLOOR]
    print(f"kdsl check over `python -c \"{FLOOR}\"`: {wall / floor_wall:.2f}x wall, {cpu / floor_cpu:.2f}x CPU")


if __name__ == "__main__":
    main()
