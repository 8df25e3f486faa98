"""Generation during training on the string task (kdsl.data:strings, op "sort"): the student of
specs/lm/gkd_onpolicy.kd trained on labels only, with off-policy token KD (JSD on the data's
answers), GKD on-policy (gkd_onpolicy.kd), sequence-level KD (seqkd.kd) and MiniLLM-style
reverse KL on its samples (minillm.kd), over seeds; exact match of greedy answers on the 1,000
held-out words and perplexity, with their spread, the time per run and generation's share of it.

    python bench/lm_generation_table.py                # 5 methods x 3 seeds, one CPU thread each
    python bench/lm_generation_table.py --seeds 0      # one seed

Every run is a real ``kdsl.train`` of the spec text (its train block, ``--threads 1``, the seed
changed); labels-only and off-policy KD are gkd_onpolicy.kd with the ``generate`` line removed
and its loss replaced or kept. Generation's share is the time inside the generate statement's
``Rollout.batch`` over the run's training time. Runs go to runs/lm-generation/; the table and
every run's figures to runs/lm-generation/table.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs" / "lm"


def variants() -> list:
    gkd = (SPECS / "gkd_onpolicy.kd").read_text()
    generate = next(line for line in gkd.splitlines() if line.startswith("generate "))
    off = gkd.replace(generate, "")
    jsd = next(line for line in gkd.splitlines() if line.startswith("loss jsd"))
    labels = off.replace(jsd, "loss task = model_loss(s.loss)").replace("record t = output of teacher\n", "")
    return [("labels only", "labels", labels), ("off-policy token KD (JSD 0.5)", "offpolicy", off),
            ("GKD on-policy (lmbda 0.5, JSD 0.5)", "gkd", gkd),
            ("sequence-level KD (teacher greedy)", "seqkd", (SPECS / "seqkd.kd").read_text()),
            ("MiniLLM-style reverse KL on samples", "minillm", (SPECS / "minillm.kd").read_text())]


def timed_rollouts() -> list:
    """Wrap Rollout.batch to add up the seconds spent generating."""
    from kdsl.runtime import generation

    spent = [0.0]
    inner = generation.Rollout.batch

    def batch(self, fields, step):
        t0 = time.perf_counter()
        try:
            return inner(self, fields, step)
        finally:
            spent[0] += time.perf_counter() - t0

    generation.Rollout.batch = batch
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/lm-generation")
    parser.add_argument("--only", nargs="+", help="these methods only (labels, offpolicy, gkd, seqkd, minillm)")
    args = parser.parse_args()
    import kdsl

    out, runs = Path(args.out), []
    spent = timed_rollouts()
    methods = [m for m in variants() if not args.only or m[1] in args.only]
    for label, key, text in methods:
        for seed in args.seeds:
            spec = kdsl.loads(text, str(SPECS / f"{key}.kd"))  # paths resolve beside the shipped specs
            spent[0], t0 = 0.0, time.time()
            result = kdsl.train(spec, out=str(out / f"{key}-s{seed}"), overwrite=True, threads=1, seed=seed)
            seconds = time.time() - t0
            runs.append({"method": label, "key": key, "seed": seed, "exact_match": result.final["exact_match"],
                         "ppl": result.final["ppl"], "seconds": seconds, "generation_s": spent[0]})
            print(f"{key} seed {seed}: exact {result.final['exact_match']:.1f}% ppl {result.final['ppl']:.3f} "
                  f"{seconds:.0f}s (generation {spent[0]:.0f}s)", flush=True)
    lines = ["| student (d_model 32, 2 layers), 1 epoch | exact match (%), mean ± std | perplexity | s per run | "
             "generation's share |", "|---|---|---|---|---|"]
    for label, key, _ in methods:
        mine = [r for r in runs if r["key"] == key]
        em, ppl = [r["exact_match"] for r in mine], [r["ppl"] for r in mine]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        secs = statistics.mean(r["seconds"] for r in mine)
        share = sum(r["generation_s"] for r in mine) / sum(r["seconds"] for r in mine)
        lines.append(f"| {label} | {statistics.mean(em):.1f} ± {sd(em):.1f} | {statistics.mean(ppl):.3f} ± "
                     f"{sd(ppl):.3f} | {secs:.0f} | {100 * share:.0f}% |")
    table = "\n".join(lines)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps({"runs": runs, "table": table, "python": sys.version}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
