"""The `evaluate` stage: the paper's measurements (PAPER.md §3) of one dataset, as one flat dict of numbers.

The same function measures the seed conversations (the report's first column) and each iteration's selection, so
the columns are comparable. Models come in as loaders (`Evaluators`): a measurement that is not asked for never loads
its model. Measurements that compare with the seed (detection, IR trained on one and tested on the other) take the
seed as `reference`; for the seed itself they compare it with itself (IR) or are left out (detection).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..health.option_mass import DEFAULT_MIN_OPTION_MASS, recording, warn_if_low
from ..judge import Judge
from . import detection, profile_extraction
from .detection import detection_pairs, detection_test
from .embedding_metrics import embedding_statistics
from .llm_judge import judge_options, llm_judge_scores
from .metrics import dataset_statistics
from .next_utterance import ir_hit_at_1
from .profile_extraction import Contradicting, Negate

logger = logging.getLogger(__name__)

TOXICITY_BUCKETS = (0.2, 0.8)  # the paper's Perspective API buckets (Table 9): weak < .2, medium, strong > .8


@dataclass
class Evaluators:
    """Loaders of what the measurements need; each is called (and its model loaded) only when used."""

    judge: Callable[[], Judge] | None = None
    embed: Callable[[], Callable] | None = None
    toxicity: Callable[[list[dict]], list[float]] | None = None  # P(toxic) per conversation (the critic's backend)
    negate: Callable[[], Negate] | None = None
    contradicting: Callable[[], Contradicting | None] | None = None


def answer_options(config) -> list[str]:
    """The single-token answers the judge must be able to give for the asked measurements (checked at start-up)."""
    asked = set(config.measurements)
    options = []
    if "detection" in asked:
        options += detection.OPTIONS
    if "extraction" in asked:
        options += profile_extraction.OPTIONS
    if "llm_judge" in asked:
        options += judge_options(tuple(config.llm_judge_families))
    return list(dict.fromkeys(options))


def toxicity_metrics(scores: list[float], threshold: float) -> dict[str, float]:
    """Share of conversations over the critic's toxicity threshold, and the paper's weak/medium/strong shares."""
    scores = [s for s in scores if s == s]
    if not scores:
        names = ("toxicity_rate", "toxicity_weak", "toxicity_medium", "toxicity_strong", "toxicity_mean")
        return {name: float("nan") for name in names}
    low, high = TOXICITY_BUCKETS
    n = len(scores)
    return {
        "toxicity_rate": sum(s >= threshold for s in scores) / n,
        "toxicity_weak": sum(s < low for s in scores) / n,
        "toxicity_medium": sum(low <= s <= high for s in scores) / n,
        "toxicity_strong": sum(s > high for s in scores) / n,
        "toxicity_mean": sum(scores) / n,
    }


def next_utterance_metrics(records: list[dict], reference: list[dict], candidates: int, seed: int) -> dict:
    """IR baseline hit@1 trained on the seed and tested on this dataset, and the other way round (Table 2)."""
    metrics = {}
    for persona in ("none", "self"):
        label = "persona" if persona == "self" else "none"
        for name, train, test in (("seed_to_self", reference, records), ("self_to_seed", records, reference)):
            try:
                hit = ir_hit_at_1(train, test, persona=persona, candidates=candidates, seed=seed)
            except ValueError as error:  # too few distinct utterances for `candidates`: not measurable, not fatal
                logger.warning("Next-utterance prediction not measured (%s): %s", name, error)
                hit = float("nan")
            metrics[f"ir_{name}_{label}"] = hit
    return metrics


def evaluate_dataset(
    records: list[dict],
    *,
    config,
    evaluators: Evaluators,
    reference: list[dict] | None = None,
    toxicity_scores: list[float] | None = None,
    toxicity_threshold: float = 0.5,
    seed: int = 0,
    min_option_mass: float = DEFAULT_MIN_OPTION_MASS,
) -> dict[str, Any]:
    """Every measurement of `config.measurements` on `records`; `reference` is the seed (None: this is the seed).

    `toxicity_scores` are the critic's stored scores of these records, when it scored them: no second pass.
    Each judge measurement also gives `option_mass_<measurement>_mean` / `_min`, the raw probability its judge put
    on the answer options (a WARNING when the mean is under `min_option_mass`, `critic.min_option_mass`).
    """
    asked = set(config.measurements)
    judged = records[: config.judged_conversations]
    metrics: dict[str, Any] = {}
    masses: dict[str, dict | None] = {}
    if "statistics" in asked:
        metrics.update(dataset_statistics(records))
    if "embedding" in asked and evaluators.embed:
        logger.debug("Embedding diversity and persona coverage of %d conversations.", len(records))
        metrics.update(embedding_statistics(records, evaluators.embed(), seed=seed))
    if "toxicity" in asked and (toxicity_scores is not None or evaluators.toxicity):
        scores = toxicity_scores if toxicity_scores is not None else evaluators.toxicity(records)
        metrics.update(toxicity_metrics(scores, toxicity_threshold))
    if "next_utterance" in asked:
        metrics.update(next_utterance_metrics(records, reference or records, config.ir_candidates, seed))
    if "detection" in asked and reference is not None and evaluators.judge:
        pairs, skipped = detection_pairs(reference, judged)
        logger.debug("Detection test on %d user pairs (skipped: %s).", len(pairs), skipped)
        with _mass(metrics, masses, "detection", evaluators.judge()) as judge:
            metrics.update(detection_test(judge, pairs))
    if "extraction" in asked and evaluators.judge:
        logger.debug("Profile extraction on %d conversations.", len(judged))
        negate = evaluators.negate() if evaluators.negate else None
        contradicting = evaluators.contradicting() if evaluators.contradicting else None
        with _mass(metrics, masses, "extraction", evaluators.judge()) as judge:
            metrics.update(
                profile_extraction.profile_extraction(
                    judge, judged, seed, negate, contradicting, threshold=config.extraction_threshold
                )
            )
    if "llm_judge" in asked and evaluators.judge:
        logger.debug("LLM-judge scores of %d conversations.", len(judged))
        with _mass(metrics, masses, "llm_judge", evaluators.judge()) as judge:
            metrics.update(llm_judge_scores(judge, judged, tuple(config.llm_judge_families)))
    warn_if_low({f"measurement '{name}'": figures for name, figures in masses.items()}, min_option_mass)
    return metrics


@contextmanager
def _mass(metrics: dict, masses: dict, measurement: str, judge: Judge) -> Iterator[Judge]:
    """Record the judge's option mass over one measurement into `option_mass_<measurement>_mean` / `_min` (NaN when
    it asked nothing), and its figures into `masses` (warned about together, once)."""
    with recording(judge) as log:
        yield judge
    figures = masses[measurement] = log.summary()
    nan = float("nan")
    metrics[f"option_mass_{measurement}_mean"] = figures["mean"] if figures else nan
    metrics[f"option_mass_{measurement}_min"] = figures["min"] if figures else nan


def nli_contradicting(nli, threshold: float = 0.5) -> Contradicting:
    """Distractor picker for profile extraction: pool attributes an NLI classifier finds contradict the persona."""

    def pick(persona: list[str], pool: list[str]) -> list[str]:
        premises = [a for a in persona for _ in pool]
        hypotheses = [b for _ in persona for b in pool]
        probabilities = nli.contradiction(premises, hypotheses) if premises else []
        best: dict[str, float] = {}
        for hypothesis, p in zip(hypotheses, probabilities):
            best[hypothesis] = max(best.get(hypothesis, 0.0), p)
        return [b for b, p in sorted(best.items(), key=lambda item: -item[1]) if p > threshold]

    return pick
