"""A probe's figure read as a verdict: `informative`, `weak` or `at chance`.

Every probe figure is on the same scale: 0.5 is what a judge that ignores its input gets, 1 a judge that always
knows the answer (an AUC, a win rate, a position-consistency rate). The thresholds are the recipe's
(`critic.probe_informative`, `critic.probe_weak`). A figure well under 0.5 is a judge that prefers the wrong answer:
for an expert that is used one way round, that is no better than chance, so it is `at chance` too, with a note.
"""

from __future__ import annotations

import math

INFORMATIVE, WEAK, AT_CHANCE = "informative", "weak", "at chance"
ORDER = (AT_CHANCE, WEAK, INFORMATIVE)  # worst first


def verdict(figure: float | None, informative: float = 0.7, weak: float = 0.6) -> str:
    """`informative` at or above `informative`, `weak` at or above `weak`, else (NaN too: nothing measured) `at
    chance`."""
    if figure is None or not math.isfinite(figure):
        return AT_CHANCE
    if figure >= informative:
        return INFORMATIVE
    if figure >= weak:
        return WEAK
    return AT_CHANCE


def worst(*verdicts: str) -> str:
    """The least informative of several verdicts (a probe with two figures is as good as its weaker one)."""
    return min(verdicts, key=ORDER.index)


def inverted(figure: float | None, weak: float = 0.6) -> bool:
    """Whether the judge reliably prefers the WRONG answer (figure at or under 1 - weak)."""
    return figure is not None and math.isfinite(figure) and figure <= 1 - weak
