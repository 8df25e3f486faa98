"""Did-you-mean suggestions: closest candidates by edit distance, and by dotted suffix.

A dotted path such as ``fc`` is also matched against candidates that end with it (``head.fc``),
which is the usual mistake when a module sits one level deeper than the user thought.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

# Suggestion work is bounded whatever the input: a name longer than this is no typo of a real one,
# and a huge candidate list (a model with a million modules) is cut, so a diagnostic never costs
# more than a few milliseconds (an unbounded search took a minute on a 1 MB identifier).
MAX_NAME = 80
MAX_CANDIDATES = 20_000


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment)."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    if not la or not lb:
        return la or lb
    prev2: List[int] = []
    prev = list(range(lb + 1))
    for i in range(1, la + 1):
        cur = [i] + [0] * lb
        for j in range(1, lb + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[lb]


def rank_candidates(name: str, candidates: Iterable[str], limit: int = 3) -> List[str]:
    """Candidates worth suggesting for ``name``, best first."""
    if len(name) > MAX_NAME:
        return []
    scored = []
    seen = set()
    budget = max(1, min(3, len(name) // 3 + (1 if len(name) > 3 else 0)))
    for count, cand in enumerate(candidates):
        if count >= MAX_CANDIDATES:
            break
        if cand in seen or cand == name:
            continue
        seen.add(cand)
        if "." in cand and (cand.endswith("." + name) or name.endswith("." + cand.split(".")[-1])
                            and cand.endswith("." + name.split(".")[-1]) and "." not in name):
            # suffix match: the name is right, the path above it is missing
            scored.append((0.5 + cand.count("."), cand))
            continue
        if abs(len(cand) - len(name)) > budget:
            continue  # the distance is at least the difference in length
        d = edit_distance(name.lower(), cand.lower())
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
