"""Fuzz the spec checker: mutate real specs and check that kdsl fails only the way it should.

Every input goes through the loader/verifier (``check_text``) and the renderer, and must
- end in kdsl's own diagnostics (or none), never another exception;
- locate every diagnostic inside the file (line and column within the text);
- render to an output bounded by the input's size (a few times it, plus a constant);
- finish within a bound of CPU time (5 s; the largest inputs are 1.4 MB).

The suite runs a few thousand inputs (tests/hardening/test_fuzz.py); a longer run is

    python tools/fuzz_specs.py --inputs 100000 --seed 1

which prints how many inputs of each outcome it saw and the slowest ones.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIME_LIMIT_S = 5.0
OUTPUT_FACTOR = 20
OUTPUT_CONSTANT = 60_000


def corpus() -> List[str]:
    """The seed texts: every spec shipped in the repository."""
    texts = []
    for top in ("specs", "examples", "tests"):
        for path in sorted((ROOT / top).rglob("*.kd")):
            try:
                texts.append(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
    return texts


# ------------------------------------------------------------------------------ mutations
def _splice(rng: random.Random, text: str, piece: str) -> str:
    i = rng.randrange(len(text) + 1)
    return text[:i] + piece + text[i:]


def _delete(rng: random.Random, text: str) -> str:
    if not text:
        return text
    i = rng.randrange(len(text))
    return text[:i] + text[i + rng.randint(1, 20):]


def _duplicate_line(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    return "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:])


def _swap_lines(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


_TOKENS = ["(", ")", "[", "]", "{", "}", ",", "=", ".", ":", '"', "#", "\\", "*", "-", "\n",
           "student", "teacher", "record", "loss", "connector", "deliver", "train", "include",
           "import", "override", "output of", "input 0 of", "param", "method", "function",
           "all calls", "call 3", "from", "keep", "batch.target", "1e308", "-0", "1e999",
           "99999999999999999999999", "none", "true", "\"\\q\"", "\u00e9", "\U0001F600"]


def _token(rng: random.Random, text: str) -> str:
    return _splice(rng, text, rng.choice(_TOKENS))


def _nul(rng: random.Random, text: str) -> str:
    return _splice(rng, text, "\x00")


def _bom(rng: random.Random, text: str) -> str:
    return "\ufeff" + text


def _crlf(rng: random.Random, text: str) -> str:
    return text.replace("\n", "\r\n")


def _huge_identifier(rng: random.Random, text: str) -> str:
    return _splice(rng, text, "x" * rng.choice([300, 5_000, 50_000]))


def _deep_nesting(rng: random.Random, text: str) -> str:
    depth = rng.choice([50, 500, 5_000])
    return text + "\nloss deep = l2(" + "[" * depth + "1" + "]" * depth + ", t)\n"


def _many_arguments(rng: random.Random, text: str) -> str:
    n = rng.choice([1_000, 10_000, 100_000])
    return text + "\nloss many = kl_div(" + ", ".join(f"a{i}={i}" for i in range(n)) + ")\n"


def _unclosed(rng: random.Random, text: str) -> str:
    return _splice(rng, text, "(" * rng.choice([10, 1_000, 10_000]))


def _closers(rng: random.Random, text: str) -> str:
    return _splice(rng, text, ")" * rng.choice([10, 1_000, 10_000]))


def _long_line(rng: random.Random, text: str) -> str:
    return text + "\n# " + "y" * 200_000 + "\nloss z = nothing(" + "q" * 20_000 + ")\n"


def _random_bytes(rng: random.Random, text: str) -> str:
    return _splice(rng, text, "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randint(1, 30))))


CHEAP: List[Callable[[random.Random, str], str]] = [
    _delete, _duplicate_line, _swap_lines, _token, _token, _token, _nul, _bom, _crlf, _random_bytes]
COSTLY: List[Callable[[random.Random, str], str]] = [
    _huge_identifier, _deep_nesting, _many_arguments, _unclosed, _closers, _long_line]


def mutate(rng: random.Random, text: str) -> Tuple[str, str]:
    """(mutated text, names of the mutations applied)."""
    names = []
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(COSTLY) if rng.random() < 0.08 else rng.choice(CHEAP)
        text = op(rng, text)
        names.append(op.__name__.lstrip("_"))
    return text, "+".join(names)


# ------------------------------------------------------------------------------ one input
@dataclass
class Outcome:
    kind: str  # "ok", "diagnostics", or a failure: "crash", "bad-location", "too-much-output", "slow"
    seconds: float
    detail: str = ""


def _locations_ok(diagnostics, text: str, name: str) -> Optional[str]:
    lines = text.split("\n")
    for d in diagnostics:
        spans = [d.span] + [n.span for n in d.notes]
        for span in spans:
            if span is None or span.file != name:
                continue
            if not 1 <= span.line <= len(lines) + 1:
                return f"{d.code} at line {span.line} of a {len(lines)}-line file"
            width = len(lines[span.line - 1]) if span.line <= len(lines) else 0
            if not 1 <= span.column <= width + 2:
                return f"{d.code} at column {span.column} of a {width}-character line"
    return None


def run_one(text: str, name: str = "fuzz.kd") -> Outcome:
    from kdsl.core.diagnostics import render
    from kdsl.lang.loader import check_text

    # CPU time, not wall time: the bound is about kdsl's work, not about how busy the machine is
    start = time.process_time()
    try:
        _, diagnostics, sources = check_text(text, name)
        output = render(diagnostics, sources)
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        return Outcome("crash", time.process_time() - start, f"{type(exc).__name__}: {exc}"[:300])
    seconds = time.process_time() - start
    problem = _locations_ok(diagnostics, text, name)
    if problem:
        return Outcome("bad-location", seconds, problem)
    if len(output) > OUTPUT_FACTOR * len(text) + OUTPUT_CONSTANT:
        return Outcome("too-much-output", seconds, f"{len(output)} characters for {len(text)}")
    if seconds > TIME_LIMIT_S:
        return Outcome("slow", seconds, f"{seconds:.1f} s for {len(text)} characters")
    return Outcome("diagnostics" if diagnostics else "ok", seconds)


@dataclass
class Report:
    counts: Dict[str, int] = field(default_factory=dict)
    failures: List[Tuple[str, str, str]] = field(default_factory=list)  # (kind, mutations, detail)
    slowest: List[Tuple[float, str]] = field(default_factory=list)


def fuzz(inputs: int, seed: int, texts: Optional[List[str]] = None) -> Report:
    rng = random.Random(seed)
    texts = texts or corpus()
    report = Report()
    for _ in range(inputs):
        text, names = mutate(rng, rng.choice(texts))
        outcome = run_one(text)
        report.counts[outcome.kind] = report.counts.get(outcome.kind, 0) + 1
        if outcome.kind not in ("ok", "diagnostics"):
            report.failures.append((outcome.kind, names, outcome.detail))
        report.slowest = sorted(report.slowest + [(outcome.seconds, names)], reverse=True)[:5]
    return report


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = fuzz(args.inputs, args.seed)
    print(f"{args.inputs} inputs, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    for kind, n in sorted(report.counts.items()):
        print(f"  {kind}: {n}")
    for seconds, names in report.slowest:
        print(f"  slow: {seconds:.2f} s ({names})")
    for kind, names, detail in report.failures[:20]:
        print(f"  FAIL {kind} ({names}): {detail}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
