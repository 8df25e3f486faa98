"""Processes of their own for tests, without an interpreter's start and torch's import each.

A test that needs a real process (to kill it at any instant, to be one rank of a distributed run,
to run a command whose state must not leak into pytest's) used to start ``python -m kdsl``: about
two CPU seconds each on this machine before the command did anything, most of it importing torch.
Here the children are forked from multiprocessing's fork server, which imports torch and kdsl once
per pytest worker: each child starts with those modules loaded, in a process of its own (its own
pid, signals, exit code, file descriptors, module state), and runs ``kdsl`` through the same entry
point as ``python -m kdsl`` (kdsl.cli.entry.main).

What a child does not share with a fresh interpreter: the preloaded modules are already imported
(a test of what a command imports needs a fresh interpreter: tests/conftest.run_cli), and its
environment is set after those imports (what torch or kdsl read from it at import, they read from
the pytest worker's).
"""

from __future__ import annotations

import atexit
import faulthandler
import multiprocessing
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.connection import wait as wait_for_any
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
# What the server imports once; a child imports the rest of what its command needs. Beyond torch and
# kdsl's command line, what a `kdsl train` child would otherwise import each time: torch._dynamo
# (the first optimizer torch.optim builds imports it: a CPU second), FSDP's and DCP's modules (0.6 s
# in every rank of a sharded run), matplotlib's figure and Agg canvas (0.4 s, for curves.png), the
# compiler and the run's API and view (a tenth). A module not installed is left out (the server
# skips it).
PRELOAD = ["torch", "torch.distributed", "kdsl", "kdsl.cli.entry", "kdsl.cli.app", "kdsl.training.loop",
           "torch._dynamo", "torch.distributed.fsdp", "torch.distributed.checkpoint", "matplotlib.figure",
           "matplotlib.backends.backend_agg", "kdsl.compiler.compiler", "kdsl.training.api",
           "kdsl.cli.train_view"]

_context = None
CPU_SECONDS = [0.0]  # the CPU the children that ended here reported (tests/conftest's cpu table)


def context():
    """multiprocessing's fork-server context, its server preloading PRELOAD (started on first use).
    The server is the children's parent, so their CPU reaches this process's own rusage (what
    `time python -m pytest` counts) only when the server is waited for: at exit, it is."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
        atexit.register(_stop_server)
    return _context


def _stop_server() -> None:
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


def child_env(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a child (and of tests/conftest.run_cli's processes): the pytest worker's,
    without colour, ``env`` added; a key whose value is None is removed."""
    full = dict(os.environ)
    full.pop("FORCE_COLOR", None)
    full["NO_COLOR"] = "1"
    for key, value in (env or {}).items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return full


