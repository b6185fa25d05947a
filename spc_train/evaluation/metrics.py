"""Cheap, deterministic dataset metrics for persona-grounded conversations.

These run on every loop iteration (and on the seed data) without loading a model, so a report can always show how
diversity and persona coverage move between iterations. They are lexical proxies: `persona_word_overlap` counts
shared words, not meaning; an embedding-based coverage metric is the model-backed counterpart.

All functions share one tokenizer (`tokenize`): lowercase, then `re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text)`, i.e.
runs of letters/digits with inner apostrophes kept ("don't" is one token, quotes and other punctuation are dropped).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")

# Function words plus the verbs every persona line starts with ("I like ...", "I love ..."): matching those would
# make every attribute look "mentioned". Words shorter than 3 characters are dropped anyway.
STOP_WORDS = frozenset(
    """
    about after again all also and any are because been before being but can could did does doing don't down
    each enjoy enjoys favorite few for from get got had has have having her here hers him his how i'm i've into
    its it's just like likes lot lots love loves more most much not now off once only other our out own really
    same she should some such than that the their them then there these they this those through too under until
    very was were what when where which while who why will with would you your yours
    """.split()
)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens; the single tokenizer behind every metric here, so numbers stay comparable."""
    return _TOKEN_RE.findall(text.lower())


def content_words(text: str) -> set[str]:
    """Tokens that can carry persona content: at least 3 characters and not a stop word."""
    return {token for token in tokenize(text) if len(token) >= 3 and token not in STOP_WORDS}


def distinct_n(utterances: list[str], n: int) -> float:
    """Corpus-level distinct-n: unique n-grams / total n-grams, pooled over all utterances.

    n-grams never cross utterance boundaries. Pooling (rather than averaging per utterance) is what catches a
    generator that repeats the same phrases across conversations. Returns 0.0 when there is no n-gram at all.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    total = 0
    unique: set[tuple[str, ...]] = set()
    for utterance in utterances:
        tokens = tokenize(utterance)
        for start in range(len(tokens) - n + 1):
            unique.add(tuple(tokens[start : start + n]))
            total += 1
    return len(unique) / total if total else 0.0


def _speaker_coverage(persona: list[str], utterances: Iterable[str]) -> float:
    spoken: set[str] = set()
    for utterance in utterances:
        spoken.update(tokenize(utterance))
    mentioned = sum(1 for attribute in persona if content_words(attribute) & spoken)
    return mentioned / len(persona)


def persona_word_overlap(record: dict[str, Any]) -> float:
    """Share of each speaker's persona attributes echoed (by at least one content word) in their own turns.

    A cheap lexical proxy for persona coverage: an attribute counts as mentioned when one of its content words
    (see `content_words`) appears among the tokens of that speaker's utterances. Attributes without any content
    word can never match and still count in the denominator. The result is the mean over the speakers that have a
    persona; NaN when neither has one.
    """
    shares = []
    for speaker in (1, 2):
        persona = [attribute for attribute in record.get(f"user{speaker}_persona") or [] if attribute.strip()]
        if not persona:
            continue
        own_turns = (turn["text"] for turn in record.get("turns") or [] if turn.get("speaker") == speaker)
        shares.append(_speaker_coverage(persona, own_turns))
    return sum(shares) / len(shares) if shares else float("nan")


def _mean(values: Iterable[float]) -> float:
    """Mean over finite values; NaN when there are none (no numpy warning on empty input)."""
    kept = [float(value) for value in values if value is not None and not math.isnan(value)]
    return sum(kept) / len(kept) if kept else float("nan")


def dataset_statistics(records: list[dict[str, Any]]) -> dict[str, float]:
    """The per-dataset numbers of the report table, comparable between the seed data and every iteration.

    `words_per_utterance` and `distinct_*` pool all utterances of all records; `persona_word_overlap` is the mean
    of the per-record values (records whose speakers have no persona are ignored).
    """
    if not records:
        nan = float("nan")
        return {
            "conversations": 0,
            "turns_per_conversation": nan,
            "words_per_utterance": nan,
            "distinct_1": nan,
            "distinct_2": nan,
            "persona_word_overlap": nan,
        }
    utterances = [turn["text"] for record in records for turn in record.get("turns") or []]
    return {
        "conversations": len(records),
        "turns_per_conversation": len(utterances) / len(records),
        "words_per_utterance": _mean(len(tokenize(utterance)) for utterance in utterances),
        "distinct_1": distinct_n(utterances, 1),
        "distinct_2": distinct_n(utterances, 2),
        "persona_word_overlap": _mean(persona_word_overlap(record) for record in records),
    }


def score_summary(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean critic score per expert (`"<expert>_mean"`, sorted by expert), ignoring missing and NaN scores.

    Experts are not all run on every candidate (a failed filter short-circuits the rest), so each mean is over the
    candidates that expert actually scored; an expert that scored none gets NaN.
    """
    by_expert: dict[str, list[float]] = {}
    for candidate_scores in scores:
        for expert, value in (candidate_scores or {}).items():
            by_expert.setdefault(expert, []).append(value)
    return {f"{expert}_mean": _mean(by_expert[expert]) for expert in sorted(by_expert)}


def bootstrap_mean_interval(
    values: Iterable[float | None], *, seed: int, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of the finite values and its percentile bootstrap interval at `level`.

    A report compares iterations by means over a few hundred candidates; the interval says whether a difference is
    more than resampling noise. NaN and None are left out (an unscored candidate is not a zero); no value gives NaNs,
    one value a zero-width interval. Seeded, so a re-run report prints the same interval.
    """
    import numpy as np

    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be at least 1 and level in (0, 1), got {resamples} and {level}.")
    kept = np.array([float(v) for v in values if v is not None and not math.isnan(v)])
    if not len(kept):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(kept))  # resamples drawn at once: about 32 MB of indices, whatever the size
    means = np.concatenate(
        [
            kept[rng.integers(0, len(kept), size=(min(chunk, resamples - start), len(kept)))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(kept.mean()), float(low), float(high)
