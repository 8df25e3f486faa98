"""Did-you-mean suggestions: closest candidates by edit distance, and by dotted suffix.

A dotted path such as ``fc`` is also matched against candidates that end with it (``head.fc``),
which is the usual mistake when a module sits one level deeper than the user thought.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterable, Iterator, List, Optional

# Suggestion work is bounded whatever the input: a name longer than this is no typo of a real one,
# a huge candidate list (a model with a million modules) is cut, a distance is computed only where
# the names differ (common ends dropped), within the band that can still match, stopping as soon
# as it cannot; one suggestion spends at most CALL_BUDGET units of work (a candidate looked at, a
# cell of a distance table) and one check at most CHECK_BUDGET on all its suggestions together.
# (20,000 records and one misspelled 80-character name once took a minute: every name compared
# in full with every other.)
MAX_NAME = 80
MAX_CANDIDATES = 20_000
CALL_BUDGET = 150_000
CHECK_BUDGET = 2_000_000

_budget: contextvars.ContextVar[Optional[List[int]]] = contextvars.ContextVar("suggest_budget",
                                                                             default=None)


@contextlib.contextmanager
def suggestion_budget(work: int = CHECK_BUDGET) -> Iterator[None]:
    """Within this block, all suggestions together spend at most ``work`` units; past that,
    names get no suggestion (their diagnostics are rarely among those shown)."""
    token = _budget.set([work])
    try:
        yield
    finally:
        _budget.reset(token)


def _trimmed(a: str, b: str):
    """``a`` and ``b`` without their common beginning and end (the distance is the same)."""
    shorter = min(len(a), len(b))
    start = 0
    while start < shorter and a[start] == b[start]:
        start += 1
    tail = 0
    while tail < shorter - start and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return a[start:len(a) - tail], b[start:len(b) - tail]


def edit_distance(a: str, b: str, limit: Optional[int] = None) -> int:
    """Damerau-Levenshtein distance (optimal string alignment); with ``limit``, any distance
    above it is reported as ``limit + 1``, computed only in the band of width 2 * limit + 1 and
    given up as soon as every alignment costs more."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    cap = la + lb if limit is None else limit
    if abs(la - lb) > cap:
        return cap + 1
    if not la or not lb:
        return la or lb
    far = cap + 1
    prev2: List[int] = []
    prev = [j if j <= cap else far for j in range(lb + 1)]
    for i in range(1, la + 1):
        cur = [far] * (lb + 1)
        cur[0] = i if i <= cap else far
        lo, hi = max(1, i - cap), min(lb, i + cap)
        for j in range(lo, hi + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            best = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, prev2[j - 2] + 1)
            cur[j] = best if best <= cap else far
        if min(cur[lo - 1:hi + 1]) > cap:
            return far
        prev2, prev = prev, cur
    return prev[lb]


class _Work:
    """What one suggestion may still spend: its own share, within the check's."""

    def __init__(self) -> None:
        self.left = CALL_BUDGET
        self.check = _budget.get()
        if self.check is not None:
            self.left = min(self.left, self.check[0])

    def spend(self, units: int) -> bool:
        """Take ``units``; False (and nothing taken) when they are not there."""
        if units > self.left:
            self.left = 0
            return False
        self.left -= units
        if self.check is not None:
            self.check[0] -= units
        return True


def _suffix_match(name: str, cand: str) -> bool:
    """``fc`` for ``head.fc``: the name is right, the path above it is missing."""
    return "." in cand and (cand.endswith("." + name) or name.endswith("." + cand.split(".")[-1])
                            and cand.endswith("." + name.split(".")[-1]) and "." not in name)


def rank_candidates(name: str, candidates: Iterable[str], limit: int = 3) -> List[str]:
    """Candidates worth suggesting for ``name``, best first."""
    if len(name) > MAX_NAME:
        return []
    work = _Work()
    budget = max(1, min(3, len(name) // 3 + (1 if len(name) > 3 else 0)))
    lowered = name.lower()
    scored, seen = [], set()
    for cand in candidates:
        if len(seen) >= MAX_CANDIDATES or not work.spend(1):
            break
        if cand in seen or cand == name:
            continue
        seen.add(cand)
        if _suffix_match(name, cand):
            scored.append((0.5 + cand.count("."), cand))
        elif abs(len(cand) - len(name)) <= budget:  # the distance is at least the length difference
            a, b = _trimmed(lowered, cand.lower())
            if not work.spend(len(a) * (2 * budget + 1)):
                break
            d = edit_distance(a, b, budget)
            if d <= budget:
                scored.append((float(d), cand))
    scored.sort(key=lambda t: (t[0], len(t[1]), t[1]))
    if not scored:
        return []
    # only the closest: a farther second guess is noise next to a near miss
    best = scored[0][0]
    return [c for score, c in scored if score == best][:limit]


def did_you_mean(name: str, candidates: Iterable[str]) -> Optional[str]:
    best = rank_candidates(name, candidates)
    if not best:
        return None
    if len(best) == 1:
        return f"did you mean '{best[0]}'?"
    return "did you mean " + ", ".join(f"'{c}'" for c in best[:-1]) + f" or '{best[-1]}'?"
