"""What the teacher costs in a KD epoch, and what kdsl saves of it: epoch times side by side.

    python bench/teacher_cost.py [--cases digits cifar] [--epochs 2] [--repeats 2]

For each case (the digits models on the bundled digits; resnet32x4 -> resnet8x4 on CIFAR-shaped
synthetic data, 100 classes) it times one training epoch of:

- ``labels``: the student on the labels alone, by ``kdsl train`` (the floor);
- ``hand_kd``: a hand-written KD loop (frozen teacher under no_grad, student, KD + CE, SGD) over
  a plain DataLoader of the same data and batch size, with the same validation pass;
- ``kdsl_kd``: ``kdsl train`` of the same KD spec;
- ``kdsl_feat`` / ``kdsl_feat_full``: a feature-only spec (an L2 hint on an inner layer) with
  teacher truncation (the default) and with it off — the teacher stops after the recorded layer;
- ``kdsl_store``: ``kdsl train`` of the KD spec reading the teacher's logits from a
  ``kdsl teacher-cache`` store (built once, before timing; the build time is printed).

Every run is one thread; runs are interleaved (``repeats`` rounds, each running every variant),
the first epoch of each run is left out as warm-up, and the figure is the median epoch time
(an epoch's time includes its validation pass, the same for all variants). Ratios are to
``labels``; the targets of issue #12: store <= 1.10x labels; kdsl_kd <= 1.02x hand_kd;
truncation saves >= 80% of the skipped layers' share of the teacher forward (that share is
measured directly by bench/truncation.py; here it shows as kdsl_feat_full - kdsl_feat).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kdsl  # noqa: E402
from kdsl.data import Splits  # noqa: E402
from kdsl.training.teacher_store_build import build_store  # noqa: E402

TRAIN = """
  epochs = 30
  optimizer = sgd(lr=0.05, momentum=0.9, weight_decay=5e-4)
  lr_schedule = cosine()
"""


class _Synthetic(Dataset):
    """CIFAR-shaped images drawn once from a fixed seed (no download, no augmentation)."""

    def __init__(self, n: int, classes: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def synthetic_cifar(n: int = 256, val: int = 64, classes: int = 100) -> Splits:
    """The ``cifar`` case's data factory (``--data 'teacher_cost:synthetic_cifar(n=256)'``)."""
    return Splits(_Synthetic(n, classes, 0), _Synthetic(val, classes, 1), classes, (3, 32, 32))


CASES: Dict[str, Dict[str, Any]] = {
    "digits": dict(student='model("kdsl.zoo:digits_cnn")',
                   teacher=f'model("kdsl.zoo:digits_teacher") from "{ROOT}/specs/digits/teacher.pt"',
                   data='dataset("kdsl.data:digits", batch_size=64)', feature="layer1"),
    "cifar": dict(student='model("kdsl.zoo:resnet8x4", num_classes=100)',
                  teacher='model("kdsl.zoo:resnet32x4", num_classes=100)',
                  data='dataset("teacher_cost:synthetic_cifar", n=256, val=64, batch_size=32)',
                  feature="layer2", random_teacher=True),
}


def spec_texts(case: Dict[str, Any]) -> Dict[str, str]:
    """The case's labels-only, KD and feature-only specs."""
    models = f"student = {case['student']}\nteacher = {case['teacher']}\n"
    train = f"train {{\n  data = {case['data']}\n{TRAIN}}}\n"
    kd = (models + "record s_logits = output of student\nrecord t_logits = output of teacher\n"
          "loss kd   = kl_div(s_logits, t_logits, tau=4) * 0.9\n"
          "loss task = cross_entropy(s_logits, batch.target) * 0.1\n" + train)
    labels = (f"student = {case['student']}\nrecord s_logits = output of student\n"
              "loss task = cross_entropy(s_logits, batch.target)\n" + train)
    layer = case["feature"]
    feat = (models + f"record s_logits = output of student\nrecord s_f = output of student.{layer}\n"
            f"record t_f = output of teacher.{layer}\nconnector reg = conv1x1()\n"
            "loss hint = mse(reg(s_f), t_f)\nloss task = cross_entropy(s_logits, batch.target)\n" + train)
    return {"labels": labels, "kd": kd, "feat": feat}