def _report_cpu(report: Path) -> None:
    """The CPU this child and its children used, written whole or not at all: a rank can be ended
    by SIGTERM at any instant, also while it writes this (a rename is atomic, a write is not)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    partial = report.with_name("cpu.partial")
    partial.write_text(repr(own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime))
    os.replace(partial, report)


def _settle(cwd: str, env: Dict[str, str], out: str, err: str) -> None:
    """In the child: stdout and stderr (the file descriptors, so that what C code and further
    children write is kept too) to ``out`` and ``err``; ``cwd`` and ``env`` as given."""
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(handle, fd)
        os.close(handle)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # a child that runs past its test's timeout is asked for its threads' stacks (SIGUSR1) before
    # it is killed: they go to its stderr, which the TimeoutError shows (a hang in CI says where)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # Ctrl-C raises KeyboardInterrupt, as in `python -m kdsl` started from a terminal. A child keeps
    # the SIGINT handling its server's interpreter started with, and that is "ignored" where pytest
    # runs as a shell's background job (whose children inherit the ignoring).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _run_kdsl(args: Sequence[str], entry: Optional[str], report: Path) -> None:
    """``python -m kdsl ARGS``, or ``python ENTRY ARGS`` for an entry module that sets things up
    and calls kdsl.cli.entry.main, as such a process runs it."""
    if entry:
        import importlib

        importlib.import_module(entry)
    sys.argv = [entry or str(ROOT / "kdsl" / "__main__.py"), *args]
    from kdsl.cli import entry as kdsl_entry

    real_hard_exit = kdsl_entry.hard_exit

    def hard_exit(code: int) -> None:  # a plain check and a torchrun worker end with os._exit
        _report_cpu(report)
        real_hard_exit(code)

    kdsl_entry.hard_exit = hard_exit
    kdsl_entry.main()  # argv from sys.argv: the process is the command's own


def _main(args: Sequence[str], code: Optional[str], cwd: str, env: Dict[str, str], out: str, err: str,
          entry: Optional[str], report: Path) -> None:
    """The child: the kdsl command ``args``, or with ``code`` the program ``python -c CODE``; the
    CPU it used goes to ``report``."""
    _settle(cwd, env, out, err)
    try:
        if code is None:
            _run_kdsl(args, entry, report)
        else:
            sys.argv = ["-c"]
            exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _report_cpu(report)  # a killed child reports nothing


class Child:
    """One started child: ``pid``, ``wait()``, ``kill()``, ``send_signal()``, as subprocess.Popen.
    It runs the kdsl command ``args`` or, given ``code``, the Python program ``python -c CODE``
    (e.g. to see what a run imports beyond PRELOAD)."""

    def __init__(self, args: Sequence[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
                 entry: Optional[str] = None, code: Optional[str] = None):
        self._files = tempfile.TemporaryDirectory(prefix="kdsl-child-")
        self.out = os.path.join(self._files.name, "stdout")
        self.err = os.path.join(self._files.name, "stderr")
        self.cpu_report = Path(self._files.name) / "cpu"
        self.args = list(args)
        self.process = context().Process(target=_main, args=(self.args, code, str(cwd), child_env(env), self.out,
                                                             self.err, entry, self.cpu_report), daemon=False)
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.process.exitcode

    def poll(self) -> Optional[int]:
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        """As Popen.send_signal: a child that has ended takes no signal. Its exit code reaches this
        process after the fork server reaped it, so the pid can be gone while ``poll()`` still
        says None (os.kill's ProcessLookupError); the test's check of the exit code tells."""
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.process.kill()

    def terminate(self) -> None:
        self.process.terminate()

    def wait(self, timeout: Optional[float] = None) -> int:
        """The exit code (negative: the signal that ended it); TimeoutError when it runs past
        ``timeout`` seconds (the child is killed)."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise TimeoutError(f"kdsl {' '.join(self.args)} ran past {timeout} s\n{self.end_hung()}")
        return self.process.exitcode

    def end_hung(self) -> str:
        """Kill a child that hangs, and say where it was: the tail of its stderr, which ends with
        its threads' stacks (faulthandler, on SIGUSR1)."""
        self.send_signal(signal.SIGUSR1)
        self.process.join(2)
        self.process.kill()
        self.process.join()
        return self.output()[1][-4000:]

    def output(self) -> Tuple[str, str]:
        """What the child wrote to stdout and stderr so far."""
        return tuple(Path(p).read_text(errors="replace") if os.path.exists(p) else "" for p in (self.out, self.err))

    def close(self) -> None:
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        if self.cpu_report.exists():
            CPU_SECONDS[0] += float(self.cpu_report.read_text())
        self._files.cleanup()

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_kdsl(*args: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None, timeout: float = 600,
             entry: Optional[str] = None) -> Tuple[int, str, str]:
    """``kdsl ARGS`` in a forked child: (exit code, stdout, stderr), as tests/conftest.run_cli gives them."""
    with Child(args, cwd=cwd, env=env, entry=entry) as child:
        code = child.wait(timeout)
        return (code, *child.output())


def free_port() -> int:
    """A port of 127.0.0.1 for a rendezvous to listen on, kept from every other process's own
    choice of a free port meanwhile. A port merely found free (bound, closed) is free for anyone:
    the other pytest worker's ranks, whose sockets take free ports, could take it before the
    rendezvous that was to listen there starts (a second later: the children start first). Here
    the port ends a connection this side closed first, so it waits in TIME_WAIT for a minute: Linux
    gives no request for a free port (a bind to port 0, a connect's own port) a port in that state,
    and the rendezvous, which binds its port with SO_REUSEADDR as this socket did (TCPStore, with
    libuv or without), listens there all the same."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = server.accept()
            accepted.close()  # closed here first: this end (127.0.0.1:port) is the one in TIME_WAIT
    return port


def run_ranks(*args: str, nproc: int = 2, env: Optional[Dict[str, str]] = None, cwd: Path = ROOT,
              entry: Optional[str] = None, timeout: float = 240) -> Tuple[int, str, str]:
    """``torchrun --nproc_per_node NPROC ... kdsl ARGS`` on this machine, the ranks forked children
    with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT). As torchrun does, a rank that fails ends the others (SIGTERM), the run's exit
    code is the first failure's, and the launcher reports each rank that failed: a line
    ``rank R: exitcode C`` (``(SIGNAME)`` added where a signal ended it) after the ranks' stderr.
    (exit code, every rank's stdout, every rank's stderr), rank by rank. A test of torchrun's own
    behaviour (its agent, its rendezvous) launches torchrun."""
    base = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "ROLE_RANK": "0", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", **(env or {})}
    children: List[Child] = []
    try:
        for rank in range(nproc):
            rank_env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "ROLE_WORLD_SIZE": str(nproc)}
            children.append(Child(args, cwd=cwd, env=rank_env, entry=entry))
        code = _wait_all(children, timeout)
        outs = [child.output() for child in children]
        failures = [_failure(rank, child.returncode) for rank, child in enumerate(children) if child.returncode]
        return code, "".join(o for o, _ in outs), "".join([*(e for _, e in outs), *failures])
    finally:
        for child in children:
            child.close()


def _failure(rank: int, code: int) -> str:
    """The launcher's line for a rank that failed (torchrun's summary gives the same facts)."""
    how = f" ({signal.Signals(-code).name})" if code < 0 else ""
    return f"rank {rank}: exitcode {code}{how}\n"


def _wait_all(children: List[Child], timeout: float) -> int:
    """Wait for every child; the first that fails ends the rest (SIGTERM, then SIGKILL after 30 s)."""
    deadline = time.monotonic() + timeout
    failed = 0
    running = list(children)
    while running:
        left = deadline - time.monotonic()
        if left <= 0:
            where = "".join(f"\n--- rank {children.index(child)}, stderr's end:\n{child.end_hung()}" for child in running)
            raise TimeoutError(f"ranks ran past {timeout} s{where}")
        wait_for_any([c.process.sentinel for c in running], timeout=left)
        for child in [c for c in running if c.process.exitcode is not None]:
            running.remove(child)
            if child.process.exitcode != 0 and not failed:
                failed = child.process.exitcode
                for other in running:
                    other.terminate()
                deadline = min(deadline, time.monotonic() + 30)
    return failed


def run_python(code: str, cwd: Path = ROOT, env: Optional[Dict[str, str]] = None,
               timeout: float = 600) -> Tuple[int, str, str]:
    """``python -c CODE`` in a forked child: (exit code, stdout, stderr)."""
    with Child(["-c", code], cwd=cwd, env=env, code=code) as child:
        status = child.wait(timeout)
        return (status, *child.output())
