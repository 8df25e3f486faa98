"""A compiled kdsl step against a compiled hand-written step, side by side in one process.

    python bench/compile.py [--steps 30] [--threads 1] [--backend inductor] [--small]

For each case (digits teacher -> student KD; resnet20 -> resnet8 KD + FitNets hint on a 32x32
batch) the same models and batches are trained twice: the hand-written step compiles the teacher
and the student with ``torch.compile`` and takes the hint feature with a forward hook of its own;
the kdsl step is ``kdsl.compile(..., compile_models=...)``'s ``step``. Compiling (the warm-up
steps) is excluded; the timed steps are interleaved (ABAB...), so machine noise hits both alike.
The figure is the ratio of the median step times (target <= 1.05), and the graph breaks kdsl's
hooks add: ``torch._dynamo.explain`` of each model with kdsl's recorders listening, minus the
breaks of the bare model (target 0). ``--small`` gives the second case resnet8 as its teacher and a
batch of 2: the same hooks and compiled steps at the least tracing, to check that the command
runs (the figures come from the default).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any, Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

import kdsl
from kdsl.zoo import digits_cnn, digits_teacher, resnet8, resnet20

KD = """
student
teacher
record s_logits = output of student
record t_logits = output of teacher
loss kd = kl_div(s_logits, t_logits, tau=4) * 0.9
loss task = cross_entropy(s_logits, batch.target) * 0.1
"""

KD_HINT = KD + """
record s_feat = output of student.layer2
record t_feat = output of teacher.layer2
loss hint = mse(s_feat, t_feat)
"""


def kl(s: torch.Tensor, t: torch.Tensor, tau: float = 4.0) -> torch.Tensor:
    return F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="batchmean") * tau * tau


def hand_step(student: nn.Module, teacher: nn.Module, hint: bool, options: Dict[str, Any]) -> Callable:
    """A hand-written KD (+ hint) step over compiled copies of the models."""
    feats: Dict[str, torch.Tensor] = {}
    if hint:
        student.layer2.register_forward_hook(lambda m, a, o: feats.__setitem__("s", o))
        teacher.layer2.register_forward_hook(lambda m, a, o: feats.__setitem__("t", o))
    student.compile(**options)
    teacher.compile(**options)
    opt = torch.optim.SGD(student.parameters(), lr=0.01)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        loss = 0.9 * kl(s, t) + 0.1 * F.cross_entropy(s, y)
        if hint:
            loss = loss + F.mse_loss(feats["s"], feats["t"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def kdsl_step(student: nn.Module, teacher: nn.Module, spec: str, x0: torch.Tensor,
              options: Dict[str, Any]):
    distiller = kdsl.compile(kdsl.loads(spec, "bench.kd"), student=student, teacher=teacher,
                             example_input=x0, compile_models=options or True)
    opt = torch.optim.SGD(distiller.parameters(), lr=0.01)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        result = distiller.step(x, target=y)
        opt.zero_grad(set_to_none=True)
        result.loss.backward()
        opt.step()
    return distiller, step


def added_breaks(distiller, x: torch.Tensor) -> int:
    """Graph breaks in each model's forward with kdsl's recorders listening, minus without."""
    added = 0
    for name in [*distiller.used_teachers, distiller.student_name]:
        model = distiller.model(name)
        torch._dynamo.reset()
        bare = torch._dynamo.explain(model)(x).graph_break_count
        state = distiller._state
        state.active = name
        try:
            torch._dynamo.reset()
            with torch.no_grad():
                hooked = torch._dynamo.explain(model)(x).graph_break_count
        finally:
            state.active = None
            distiller._end_step()
        added += hooked - bare
    torch._dynamo.reset()
    return added


def case(name: str, student: nn.Module, teacher: nn.Module, shape, classes: int, hint: bool,
         steps: int, warmup: int, options: Dict[str, Any]) -> None:
    teacher.eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g))
               for _ in range(4)]
    s1, t1 = copy.deepcopy(student), copy.deepcopy(teacher)
    distiller, k_step = kdsl_step(student, teacher, KD_HINT if hint else KD, batches[0][0], options)
    breaks = added_breaks(distiller, batches[0][0])
    h_step = hand_step(s1, t1, hint, options)
    times: Dict[str, List[float]] = {"hand": [], "kdsl": []}
    for i in range(warmup + steps):
        x, y = batches[i % len(batches)]
        for label, fn in (("hand", h_step), ("kdsl", k_step)) if i % 2 == 0 else (("kdsl", k_step), ("hand", h_step)):
            start = time.perf_counter()
            fn(x, y)
            if i >= warmup:
                times[label].append(time.perf_counter() - start)
    distiller.close()
    hand, ours = statistics.median(times["hand"]), statistics.median(times["kdsl"])
    print(f"{name:<34} hand {hand * 1e3:8.2f} ms  kdsl {ours * 1e3:8.2f} ms  "
          f"ratio {ours / hand:5.3f}  graph breaks added by kdsl: {breaks}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=4, help="untimed steps (compiling happens here)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="inductor")
    ap.add_argument("--small", action="store_true", help="resnet8 -> resnet8 on a batch of 2 (a quick check)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    options = {} if args.backend == "inductor" else {"backend": args.backend}
    print(f"torch {torch.__version__}, backend {args.backend}, {args.threads} thread(s), "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up")
    case("digits teacher -> student, KD", digits_cnn(), digits_teacher(), (64, 1, 8, 8), 10, False,
         args.steps, args.warmup, options)
    teacher, label, batch = (resnet8, "resnet8", 2) if args.small else (resnet20, "resnet20", 16)
    case(f"{label} -> resnet8, KD + hint", resnet8(10), teacher(10), (batch, 3, 32, 32), 10, True,
         args.steps, args.warmup, options)


if __name__ == "__main__":
    main()
