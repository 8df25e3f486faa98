"""kdsl's overhead over hand-written PyTorch, measured side by side in one process.

    python bench/overhead.py [--steps 200] [--warmup 10] [--growth-steps 500] [--threads 1] [--batch 64]

For each case the same models, batches and optimizer settings are trained twice: once by a
hand-written step (features taken by a manual forward that mirrors the model, losses written with
torch primitives) and once through ``kdsl.compile(...).step``. Steps of the two are interleaved
(ABAB...), so machine noise hits both alike; the figure is the ratio of the median step times.
Peak memory is the high-water mark of CPU memory allocated during one step, from the torch
profiler's per-operator allocation records (allocations net of frees, in time order); growth is the process RSS at step 50 and at the last step of a long
kdsl run.
"""

from __future__ import annotations

import argparse
import copy
import gc
import resource
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import kdsl
from kdsl.zoo import digits_cnn, digits_teacher, resnet8, resnet20


# ------------------------------------------------------------------------------ hand-written
def resnet_features(model: nn.Module, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CIFAR ResNet's forward, written out, also returning layer2's output."""
    x = model.relu(model.bn1(model.conv1(x)))
    x = model.layer1(x)
    feat = model.layer2(x)
    x = model.layer3(feat)
    return feat, model.fc(torch.flatten(model.avgpool(x), 1))


def kd_loss(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="batchmean") * tau * tau


def case_resnet(batch: int):
    torch.manual_seed(0)
    student, teacher = resnet8(num_classes=100), resnet20(num_classes=100)
    teacher.eval().requires_grad_(False)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 100, (batch,))
    spec = kdsl.loads("""
student
teacher
record s_feat = output of student.layer2
record t_feat = output of teacher.layer2
record s_logits = output of student
record t_logits = output of teacher
connector p = conv1x1()
loss kd   = kl_div(s_logits, t_logits, tau=4) * 0.9
loss hint = mse(p(s_feat), t_feat) * 0.5
loss task = cross_entropy(s_logits, batch.target) * 0.1
""", "bench_resnet.kd")
    return spec, student, teacher, x, y, "resnet20 -> resnet8, KD + FitNets hint, 32x32, batch %d" % batch


def case_digits(batch: int):
    torch.manual_seed(0)
    student, teacher = digits_cnn(), digits_teacher()
    teacher.eval().requires_grad_(False)
    x = torch.rand(batch, 1, 8, 8)
    y = torch.randint(0, 10, (batch,))
    spec = kdsl.loads("""
student
teacher
record s_logits = output of student
record t_logits = output of teacher
loss kd   = kl_div(s_logits, t_logits, tau=4) * 0.9
loss task = cross_entropy(s_logits, batch.target) * 0.1
""", "bench_digits.kd")
    return spec, student, teacher, x, y, "digits_teacher -> digits_cnn, KD, 8x8, batch %d" % batch


def hand_step_factory(name: str, student, teacher, connector, x, y) -> Callable[[], torch.Tensor]:
    if name == "resnet":
        def step():
            with torch.no_grad():
                t_feat, t_logits = resnet_features(teacher, x)
            s_feat, s_logits = resnet_features(student, x)
            return (kd_loss(s_logits, t_logits, 4.0) * 0.9 + F.mse_loss(connector(s_feat), t_feat) * 0.5
                    + F.cross_entropy(s_logits, y) * 0.1)
    else:
        def step():
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            return kd_loss(s_logits, t_logits, 4.0) * 0.9 + F.cross_entropy(s_logits, y) * 0.1
    return step


# ------------------------------------------------------------------------------ measuring
def peak_bytes(fn: Callable[[], None]) -> int:
    """High-water mark of CPU memory allocated while ``fn`` runs (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # every operator's own allocations net of its own frees, and the "[memory]" events (frees
    # outside any operator), in time order: the running sum is the memory the step holds
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                     if e.self_cpu_memory_usage)
    current = peak = 0
    for _, delta in changes:
        current += delta
        peak = max(peak, current)
    return peak


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def run_case(name: str, make, steps: int, batch: int, warmup: int = 10) -> Dict[str, float]:
    spec, student, teacher, x, y, title = make(batch)
    hand_student = copy.deepcopy(student)
    with kdsl.compile(spec, student=student, teacher=teacher, example_input=x,
                      example_batch={"target": y}) as distiller:
        connector = None
        if "p" in distiller.connectors:  # the same regressor, same initial weights, by hand
            conv = distiller.connectors["p"].conv
            connector = nn.Conv2d(conv.in_channels, conv.out_channels, 1)
            connector.load_state_dict(conv.state_dict())
        hand = hand_step_factory(name, hand_student, teacher, connector, x, y)
        hand_params = list(hand_student.parameters()) + (list(connector.parameters()) if connector else [])
        opt_hand = torch.optim.SGD(hand_params, lr=0.01, momentum=0.9)
        opt_kdsl = torch.optim.SGD(distiller.parameters(), lr=0.01, momentum=0.9)

        def kdsl_step():
            r = distiller.step(x, target=y)
            r.loss.backward()
            opt_kdsl.step()
            opt_kdsl.zero_grad(set_to_none=True)

        def hand_step():
            loss = hand()
            loss.backward()
            opt_hand.step()
            opt_hand.zero_grad(set_to_none=True)

        # the two compute the same thing: check before timing
        ref_loss = hand().item()
        opt_hand.zero_grad(set_to_none=True)
        ours = distiller.step(x, target=y).loss.item()
        opt_kdsl.zero_grad(set_to_none=True)
        assert abs(ref_loss - ours) < 1e-4 * max(1.0, abs(ref_loss)), (ref_loss, ours)
        for _ in range(warmup):
            hand_step()
            kdsl_step()
        times: Dict[str, List[float]] = {"hand": [], "kdsl": []}
        for i in range(steps):
            order = (("hand", hand_step), ("kdsl", kdsl_step)) if i % 2 == 0 else \
                (("kdsl", kdsl_step), ("hand", hand_step))
            for label, fn in order:
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
        mem_hand = peak_bytes(hand_step)
        mem_kdsl = peak_bytes(kdsl_step)
    med_h, med_k = statistics.median(times["hand"]), statistics.median(times["kdsl"])
    return {"title": title, "hand_ms": med_h * 1e3, "kdsl_ms": med_k * 1e3, "time_ratio": med_k / med_h,
            "hand_mb": mem_hand / 2**20, "kdsl_mb": mem_kdsl / 2**20, "memory_ratio": mem_kdsl / mem_hand}


def growth(steps: int) -> Tuple[float, float]:
    """RSS (MB) at step 50 and at the last step of a long kdsl run."""
    spec, student, teacher, x, y, _ = case_digits(64)
    at50 = None
    with kdsl.compile(spec, student=student, teacher=teacher) as distiller:
        opt = torch.optim.SGD(distiller.parameters(), lr=0.01)
        for i in range(steps):
            r = distiller.step(x, target=y)
            r.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i + 1 == 50:
                gc.collect()
                at50 = rss_mb()
        gc.collect()
        return at50, rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps of each variant before the timed ones")
    parser.add_argument("--growth-steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 = least noise)")
    parser.add_argument("--batch", type=int, default=64, help="samples per step of both cases (the figures: 64)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} interleaved steps per variant")
    print(f"{'case':58} {'hand ms':>8} {'kdsl ms':>8} {'time':>6} {'hand MB':>8} {'kdsl MB':>8} {'memory':>7}")
    for name, make in (("resnet", case_resnet), ("digits", case_digits)):
        r = run_case(name, make, args.steps, args.batch, args.warmup)
        print(f"{r['title']:58} {r['hand_ms']:8.2f} {r['kdsl_ms']:8.2f} {r['time_ratio']:6.3f} "
              f"{r['hand_mb']:8.2f} {r['kdsl_mb']:8.2f} {r['memory_ratio']:7.3f}")
    a, b = growth(args.growth_steps)
    print(f"RSS after step 50: {a:.1f} MB; after step {args.growth_steps}: {b:.1f} MB; growth {b - a:+.1f} MB")


if __name__ == "__main__":
    main()
