"""Shared by the FSDP tests: a torchrun launch of 2 CPU processes (gloo), the tiny GPT spec and
its data (a text whose windows need no padding, so that every rank's token mean is a mean over
as many tokens as the single process's, and losses compare exactly)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SPEC = str(HERE / "gpt_kd_hint.kd")
ENTRY = str(HERE / "fsdp_entry.py")
TIMEOUT = 240
SEQ = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def corpus(folder: Path) -> str:
    """A text of 220 windows of 16 bytes (kdsl's own sources): 198 train, 22 validation."""
    text = b"".join(p.read_bytes() for p in sorted((ROOT / "kdsl" / "training").glob("*.py")))
    path = folder / "corpus.txt"
    path.write_bytes(text[: 220 * SEQ])
    return f'kdsl.data:text(path="{path}", seq_len={SEQ}, batch_size=4)'


def torchrun(*args: str, nproc: int = 2, env=None, launcher=()) -> Tuple[int, str, str]:
    """``torchrun --nproc_per_node NPROC [launcher] ARGS`` on this machine: (exit code, stdout, stderr)."""
    full = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NO_COLOR="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    full.pop("FORCE_COLOR", None)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        full.pop(key, None)
    full.update(env or {})
    if not launcher:
        launcher = ("--master_addr", "127.0.0.1", "--master_port", str(free_port()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), *launcher, *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout, proc.stderr