def hand_kd_epochs(distiller, splits, batch: int, epochs: int) -> List[float]:
    """Seconds per epoch of a hand-written KD loop on the same models (fresh copies) and data."""
    import copy

    student, teacher = copy.deepcopy(distiller.student), copy.deepcopy(distiller.teachers["teacher"])
    teacher.eval().requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train = DataLoader(splits.train, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    val = DataLoader(splits.val, batch_size=batch)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        student.train()
        for x, y in train:
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            kd = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
            loss = 0.9 * kd + 0.1 * F.cross_entropy(s, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        student.eval()
        with torch.no_grad():
            for x, y in val:
                F.cross_entropy(student(x), y)
        times.append(time.perf_counter() - t0)
    return times


def kdsl_epochs(spec: str, out: str, epochs: int, **settings: Any) -> List[float]:
    result = kdsl.train(spec, out=out, overwrite=True, epochs=epochs, threads=1, eval_teachers=False,
                        **settings)
    return [row["time_s"] for row in result.history]


def run_case(name: str, case: Dict[str, Any], epochs: int, repeats: int, work: str) -> Dict[str, float]:
    paths = {}
    for kind, text in spec_texts(case).items():
        paths[kind] = os.path.join(work, f"{name}_{kind}.kd")
        with open(paths[kind], "w") as f:
            f.write(text)
    extra = {"allow_random_teacher": True} if case.get("random_teacher") else {}
    t0 = time.perf_counter()
    store = os.path.join(work, f"{name}_store")
    manifest = build_store(paths["kd"], out=store, threads=1, seed=0, **extra)
    print(f"[{name}] store: {manifest['bytes']} bytes, built in {time.perf_counter() - t0:.2f} s")
    spec = kdsl.load(paths["kd"])
    import kdsl.training.api as api  # the same models and data kdsl train builds

    splits_batch = 64 if name == "digits" else 32
    runs = {
        "labels": lambda r: kdsl_epochs(paths["labels"], f"{work}/{name}_labels{r}", epochs + 1),
        "hand_kd": lambda r: _hand(paths["kd"], splits_batch, epochs + 1, extra),
        "kdsl_kd": lambda r: kdsl_epochs(paths["kd"], f"{work}/{name}_kd{r}", epochs + 1, **extra),
        "kdsl_feat": lambda r: kdsl_epochs(paths["feat"], f"{work}/{name}_feat{r}", epochs + 1, **extra),
        "kdsl_feat_full": lambda r: kdsl_epochs(paths["feat"], f"{work}/{name}_featf{r}", epochs + 1,
                                                truncate=False, **extra),
        "kdsl_store": lambda r: kdsl_epochs(paths["kd"], f"{work}/{name}_store{r}", epochs + 1,
                                            teacher_cache=store, **extra),
    }
    del spec, api
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for r in range(repeats):
        for k, fn in (runs.items() if r % 2 == 0 else reversed(list(runs.items()))):
            times[k] += fn(r)[1:]
    return {k: statistics.median(v) for k, v in times.items()}


def _hand(spec_path: str, batch: int, epochs: int, extra: Dict[str, Any]) -> List[float]:
    """The hand loop on the models and data of the KD spec, built as kdsl train builds them."""
    with kdsl.compile(spec_path) as d:  # (a random teacher is refused by kdsl train only)
        splits = _data(spec_path)
        return hand_kd_epochs(d, splits, batch, epochs)


def _data(spec_path: str) -> Splits:
    text = open(spec_path).read()
    if "synthetic_cifar" in text:
        return synthetic_cifar(256, 64)
    from kdsl.data import digits

    return digits()


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per run (after one warm-up)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # teacher_cost:synthetic_cifar
    report = {}
    with tempfile.TemporaryDirectory() as work:
        for name in args.cases:
            t = run_case(name, CASES[name], args.epochs, args.repeats, work)
            base = t["labels"]
            report[name] = {k: round(v, 4) for k, v in t.items()}
            print(f"[{name}] median epoch seconds: " + json.dumps(report[name]))
            print(f"[{name}] vs labels-only: " + ", ".join(f"{k} {v / base:.3f}x" for k, v in t.items()))
            print(f"[{name}] kdsl_kd / hand_kd = {t['kdsl_kd'] / t['hand_kd']:.3f}; "
                  f"kdsl_store / labels = {t['kdsl_store'] / base:.3f}; "
                  f"truncation saves {t['kdsl_feat_full'] - t['kdsl_feat']:.3f} s of "
                  f"{t['kdsl_feat_full'] - base:.3f} s the teacher adds"
                  if not math.isclose(t['kdsl_feat_full'], base) else "")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
