"""What teacher truncation saves: a teacher forward run in full vs stopped after the record a
feature-only spec needs, side by side in one process.

    python bench/truncation.py [--steps 40] [--threads 1] [--batch 32]

``truncation_saving(teacher, prefix, spec, x)`` is reusable (bench/teacher_cost.py): ``prefix(x)``
runs, by hand, the part of the teacher's forward up to the recorded module, so the skipped layers'
share of the forward is ``full - prefix``; the saving is ``(full - truncated) / (full - prefix)``
(target >= 0.80). Medians of interleaved runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict

import torch

import kdsl
from kdsl.zoo import resnet8, resnet32

FEATURE_ONLY = """
student
teacher
record s_feat = output of student.layer2
record t_feat = output of teacher.layer2
connector reg = conv1x1()
loss hint = mse(reg(s_feat), t_feat)
"""


def truncation_saving(student, teacher, prefix: Callable, spec: str, x: torch.Tensor,
                      steps: int = 40) -> Dict[str, float]:
    """Median ms of the teacher pass in full, truncated, and of its prefix; the saving."""
    teacher.eval()
    loaded = kdsl.loads(spec, "bench.kd")
    runs = {}
    with kdsl.compile(loaded, student=student, teacher=teacher, example_input=x) as cut, \
            kdsl.compile(loaded, student=student, teacher=teacher, example_input=x, truncate=False) as full:
        def teacher_pass(d):
            def run():
                with d.teacher_pass("teacher") as t:
                    t(x)
                d._end_step()
            return run

        def by_hand():
            with torch.no_grad():
                prefix(teacher, x)
        cases = {"full": teacher_pass(full), "truncated": teacher_pass(cut), "prefix": by_hand}
        times = {k: [] for k in cases}
        for i in range(steps + 3):
            for k, fn in (cases.items() if i % 2 == 0 else reversed(list(cases.items()))):
                start = time.perf_counter()
                fn()
                if i >= 3:
                    times[k].append(time.perf_counter() - start)
        runs = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    runs["saving"] = (runs["full"] - runs["truncated"]) / (runs["full"] - runs["prefix"])
    return runs


def resnet_prefix(model, x):
    x = model.relu(model.bn1(model.conv1(x)))
    return model.layer2(model.layer1(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32, help="images per teacher pass (the figures: 32)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32)
    r = truncation_saving(resnet8(10), resnet32(10), resnet_prefix, FEATURE_ONLY, x, args.steps)
    print(f"resnet32 teacher, record layer2 (of layer1-3): full {r['full']:.2f} ms, truncated "
          f"{r['truncated']:.2f} ms, prefix by hand {r['prefix']:.2f} ms; truncation saves "
          f"{r['saving']:.0%} of the skipped layers' share of the forward")


if __name__ == "__main__":
    main()
