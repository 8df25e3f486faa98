"""The teacher-output store on the language-model job: disk per token, epoch time with and without
the store, and what keeping only the top-k teacher logits costs in the student's perplexity.

    python bench/lm_store.py [--topk 16] [--seed 0]
    python bench/lm_store.py --kl-error [--ks 8 16 64] [--student-steps 40]

Builds a float32 store and a top-k store of ``specs/lm/kd.kd``'s teacher logits (``kdsl
teacher-cache``), then trains the student three times with the same seed (one thread each): with
the teacher run every step, from the float32 store, and from the top-k store. Prints each store's
bytes per token, each run's epoch time (training and validation), and validation perplexity; the
float32 store's run must equal the run without a store exactly.

``--kl-error`` measures instead what the two reconstructions of a top-k store cost the token KL
loss, without training from a store: the shipped teacher's logits on the validation windows
(every real token), against two students: the baseline student untrained (seed 0) and after
``--student-steps`` steps of ``specs/lm/baseline.kd``. For each k it prints the uniform spread's
KL(p_full || p_uniform) and, for each student, the mean absolute error per token of the loss
(token_kl on the uniform spread, token_topk_kl(tail="bucket") on the stored parts) against
token_kl on the full logits, relative to that loss, and the relative L2 error of the gradient
with respect to the student's logits (:func:`kdsl.training.teacher_store_format.topk_error`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import kdsl  # noqa: E402
from kdsl.training.teacher_store_build import build_store  # noqa: E402

SPEC = os.path.join(ROOT, "specs", "lm", "kd.kd")


def _logits(model, data) -> "torch.Tensor":
    """The model's logits at every real token of the validation windows, [tokens, vocabulary]."""
    import torch

    model.eval()
    with torch.no_grad():
        z = model(data.input_ids, attention_mask=data.attention_mask)
    return z[data.attention_mask.bool()]


def kl_error(ks: List[int], student_steps: int, seed: int) -> None:
    import torch

    from kdsl.io.weights import load_into
    from kdsl.text_data import text
    from kdsl.training.teacher_store_format import topk_error
    from kdsl.zoo.gpt import gpt

    torch.set_num_threads(1)
    val = text(seq_len=64).val
    teacher = gpt(vocab_size=256, seq_len=64, d_model=128, n_layers=4)
    load_into(teacher, os.path.join(ROOT, "specs", "lm", "teacher.pt"))
    torch.manual_seed(seed)
    students = {"untrained student": gpt(vocab_size=256, seq_len=64, d_model=64, n_layers=2)}
    with tempfile.TemporaryDirectory() as work:
        kdsl.train(os.path.join(ROOT, "specs", "lm", "baseline.kd"), out=work, overwrite=True, threads=1,
                   seed=seed, steps_per_epoch=student_steps)
        trained = gpt(vocab_size=256, seq_len=64, d_model=64, n_layers=2)
        load_into(trained, os.path.join(work, "student.pt"))
        students[f"student after {student_steps} steps"] = trained
    z_t = _logits(teacher, val)
    z_s = {name: _logits(m, val) for name, m in students.items()}
    print(f"teacher logits: {z_t.shape[0]:,} validation tokens, vocabulary {z_t.shape[1]}; load average "
          f"{os.getloadavg()[0]:.2f}")
    for k in ks:
        for name, s in z_s.items():
            e = topk_error(z_t, k, student=s)
            print(f"k={k:>3} {name}: KL(p || p_uniform) {e['kl']:.5f} nats; token_kl {e['full']:.4f}, "
                  f"loss error uniform {e['uniform']:.5f} ({e['uniform'] / e['full']:.2%}), bucket {e['bucket']:.5f} "
                  f"({e['bucket'] / e['full']:.2%}); gradient error uniform {e['uniform_grad']:.2%}, "
                  f"bucket {e['bucket_grad']:.2%}")


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topk", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kl-error", action="store_true", help="measure the top-k reconstructions' loss error")
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--student-steps", type=int, default=40)
    args = ap.parse_args(argv)
    if args.kl_error:
        kl_error(args.ks, args.student_steps, args.seed)
        return
    with tempfile.TemporaryDirectory() as work:
        stores = {}
        for name, form in (("float32", {}), (f"top{args.topk}", {"topk": args.topk})):
            stores[name] = os.path.join(work, name)
            t0 = time.perf_counter()
            manifest = build_store(SPEC, out=stores[name], threads=1, seed=args.seed, **form)
            tokens = manifest["samples"] * manifest["epochs"] * 64  # seq_len=64 in the spec
            per_token = f", {manifest['bytes'] / tokens:.1f} bytes per token"
            print(f"store {name}: {manifest['bytes']:,} bytes{per_token}, built in {time.perf_counter() - t0:.1f} s")
        runs = {"teacher every step": {}, "float32 store": {"teacher_cache": stores["float32"]},
                f"top-{args.topk} store": {"teacher_cache": stores[f"top{args.topk}"]}}
        for name, extra in runs.items():
            r = kdsl.train(SPEC, out=os.path.join(work, name.replace(" ", "_")), overwrite=True, threads=1,
                           seed=args.seed, eval_teachers=False, **extra)
            row = r.history[-1]
            print(f"{name}: epoch {row['time_s']:.1f} s, val ppl {row['val_ppl']:.4f}, "
                  f"token acc {row['val_token_acc']:.2f}%, train/kd {row['train/kd']:.6f}")


if __name__ == "__main__":
    main()
