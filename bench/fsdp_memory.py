"""Parameter bytes per rank and step time under ddp and fsdp, for world sizes 1, 2 and 4.

Each cell is a real `kdsl train` of specs/lm/fsdp.kd (student GPT 64x2, teacher GPT 128x4
offloaded) on this machine's CPUs under torchrun (gloo), with a random teacher and a small text,
for ``--steps`` steps of ``--batch-size`` windows per process. Bytes are what summary.json's
``ranks`` records: each rank's parameter bytes per model (its DTensor shards under fsdp) and its
peak resident memory. The step time is the mean over the epoch's steps (metrics.jsonl's time_s
less validation is not separated: the same validation runs in both strategies). World size 1 is
one process, where fsdp is ignored (its row is the baseline).

    python bench/fsdp_memory.py --threads 1 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "lm" / "fsdp.kd"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world: int, strategy: str, steps: int, batch: int, threads: int, tmp: pathlib.Path):
    text = b"".join(p.read_bytes() for p in sorted((ROOT / "kdsl").rglob("*.py")))[: 64 * 64 * 40]
    corpus = tmp / "corpus.txt"
    corpus.write_bytes(text)
    out = tmp / f"{strategy}-{world}"
    args = ["-m", "kdsl", "train", str(SPEC), "--data", f'kdsl.data:text(path="{corpus}", seq_len=64, '
            f'batch_size={batch})', "--steps-per-epoch", str(steps), "--strategy", strategy,
            "--allow-random-teacher", "--threads", str(threads), "--out", str(out), "--overwrite"]
    launch = [sys.executable]
    if world > 1:
        launch += ["-m", "torch.distributed.run", "--nproc_per_node", str(world),
                   "--master_addr", "127.0.0.1", "--master_port", str(_port())]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), NO_COLOR="1")
    t0 = time.time()
    proc = subprocess.run(launch + args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{strategy} x{world} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    step_s = summary["history"][0]["time_s"] / steps
    return summary["ranks"], step_s, time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worlds", default="1,2,4")
    a = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores, --threads {a.threads}")
    print(f"{'world':>5} {'strategy':>8} {'student B/rank':>15} {'teacher B/rank':>15} {'peak MiB/rank':>14} "
          f"{'step s':>8} {'fsdp/ddp':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for world in [int(w) for w in a.worlds.split(",")]:
            times = {}
            for strategy in ("ddp", "fsdp"):
                ranks, step_s, _ = run(world, strategy, a.steps, a.batch_size, a.threads, pathlib.Path(tmp))
                times[strategy] = step_s
                models = ranks["models"]
                ratio = f"{times['fsdp'] / times['ddp']:.2f}" if strategy == "fsdp" else ""
                print(f"{world:>5} {strategy:>8} {max(models['student']['param_bytes']):>15,} "
                      f"{max(models['teacher']['param_bytes']):>15,} "
                      f"{max(ranks['peak_bytes']) / 2**20:>14.0f} {step_s:>8.3f} {ratio:>9}", flush=True)


if __name__ == "__main__":
    main()
