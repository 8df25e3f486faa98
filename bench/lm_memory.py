"""Peak memory and step time of the token KL loss at large vocabularies: plain (both models'
[N, T, V] logits, then token_kl) against chunked (token_kl_chunked from the hidden states and
the LM heads' weights).

    python bench/lm_memory.py [--vocab 32000 128000] [--positions 1024] [--chunk 64] [--threads 1]

One step is what a distillation step does at the loss: the teacher's logits (no gradient), the
student's, the loss over positions with shift and labels, and the backward to the student's
hidden states and head weight. The plain form computes the logits with the heads' matmuls, as
the models' heads would. Each (form, vocabulary) runs in a fresh process; its memory is the peak
resident set size (getrusage's ru_maxrss, what the operating system gave the process) during
the first step, minus the resident size just before it, so it counts every allocation of the
step: torch's CPU allocator takes its memory from malloc/mmap, which Python's tracemalloc does
not see. Step time is the median of --steps further steps, on --threads threads. The load
average is printed: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(form: str, vocab: int, positions: int, d_student: int, d_teacher: int, chunk: int,
            steps: int, threads: int) -> dict:
    """One (form, vocabulary) in this process: the step's extra peak memory and its median time."""
    import torch

    from kdsl.components.lm_chunked_losses import TokenKLChunked
    from kdsl.components.lm_losses import TokenKL

    torch.set_num_threads(threads)
    plain, chunked = TokenKL(shift=True), TokenKLChunked(shift=True, chunk=chunk)

    def inputs(vocab: int, positions: int):
        g = torch.Generator().manual_seed(0)
        n, t = 4, positions // 4
        return (torch.randn(n, t, d_student, generator=g, requires_grad=True),
                (torch.randn(vocab, d_student, generator=g) * 0.02).requires_grad_(True),
                torch.randn(n, t, d_teacher, generator=g), torch.randn(vocab, d_teacher, generator=g) * 0.02,
                torch.randint(0, vocab, (n, t), generator=g))

    def step(h_s, w_s, h_t, w_t, labels) -> float:
        if form == "plain":
            loss = plain(h_s @ w_s.T, h_t @ w_t.T, labels=labels)
        else:
            loss = chunked(h_s, w_s, h_t, w_t, labels=labels)
        loss.backward()
        h_s.grad = w_s.grad = None
        return float(loss.detach())

    # a small step first: the code and the allocator's own first-use memory are not the step's
    step(*inputs(64, 64))
    real = inputs(vocab, positions)
    before = _rss_bytes()
    value = step(*real)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(*real)
        times.append(time.perf_counter() - t0)
    return {"form": form, "vocab": vocab, "peak_bytes": max(0, peak - before), "step_s": statistics.median(times),
            "loss": value, "logits_bytes": positions * vocab * 4}


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    ap.add_argument("--positions", type=int, default=1024, help="batch size x sequence length (4 sequences)")
    ap.add_argument("--d-student", type=int, default=256)
    ap.add_argument("--d-teacher", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=2, metavar=("FORM", "VOCAB"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = dict(positions=args.positions, d_student=args.d_student, d_teacher=args.d_teacher,
                 chunk=args.chunk, steps=args.steps, threads=args.threads)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), **sizes)))
        return
    print(f"load average {os.getloadavg()[0]:.2f}; {args.positions} positions, student width {args.d_student}, "
          f"teacher width {args.d_teacher}, chunk {args.chunk}, {args.threads} thread(s)")
    for vocab in args.vocab:
        rows = {}
        for form in ("plain", "chunked"):
            out = subprocess.run([sys.executable, __file__, *(argv or sys.argv[1:]), "--one", form, str(vocab)],
                                 check=True, capture_output=True, text=True).stdout
            rows[form] = r = json.loads(out.splitlines()[-1])
            print(f"vocab {vocab:>7,} {form:>7}: peak {r['peak_bytes'] / 2**20:8.1f} MiB "
                  f"({r['peak_bytes'] / r['logits_bytes']:.2f}x one [N, T, V] float32 logits), "
                  f"step {r['step_s']:.3f} s, loss {r['loss']:.6f}")
        p, c = rows["plain"], rows["chunked"]
        print(f"vocab {vocab:>7,}: chunked peak {p['peak_bytes'] / max(c['peak_bytes'], 1):.1f}x lower, "
              f"step time {c['step_s'] / p['step_s']:.2f}x plain; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
