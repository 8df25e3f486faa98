"""What a reproduction of a run needs besides its checkpoint: the spec's files as they were read,
and the facts of each process that trained it (versions, platform, device, threads, command line,
the spec's git commit). :class:`~kdsl.training.rundir.RunDir` writes them as ``spec/`` and
``environment.json``.

The git commit is read from the ``.git`` directory next to the spec (HEAD, a loose ref or
packed-refs), without running git: a spec outside a repository, or a repository this cannot read
(a worktree, a submodule), records ``null``, silently. Only regular files are read there, each
with a size bound: a FIFO or a device named ``HEAD`` never blocks a run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from kdsl.catalog.settings import RECORDED
from kdsl.core.files import read_regular_file
from kdsl.lang import ir

ENVIRONMENT_FORMAT = "kdsl-environment/1"
PACKED_REFS_LIMIT = 16 * 1024 * 1024  # a large repository's packed-refs runs to a few MB


def spec_files(spec: ir.Spec) -> Dict[str, bytes]:
    """The spec and every file it includes, as they were read: ``{path under spec/: bytes}``. Paths
    are relative to the spec's folder; a ``..`` step (an include above it) becomes ``_up``, so
    that every file stays under ``spec/``. A spec loaded from text is ``spec/inline.kd``."""
    if spec.file.startswith("<"):
        main = "inline.kd"
        root = os.getcwd()
    else:
        main, root = os.path.basename(spec.file), os.path.dirname(os.path.abspath(spec.file))
    texts = spec.sources
    out: Dict[str, bytes] = {}
    for path in (spec.file, *spec.includes):
        text = texts.get(path)
        if text is None:
            continue
        if path == spec.file:
            name = main
        else:
            rel = os.path.relpath(os.path.abspath(path), root)
            name = os.path.join(*[("_up" if part == ".." else part) for part in rel.split(os.sep)])
        out.setdefault(name, text.encode("utf-8"))
    return out


def record_start(run_dir, spec: ir.Spec, cfg, device, resumed: bool) -> None:
    """spec/ (a new run's files; a resumed run keeps its own) and this process's session in
    environment.json: once the run is known to start (a refused resumption records nothing)."""
    run_dir.write_spec(spec_files(spec), replace=not resumed)
    run_dir.record_session(session(cfg, device, resumed, spec.file), fresh=not resumed)


def session(cfg, device, resumed: bool, spec_file: str) -> Dict[str, Any]:
    """The facts of this process's part of a run (one entry of environment.json's ``sessions``)."""
    import torch

    facts: Dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": resumed,
        "argv": list(sys.argv), "cwd": os.getcwd(),
        "kdsl": _kdsl_version(), "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "machine": platform.machine(), "hostname": platform.node(),
        "device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "world_size": int(os.environ.get("WORLD_SIZE", "1") or 1),
        "settings": {k: cfg.describe().get(k) for k in RECORDED},  # the table's `recorded` settings
        "git": git_commit(spec_file),
    }
    if device.type == "cuda":
        facts["cuda"] = {"version": torch.version.cuda, "gpu": torch.cuda.get_device_name(device)}
    return facts


def _kdsl_version() -> str:
    """The installed distribution's version (the package metadata, which pyproject.toml sets)."""
    from importlib import metadata

    try:
        return metadata.version("kdsl")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def git_commit(path: str) -> Optional[Dict[str, Any]]:
    """``{"commit": SHA, "branch": NAME or None, "root": DIR}`` of the git repository holding
    ``path``, read from its ``.git`` folder; None when there is none or it cannot be read."""
    if path.startswith("<"):
        return None
    here = os.path.dirname(os.path.abspath(path))
    while True:
        git = _git_dirs(os.path.join(here, ".git"))
        if git is not None:
            commit, branch = _head(*git)
            return {"commit": commit, "branch": branch, "root": here} if commit else None
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _git_dirs(dot_git: str) -> Optional[Tuple[str, str]]:
    """(folder holding HEAD, folder holding the refs) of a repository's ``.git``: the same folder,
    or, for a linked worktree or a submodule, where its ``.git`` file's ``gitdir:`` line points
    (and that folder's ``commondir``); None when ``dot_git`` is neither."""
    if os.path.isdir(dot_git):
        return dot_git, dot_git
    pointer = _read(dot_git)
    if pointer is None or not pointer.startswith("gitdir: "):
        return None
    head_dir = os.path.join(os.path.dirname(dot_git), pointer[len("gitdir: "):].strip())
    if not os.path.isdir(head_dir):
        return None
    common = _read(os.path.join(head_dir, "commondir"))
    return head_dir, os.path.normpath(os.path.join(head_dir, common)) if common else head_dir


def _head(head_dir: str, git: str):
    """(commit, branch) of a repository's HEAD (in ``head_dir``; refs in ``git``); (None, None)
    when it cannot be read."""
    head = _read(os.path.join(head_dir, "HEAD"))
    if head is None:
        return None, None
    if not head.startswith("ref: "):
        return (head if _is_sha(head) else None), None  # a detached HEAD
    ref = head[5:].strip()
    branch = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
    loose = _read(os.path.join(git, *ref.split("/")))
    if loose is not None and _is_sha(loose):
        return loose, branch
    for line in (_read(os.path.join(git, "packed-refs"), PACKED_REFS_LIMIT) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == ref and _is_sha(parts[0]):
            return parts[0], branch
    return None, branch


def _read(path: str, limit: int = 4096) -> Optional[str]:
    """A git file's text: only a regular file, and at most ``limit`` bytes (anyone can make
    ``/tmp/.git/HEAD`` a FIFO, which a plain open would wait on forever)."""
    data = read_regular_file(path, limit)
    return None if data is None else data.decode("utf-8", errors="replace").strip()


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def environment_record(previous: Optional[Dict[str, Any]], facts: Dict[str, Any]) -> Dict[str, Any]:
    """environment.json's content: the sessions of ``previous`` (what the file held, if it is
    one of ours) with ``facts`` appended; the first session's facts are the run's."""
    sessions: List[Dict[str, Any]] = []
    if isinstance(previous, dict) and previous.get("format") == ENVIRONMENT_FORMAT \
            and isinstance(previous.get("sessions"), list):
        sessions = [s for s in previous["sessions"] if isinstance(s, dict)]
    sessions.append(facts)
    return {"format": ENVIRONMENT_FORMAT, "sessions": sessions}
