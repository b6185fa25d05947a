"""Experts by name, as the recipe lists them (`critic.experts`), and the `critique` stage that runs them all.

Like open-r1's reward registry: a string key in YAML picks a constructor. Models are loaded once, lazily, and only
if an expert that needs them is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tqdm.auto import tqdm

from .faithfulness import FaithfulnessExpert
from .fed import POLICIES, FedPolicyExpert
from .scoring import Judge
from .toxicity import ToxicityExpert

logger = logging.getLogger(__name__)


def _faithfulness(name, critic, judge, classifier):
    return FaithfulnessExpert(name, judge(), critic.faithfulness_threshold)


def _toxicity(name, critic, judge, classifier):
    if critic.toxicity_model:
        model, tokenizer = classifier(critic.toxicity_model)
        return ToxicityExpert(name, critic.toxicity_threshold, classifier=model, tokenizer=tokenizer)
    return ToxicityExpert(name, critic.toxicity_threshold, judge=judge())


def _policy(name, critic, judge, classifier):
    return FedPolicyExpert(name, judge())


EXPERTS: dict[str, Callable] = {
    "faithfulness": _faithfulness,
    "toxicity": _toxicity,
    **{policy: _policy for policy in POLICIES},
}


def build_experts(critic, judge: Callable[[], Judge], classifier: Callable) -> list:
    """Experts named in the recipe; `judge()` and `classifier(path)` load their models on first use."""
    unknown = [name for name in critic.experts if name not in EXPERTS]
    if unknown:
        raise ValueError(f"Unknown critic expert(s) {unknown}; available: {', '.join(EXPERTS)}.")
    return [EXPERTS[name](name, critic, judge, classifier) for name in critic.experts]


def critique(candidates: list[dict], experts: list) -> list[dict]:
    """Every candidate scored by every expert; FED policies also keep their pairwise matrices."""
    rows = [{**c, "scores": {}, "pairwise": {}} for c in candidates]
    for expert in tqdm(experts, desc="critique", unit="expert"):
        logger.info("Expert %s scores %d candidates.", expert.name, len(rows))
        for row, value in zip(rows, expert.score(candidates)):
            row["scores"][expert.name] = value
        if expert.kind == "policy":
            for row, matrix in zip(rows, expert.pairwise):
                row["pairwise"][expert.name] = matrix
    return rows
