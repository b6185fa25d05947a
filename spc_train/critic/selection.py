"""Selection (PAPER.md §2): hard filters, then a majority vote of the quality policies, one winner per pair.

Works from stored critiques alone, so `spc-train select` can re-select with other thresholds without re-scoring.

The filters of `thresholds` score something bad (P(contradiction), P(toxic)): a candidate fails at or above the
threshold. Persona grounding scores something good, so it goes apart, as `grounding = (role, threshold)`: a candidate
fails BELOW its threshold (None: no filter), and as a `vote` it adds one vote, for the best grounded survivor.
"""

from __future__ import annotations

import math
from collections import defaultdict

GROUNDING = "persona_grounding"  # the expert's name in `scores`
GROUNDING_ROLES = ("filter", "vote")


def _grounding_threshold(grounding: tuple[str, float | None] | None) -> float | None:
    if grounding is None:
        return None
    role, threshold = grounding
    if role not in GROUNDING_ROLES:
        raise ValueError(f"persona_grounding role must be one of {', '.join(GROUNDING_ROLES)}, got {role!r}.")
    if role == "filter" and threshold is None:
        raise ValueError("persona_grounding as a filter needs a threshold.")
    return threshold


def grounded_enough(value: float | None, threshold: float | None) -> bool:
    """At least the threshold (higher is better); a NaN score fails, a missing one (expert not run) passes."""
    return threshold is None or value is None or value >= threshold


def passes(row: dict, thresholds: dict[str, float], grounding: tuple[str, float | None] | None = None) -> bool:
    """Parsed, every filter score present below its threshold, and grounding at least its own (a NaN score fails)."""
    if not row["parsed"]:
        return False
    for name, threshold in thresholds.items():
        value = row["scores"].get(name)
        if value is not None and not (value < threshold):
            return False
    return grounded_enough(row["scores"].get(GROUNDING), _grounding_threshold(grounding))


def _grounding_winner(survivors: list[dict]) -> int | None:
    """The survivor with the highest grounding score (the lower index on ties); None when none has a score."""
    scored = [r for r in survivors if not _missing(r["scores"].get(GROUNDING))]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["scores"][GROUNDING], -r["candidate"]))["candidate"]


def _missing(value) -> bool:
    return value is None or math.isnan(value)


def _pick(survivors: list[dict], policies: list[str], filters: list[str], vote: bool) -> tuple[dict, dict]:
    """Each voter's winner: a policy's by pairwise wins among survivors, grounding's by its score. Most votes, then
    summed policy wins, then the lower index."""
    grounding_winner = _grounding_winner(survivors) if vote else None
    if not policies and grounding_winner is None:
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
    if grounding_winner is not None:
        votes[grounding_winner] += 1
    best = max(survivors, key=lambda r: (votes[r["candidate"]], summed[r["candidate"]], -r["candidate"]))
    return best, {"votes": votes[best["candidate"]], "wins": round(summed[best["candidate"]], 6)}


def select(
    rows: list[dict],
    thresholds: dict[str, float],
    policies: list[str],
    *,
    grounding: tuple[str, float | None] | None = None,
) -> tuple[list[dict], dict]:
    """The best candidate of every pair that has a survivor, and statistics (pairs left without one are listed).

    `grounding`: None when persona_grounding is not a critic expert (today's rule); else (role, threshold) as above.
    """
    threshold = _grounding_threshold(grounding)
    vote = grounding is not None and grounding[0] == "vote"
    by_pair: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_pair[row["pair_id"]].append({**row, "passed": passes(row, thresholds, grounding)})
    selected, unselected = [], []
    for pair_id, candidates in by_pair.items():
        survivors = [c for c in candidates if c["passed"]]
        if not survivors:
            unselected.append(pair_id)
            continue
        best, detail = _pick(survivors, policies, list(thresholds), vote)
        selected.append({**best, "selected": True, **detail})
    checked = [dict(row, passed=passes(row, thresholds, grounding)) for row in rows]
    # Filters judge parsed candidates only (the critic never scores the others): a filter is blamed for what it saw.
    parsed = [r for r in rows if r["parsed"]]
    filter_pass_rates = {name: _rate(r["scores"].get(name, 0.0) < t for r in parsed) for name, t in thresholds.items()}
    if threshold is not None:
        filter_pass_rates[GROUNDING] = _rate(grounded_enough(r["scores"].get(GROUNDING), threshold) for r in parsed)
    stats = {
        "candidates": len(rows),
        "pairs": len(by_pair),
        "selected": len(selected),
        "pairs_without_survivor": unselected,
        "parse_rate": _rate(r["parsed"] for r in rows),
        "pass_rate": _rate(r["passed"] for r in checked),
        "filter_pass_rates": filter_pass_rates,
    }
    return selected, stats


def _rate(flags) -> float:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else float("nan")


def filter_thresholds(critic) -> dict[str, float]:
    """The thresholds of the recipe's filter experts (higher score = worse), by expert name."""
    known = {
        "faithfulness": critic.faithfulness_threshold,
        "faithfulness_nli": critic.faithfulness_nli_threshold,
        "toxicity": critic.toxicity_threshold,
    }
    return {name: value for name, value in known.items() if name in critic.experts}


def grounding_rule(critic) -> tuple[str, float | None] | None:
    """How `persona_grounding` takes part in the selection (role, threshold), if it is an expert."""
    if GROUNDING not in critic.experts:
        return None
    return critic.persona_grounding_role, critic.persona_grounding_threshold
