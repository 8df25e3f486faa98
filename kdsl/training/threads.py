"""How many CPU threads torch uses for a run, and why: one rule for every command that runs models
(``kdsl train``, ``kdsl teacher-cache``, ``kdsl.train``, ``--eval-only``).

torch starts one intra-op thread per core. A small model's operations are too short to split
usefully, so more threads only wait for each other. When neither the caller (``--threads``,
``threads=``), the spec (``threads = N``) nor the environment (``OMP_NUM_THREADS``) says, kdsl
chooses (:func:`choose_threads`):

    cores    = usable cores, shared among the processes of this machine under torchrun
    size cap = 2 threads under 1M parameters (student + teachers), 4 under 10M, else none
    threads  = min(cores, size cap), at least 1

The rule never reads the machine's momentary load: the thread count changes the order of
floating-point sums, so a load-dependent count made the same command and seed end at different
accuracies (99.44% against 99.16%, issue #27.4). On a machine busy with other work, fewer threads
run faster: give ``--threads 1`` (or ``OMP_NUM_THREADS=1``); a seed then reproduces with the same
count.

The choice and its reason ("auto: 2 cores, 60.4k params") are recorded as the ``threads``
setting and its source in the run's config (summary.json, environment.json). The rule is a pure
function of its inputs; only :func:`apply_threads` touches torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Tuple

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
                   params: int, local_processes: int = 1) -> ThreadChoice:
    """The thread count of a run (see the module's docstring for the rule).

    ``given`` is the ``threads`` setting (None: not set) and ``given_source`` where it was set
    ("flag" or "spec"); ``env`` the environment; ``cores`` the cores this process may use;
    ``params`` the parameters of the student and the teachers; ``local_processes`` the processes
    of this run on this machine (torchrun's LOCAL_WORLD_SIZE).
    """
    if given is not None:
        return ThreadChoice(given, given_source)
    omp = omp_threads(env)
    if omp is not None:
        return ThreadChoice(omp, "OMP_NUM_THREADS")
    cores = max(1, cores)
    share = max(1, cores // max(1, local_processes))
    cap = next((most for below, most in SIZE_CAPS if params < below), None)
    threads = max(1, min(share, cap) if cap is not None else share)
    cores_text = f"{cores} core{'s' if cores != 1 else ''}"
    return ThreadChoice(threads, f"auto: {cores_text}, {_short_count(params)} params")


def machine_facts() -> Tuple[int, int]:
    """(cores this process may use, processes of this run on this machine)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return cores, int(local) if local.isdigit() and int(local) > 0 else 1


def apply_threads(cfg, models: Iterable) -> ThreadChoice:
    """Set torch's thread count for a run of ``models`` (torch modules: the student and the
    teachers) by :func:`choose_threads`, and record it as ``cfg``'s ``threads`` setting and its
    source (summary.json and environment.json show both)."""
    import torch

    params = sum(p.numel() for p in {id(p): p for m in models for p in m.parameters()}.values())
    cores, local = machine_facts()
    choice = choose_threads(cfg.threads, cfg.sources.get("threads", "flag"), os.environ, cores, params, local)
    torch.set_num_threads(choice.threads)
    cfg.threads, cfg.sources["threads"] = choice.threads, choice.source
    return choice
