"""pytest plugin: where the suite's CPU goes, per file and per test.

    python -m pytest -p tools.cpu_table [ARGS]

On a busy 2-core machine the suite's wall time is about its CPU time, so CPU is what to cut, and
wall times of single tests mislead. Each test is charged the CPU of its worker process and of the
processes it started and waited for: subprocesses, and the children of tests/forked.py's fork
server, which report their own (``forked.CPU_SECONDS``; a child killed by SIGKILL reports
nothing). What a worker spent outside tests (its start, imports, collecting every file) is one
line of its own. Works with and without pytest-xdist.
"""

from __future__ import annotations

import collections
import resource
import sys
import time
from typing import Dict, List, Tuple

import pytest

Row = Tuple[str, float, float, float]  # test id, own CPU s, children's CPU s, wall s
_rows: List[Row] = []
_outside: Dict[str, float] = {}  # worker -> CPU s outside tests
SHOWN = 25


def _cpu() -> Tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    forked = sys.modules.get("forked")
    forked_cpu = forked.CPU_SECONDS[0] if forked is not None and hasattr(forked, "CPU_SECONDS") else 0.0
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime + forked_cpu


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own, children = _cpu()
    start = time.perf_counter()
    yield
    own_after, children_after = _cpu()
    _rows.append((item.nodeid, own_after - own, children_after - children, time.perf_counter() - start))


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its rows go to the controller
        own, children = _cpu()
        workeroutput["cpu_table_rows"] = _rows
        workeroutput["cpu_table_outside"] = own + children - sum(r[1] + r[2] for r in _rows)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    _rows.extend(tuple(row) for row in output.get("cpu_table_rows", []))
    if "cpu_table_outside" in output:
        _outside[output.get("workerid", str(len(_outside)))] = output["cpu_table_outside"]


def pytest_terminal_summary(terminalreporter, config):
    if getattr(config, "workeroutput", None) is not None or not _rows:
        return
    write = terminalreporter.write_line
    files: Dict[str, List[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for test, own, children, wall in _rows:
        total = files[test.split("::")[0]]
        total[0] += own
        total[1] += children
        total[2] += wall
        total[3] += 1
    in_tests = sum(own + children for _, own, children, _ in _rows)
    outside = sum(_outside.values())
    write(f"cpu_table: {in_tests + outside:.0f} CPU s: {in_tests:.0f} in {len(_rows)} tests, "
          f"{outside:.0f} in the workers outside tests (start, imports, collection)")
    write("  CPU s = own + children    wall s  tests  file")
    ranked = sorted(files.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
    for name, (own, children, wall, count) in ranked[:SHOWN]:
        write(f"  {own + children:6.1f} = {own:5.1f} + {children:5.1f}  {wall:7.1f}  {count:5d}  {name}")
    rest = ranked[SHOWN:]
    if rest:
        write(f"  {sum(v[0] + v[1] for _, v in rest):6.1f} in the other {len(rest)} files")
    write("  costliest tests:")
    for test, own, children, _ in sorted(_rows, key=lambda r: -(r[1] + r[2]))[:SHOWN]:
        write(f"  {own + children:6.1f} = {own:5.1f} + {children:5.1f}  {test}")
