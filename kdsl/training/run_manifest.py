"""``kdsl-run.json``, the manifest of a run directory: every path kdsl wrote there, which is what
makes the directory kdsl's (see :mod:`kdsl.training.rundir`). kdsl removes only paths it lists,
and never replaces a file it does not list."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from typing import Callable, List, Optional, Set

from kdsl.core.diagnostics import error

MANIFEST = "kdsl-run.json"
MANIFEST_FORMAT = "kdsl-run-files/1"
# what a run directory of a kdsl from before the manifest holds (adopted when it is used again)
_RUN_FILES = ("checkpoint.pt", "student.pt", "best.pt", "metrics.jsonl", "metrics.csv", "curves.png",
              "summary.json", "environment.json")
_RUN_FOLDERS = ("models", "connectors", "spec", "tensorboard")
# the names of the files that carry their writer's pid: an atomic write's temporary file
# (NAME.tmp-PID) and the directory's writability probe (.write-test-PID)
TEMPORARY = re.compile(r"\.tmp-(\d+)$")
PROBE = ".write-test"
_PROBE_OF = re.compile(rf"^{re.escape(PROBE)}-(\d+)$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (also for the sweeps' trials)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def writer_gone(pid: int) -> bool:
    """Whether a file named with ``pid`` is a leftover: its writer is dead, or it is this process,
    which has none in the making wherever this is asked."""
    return pid == os.getpid() or not process_alive(pid)


def _left_by_a_killed_start(name: str) -> bool:
    """Whether ``name`` is what a kdsl process killed as it started a run left in a directory with
    no manifest yet: the manifest's temporary file (killed while writing its first version) or
    the writability probe."""
    m = TEMPORARY.search(name)
    if m is None or name[:m.start()] != MANIFEST:
        m = _PROBE_OF.match(name)
    return m is not None and writer_gone(int(m.group(1)))


def relative(name: str) -> str:
    """A run file's name in the manifest: '/'-separated, relative to the run directory; a folder
    owned as a whole ends with '/'."""
    folder = name.endswith(("/", os.sep))
    return os.path.normpath(name).replace(os.sep, "/") + ("/" if folder else "")


def _inside(name: str) -> bool:
    """Whether a manifest entry names a path inside the run directory (a hand-edited '../x' or
    '/etc/x' is never removed)."""
    return bool(name) and not os.path.isabs(name) and ".." not in name.split("/") and name != MANIFEST


class RunManifest:
    """The manifest of the run directory ``folder``; ``write(path, bytes)`` writes it atomically.
    ``paths`` is None until it is read or started."""

    def __init__(self, folder: str, write: Callable[[str, bytes], None]) -> None:
        self.folder, self.write = folder, write
        self.paths: Optional[Set[str]] = None

    def file(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def read(self) -> None:
        """The paths listed (None: the directory is missing or empty); KD706 for a non-empty
        directory that kdsl did not make, or a manifest that is not kdsl's."""
        names = os.listdir(self.folder) if os.path.isdir(self.folder) else []
        if MANIFEST not in names:
            # a run killed before its manifest's first rename left a directory that is still empty
            names = [n for n in names if not _left_by_a_killed_start(n)]
            if names and "checkpoint.pt" not in names:
                raise error("KD706", f"--out {self.folder} is not empty and is not a kdsl run directory "
                            f"(it has no {MANIFEST}); refusing to write into it",
                            hint="kdsl writes only into a new or empty directory or one of its own runs: "
                            "pass another --out")
            self.paths = self._legacy(names) if names else None  # a run of a kdsl before the manifest
            return
        try:
            with open(self.file(MANIFEST), "rb") as fh:
                record = json.loads(fh.read(1 << 24))
            written = record["written"] if record.get("format") == MANIFEST_FORMAT else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            written = None
        if not isinstance(written, list) or not all(isinstance(w, str) and _inside(w) for w in written):
            raise error("KD706", f"{self.file(MANIFEST)} is not a kdsl run manifest; refusing to write into "
                        f"{self.folder}", hint="it is written by kdsl train, not by hand: pass another --out")
        self.paths = set(written)

    def _legacy(self, names: List[str]) -> Set[str]:
        owned = {n for n in names if n in _RUN_FILES}
        for folder in _RUN_FOLDERS:
            for root, _, files in os.walk(self.file(folder)):
                owned |= {relative(os.path.join(os.path.relpath(root, self.folder), f)) for f in files}
        return owned

    def owns(self, name: str) -> bool:
        return relative(name) in (self.paths or ())

    def add(self, name: str) -> str:
        """List ``name`` (before it is first written); its path. KD706 when a file kdsl did not
        write is in its place."""
        name = relative(name)
        if self.paths is None:
            self.paths = set()
        if name not in self.paths:
            if os.path.lexists(self.file(name)):
                raise error("KD706", f"{self.file(name)} was not written by kdsl; refusing to replace it",
                            hint="move it out of the run directory, or pass another --out")
            self.paths.add(name)
            self.save()
        return self.file(name)

    def discard(self, name: str) -> None:
        if self.paths is not None and relative(name) in self.paths:
            self.paths.discard(relative(name))
            self.save()

    def save(self) -> None:
        record = {"format": MANIFEST_FORMAT, "written": sorted(self.paths or ())}
        self.write(self.file(MANIFEST), json.dumps(record, indent=1).encode())

    def clear(self) -> None:
        """Remove every path listed, and the folders that held only them; the list is then empty."""
        folders = set()
        for name in sorted(self.paths or ()):
            if name.endswith("/"):
                shutil.rmtree(self.file(name), ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.file(name))
            parts = name.rstrip("/").split("/")[:-1]
            folders |= {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        for folder in sorted(folders, key=len, reverse=True):  # innermost first; a non-empty one stays
            with contextlib.suppress(OSError):
                os.rmdir(self.file(folder))
        self.paths = set()

    def delete(self) -> None:
        """Remove the manifest itself (after :meth:`clear`: the directory is no longer a run's)."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file(MANIFEST))
        self.paths = None
