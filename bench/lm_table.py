"""The language-model table of docs/language-models.md: validation perplexity of the teacher
(specs/lm/teacher.pt, trained by specs/lm/teacher.kd) and of the student trained on labels only (baseline.kd), with
token-level KD (kd.kd) and with token-level reverse KL (reverse_kl.kd), over three seeds.

    python bench/lm_table.py                 # the table (about 15 min of one CPU thread)
    python bench/lm_table.py --train-teacher # first retrain specs/lm/teacher.pt (about 10 min more)

Every run is a real ``kdsl.train`` of the spec as shipped (its train block: kdsl.data:text, the
standard library's sources as bytes), with ``--threads 1`` and the seed changed; the runs go to
runs/lm-table/. Prints a Markdown table (mean and standard deviation over the seeds) and writes
it, with every run's figures and the corpus hash, to runs/lm-table/table.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs" / "lm"
METHODS = [("labels only", "baseline.kd"), ("token KD (forward KL, tau 1)", "kd.kd"),
           ("token reverse KL", "reverse_kl.kd")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/lm-table")
    parser.add_argument("--train-teacher", action="store_true")
    parser.add_argument("--only", nargs="+", help="run these specs only (e.g. baseline.kd)")
    args = parser.parse_args()
    import kdsl
    from kdsl.data import text

    out = Path(args.out)
    if args.train_teacher:
        result = kdsl.train(SPECS / "teacher.kd", out=str(out / "teacher"), overwrite=True, threads=1)
        shutil.copy(result.files.student, SPECS / "teacher.pt")
    runs, teacher = [], None
    methods = [m for m in METHODS if not args.only or m[1] in args.only]
    for label, spec in methods:
        for seed in args.seeds:
            t0 = time.time()
            result = kdsl.train(SPECS / spec, out=str(out / f"{Path(spec).stem}-s{seed}"), overwrite=True,
                                threads=1, seed=seed)
            teacher = result.teachers.get("teacher", teacher)
            params = next(r["params"] for r in result.rows if r["role"] == "student")
            runs.append({"method": label, "spec": spec, "seed": seed, "ppl": result.final["ppl"], "params": params,
                         "token_acc": result.final["token_acc"], "seconds": time.time() - t0})
            print(f"{spec} seed {seed}: ppl {result.final['ppl']:.3f} ({time.time() - t0:.0f}s)", flush=True)
    lines = ["| model | params | validation perplexity | next-token accuracy (%) |", "|---|---|---|---|"]
    if teacher:
        lines.append(f"| teacher (teacher.kd) | {teacher['params']:,} | {teacher['ppl']:.3f} | "
                     f"{teacher['token_acc']:.2f} |")
    for label, spec in methods:
        ppl = [r["ppl"] for r in runs if r["spec"] == spec]
        acc = [r["token_acc"] for r in runs if r["spec"] == spec]
        sd = statistics.stdev(ppl) if len(ppl) > 1 else 0.0
        params = next(r["params"] for r in runs if r["spec"] == spec)
        lines.append(f"| student, {label} ({spec}) | {params:,} | {statistics.mean(ppl):.3f} ± {sd:.3f} | "
                     f"{statistics.mean(acc):.2f} |")
    table = "\n".join(lines)
    print(table)
    corpus = text(seq_len=64).val.corpus_sha256
    name = "table.json" if not args.only else f"table-{'-'.join(Path(o).stem for o in args.only)}.json"
    (out / name).write_text(json.dumps({"runs": runs, "teacher": teacher, "table": table,
                                                "val_corpus_sha256": corpus, "python": sys.version}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
