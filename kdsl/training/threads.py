"""How many CPU threads torch uses for a run, and why.

torch starts one intra-op thread per core whatever else runs on the machine. A small model's
operations are too short to split usefully, and on a machine busy with other processes every
extra thread waits for a core: the README's main job (60k parameters) took 112 s with torch's
default on a busy 2-core machine and 13 s with one thread. So when neither the caller
(``--threads``, ``threads=``), the spec (``threads = N``) nor the environment (``OMP_NUM_THREADS``)
says, kdsl chooses (:func:`choose_threads`):

    free cores = usable cores - 1-minute load average (rounded), at least 1,
                 shared among the processes of this machine under torchrun
    size cap   = 2 threads under 1M parameters (student + teachers), 4 under 10M, else none
    threads    = min(free cores, size cap), at least 1

The choice and its reason ("auto: 2 cores, load 3.1, 60.4k params") are recorded as the
``threads`` setting and its source in the run's config (summary.json, environment.json).
Torch-free: the rule is a pure function of its inputs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

# (parameters below, most threads): small models gain nothing from more threads
SIZE_CAPS: Tuple[Tuple[int, int], ...] = ((1_000_000, 2), (10_000_000, 4))


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and where it came from: "flag", "spec", "OMP_NUM_THREADS" or "auto: ..."."""

    threads: int
    source: str


def _short_count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)


def omp_threads(env: Mapping[str, str]) -> Optional[int]:
    """OMP_NUM_THREADS as a positive int, or None when it is unset or not one."""
    text = env.get("OMP_NUM_THREADS", "").strip()
    if text.isascii() and text.isdigit() and 0 < int(text) <= 1024:
        return int(text)
    return None


def choose_threads(given: Optional[int], given_source: str, env: Mapping[str, str], cores: int,
                   load: Optional[float], params: int, local_processes: int = 1) -> ThreadChoice:
    """The thread count of a run (see the module's docstring for the rule).

    ``given`` is the ``threads`` setting (None: not set) and ``given_source`` where it was set
    ("flag" or "spec"); ``env`` the environment; ``cores`` the cores this process may use;
    ``load`` the 1-minute load average (None where the system has none); ``params`` the
    parameters of the student and the teachers; ``local_processes`` the processes of this run on
    this machine (torchrun's LOCAL_WORLD_SIZE).
    """
    if given is not None:
        return ThreadChoice(given, given_source)
    omp = omp_threads(env)
    if omp is not None:
        return ThreadChoice(omp, "OMP_NUM_THREADS")
    cores = max(1, cores)
    busy = 0 if load is None else int(math.floor(max(0.0, load) + 0.5))
    free = max(1, (cores - busy) // max(1, local_processes))
    cap = next((most for below, most in SIZE_CAPS if params < below), None)
    threads = max(1, min(free, cap) if cap is not None else free)
    load_text = "load unknown" if load is None else f"load {load:.1f}"
    cores_text = f"{cores} core{'s' if cores != 1 else ''}"
    return ThreadChoice(threads, f"auto: {cores_text}, {load_text}, {_short_count(params)} params")


def machine_facts() -> Tuple[int, Optional[float], int]:
    """(cores this process may use, 1-minute load average or None, processes of this run here)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        load: Optional[float] = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        load = None
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return cores, load, int(local) if local.isdigit() and int(local) > 0 else 1
