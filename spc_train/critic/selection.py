"""Selection (PAPER.md §2): hard filters, then a majority vote of the quality policies, one winner per pair.

Works from stored critiques alone, so `spc-train select` can re-select with other thresholds without re-scoring.
"""

from __future__ import annotations

import math
from collections import defaultdict


def passes(row: dict, thresholds: dict[str, float]) -> bool:
    """Parsed, and every filter score present below its threshold (a NaN score fails)."""
    if not row["parsed"]:
        return False
    for name, threshold in thresholds.items():
        value = row["scores"].get(name)
        if value is not None and not (value < threshold):
            return False
    return True


def _pick(survivors: list[dict], policies: list[str], filters: list[str]) -> tuple[dict, dict]:
    """Each policy's winner by pairwise wins among survivors; most policy wins, then summed wins, then index."""
    if not policies:
        best = min(survivors, key=lambda r: (sum(r["scores"].get(f, 0.0) for f in filters), r["candidate"]))
        return best, {}
    members = [r["candidate"] for r in survivors]
    votes: dict[int, int] = defaultdict(int)
    summed: dict[int, float] = defaultdict(float)
    for policy in policies:
        wins = {}
        for row in survivors:
            matrix = row["pairwise"].get(policy) or []
            wins[row["candidate"]] = sum(
                matrix[other] for other in members if other != row["candidate"] and not math.isnan(matrix[other])
            )
            summed[row["candidate"]] += wins[row["candidate"]]
        winner = max(members, key=lambda c: (wins[c], -c))
        votes[winner] += 1
    best = max(survivors, key=lambda r: (votes[r["candidate"]], summed[r["candidate"]], -r["candidate"]))
    return best, {"votes": votes[best["candidate"]], "wins": round(summed[best["candidate"]], 6)}


def select(rows: list[dict], thresholds: dict[str, float], policies: list[str]) -> tuple[list[dict], dict]:
    """The best candidate of every pair that has a survivor, and statistics (pairs left without one are listed)."""
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_pair[row["pair_id"]].append({**row, "passed": passes(row, thresholds)})
    selected, unselected = [], []
    for pair_id, candidates in by_pair.items():
        survivors = [c for c in candidates if c["passed"]]
        if not survivors:
            unselected.append(pair_id)
            continue
        best, detail = _pick(survivors, policies, list(thresholds))
        selected.append({**best, "selected": True, **detail})
    checked = [dict(row, passed=passes(row, thresholds)) for row in rows]
    stats = {
        "candidates": len(rows),
        "pairs": len(by_pair),
        "selected": len(selected),
        "pairs_without_survivor": unselected,
        "parse_rate": _rate(r["parsed"] for r in rows),
        "pass_rate": _rate(r["passed"] for r in checked),
        "filter_pass_rates": {
            name: _rate(r["scores"].get(name, 0.0) < t for r in rows) for name, t in thresholds.items()
        },
    }
    return selected, stats


def _rate(flags) -> float:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else float("nan")
