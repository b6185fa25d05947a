"""The figures probes report: ROC AUC of two score sets, and win / position-consistency rates of pairwise answers.

Pairwise judges are asked in both orders. `win_rate` is the mean probability that the known-better item wins,
averaged over the two orders (position bias cancels, as in the FED policies). `position_consistency` is the share
of items on which both orders name the same winner; a judge that answers "1" whatever is shown first gets 0, one
with strong opinions unrelated to the items about 0.5.
"""

from __future__ import annotations

import math


def roc_auc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half; NaN scores are left out, NaN if a side is empty."""
    positives = [p for p in positives if p == p]
    negatives = [n for n in negatives if n == n]
    if not positives or not negatives:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def win_rate(better_first: list[float], better_second: list[float]) -> float:
    """Mean P(the better item wins): `better_first[i]` is P("1") with it shown first, `better_second[i]` P("2") with
    it shown second."""
    if not better_first:
        return math.nan
    return sum((a + b) / 2 for a, b in zip(better_first, better_second)) / len(better_first)


def position_consistency(better_first: list[float], better_second: list[float]) -> float:
    """Share of items where both orders pick the same winner (exactly 0.5 picks none, so it never agrees)."""
    if not better_first:
        return math.nan
    agree = sum((a > 0.5 and b > 0.5) or (a < 0.5 and b < 0.5) for a, b in zip(better_first, better_second))
    return agree / len(better_first)
