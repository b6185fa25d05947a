"""Known-answer probes for the judge card: does an expert tell a conversation's own personas from another pair's?

A seed conversation was written for its personas, so a grounding expert should score it higher with them than with
the personas of another conversation. Swapping by a seeded derangement keeps everything else equal (same
utterances, same kind of profiles), so the ROC AUC over the two sets is the expert's skill: 0.5 is chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Scorer = Callable[[list[dict]], list[float]]


def swapped_personas(conversations: list[dict], seed: int) -> list[dict]:
    """Copies of `conversations`, each with both personas of another one: a seeded shuffle, shifted by one, so no
    conversation keeps its own (needs at least two)."""
    if len(conversations) < 2:
        raise ValueError("Swapping personas needs at least two conversations.")
    order = np.random.default_rng(seed).permutation(len(conversations))
    donor = {int(order[i]): int(order[(i + 1) % len(order)]) for i in range(len(order))}
    return [
        {
            **conversation,
            "user1_persona": conversations[donor[i]]["user1_persona"],
            "user2_persona": conversations[donor[i]]["user2_persona"],
        }
        for i, conversation in enumerate(conversations)
    ]


def own_and_swapped_scores(expert_or_scorer, conversations: list[dict], seed: int) -> tuple[list[float], list[float]]:
    """Scores of the conversations with their own personas and with swapped ones, in one call (each distinct text
    is embedded or judged once)."""
    score: Scorer = getattr(expert_or_scorer, "score", expert_or_scorer)
    values = list(score(list(conversations) + swapped_personas(conversations, seed)))
    return values[: len(conversations)], values[len(conversations) :]


def grounding_auc(expert_or_scorer, conversations: list[dict], seed: int) -> float:
    """ROC AUC of own-persona (positive) against swapped-persona scores; NaN scores are left out."""
    from sklearn.metrics import roc_auc_score

    own, swapped = own_and_swapped_scores(expert_or_scorer, conversations, seed)
    pairs = [(1, v) for v in own if not math.isnan(v)] + [(0, v) for v in swapped if not math.isnan(v)]
    if len({label for label, _ in pairs}) < 2:
        return math.nan
    return float(roc_auc_score([label for label, _ in pairs], [value for _, value in pairs]))
