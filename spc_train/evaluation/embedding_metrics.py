"""Embedding-based dataset metrics: semantic diversity and persona coverage.

Every function takes ``embed(texts: list[str]) -> np.ndarray`` of shape ``(len(texts), dim)``, e.g.
`sentence_embedder(load_embedder("sentence-transformers/all-MiniLM-L6-v2"))`, or a fake in tests. Rows are
L2-normalised again here (zero rows stay zero), so cosine similarity is a dot product. Wrap `embed` in
`cached_embed` to embed each distinct text once across several metrics.

Definitions:

* **Conversation embedding**: the mean of the unit embeddings of the conversation's non-empty utterances,
  re-normalised. (Embedding the whole conversation as one text would be truncated by MiniLM's 256-token limit.)
* **Embedding diversity** (`embedding_diversity`): the mean cosine *distance* ``1 - cos(a, b)`` over all unordered
  pairs of distinct items, where the items are conversations (``unit="conversation"``) or all non-empty utterances
  pooled over conversations (``unit="utterance"``). Computed exactly in O(n) with
  ``sum_{i != j} cos(e_i, e_j) = |sum_i e_i|^2 - sum_i |e_i|^2``. 0 when all items embed identically; NaN with fewer
  than two items. Pairs of duplicate texts count (a generator that repeats itself gets a lower score).
* **Persona coverage by embedding** (`persona_embedding_coverage`): for one speaker, the share of their (non-empty)
  persona attributes whose maximum cosine to that speaker's own utterances is strictly greater than `threshold`
  (a speaker with attributes but no utterance scores 0). A record's value is the mean over the speakers with a
  persona (as the lexical `metrics.persona_word_overlap`); the dataset value is the mean over records that have
  one. Default threshold `DEFAULT_COVERAGE_THRESHOLD` = 0.5 for all-MiniLM-L6-v2: a paraphrase or direct mention
  ("I love to bake cookies." / "I love to bake cookies and knit.": 0.81) scores well above it, unrelated chit-chat
  ("What do you do for fun?": 0.35) below, but a close topic can pass ("I like cooking.": 0.65). It is a
  calibration choice, not the paper's; on 300 SPC test conversations it gives 0.38 with the true personas and 0.08
  with shuffled ones (0.49 / 0.21 at 0.4, 0.30 / 0.03 at 0.6). Always read it beside the shuffled-persona baseline
  (`shuffled_personas`), which measures how much "coverage" a threshold grants by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

DEFAULT_COVERAGE_THRESHOLD = 0.5


def sentence_embedder(model, batch_size: int = 128) -> Embed:
    """An `embed` callable from a sentence-transformers model (normalised embeddings, no progress bar)."""

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        )

    return embed


def cached_embed(embed: Embed) -> Embed:
    """Wrap `embed` so that each distinct text is embedded once over all calls (the cache lives in the wrapper)."""
    cache: dict[str, np.ndarray] = {}

    def cached(texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in cache))
        if missing:
            for text, vector in zip(missing, _normalise(embed(missing)), strict=True):
                cache[text] = vector
        if not texts:
            return np.zeros((0, 0))
        return np.stack([cache[text] for text in texts])

    return cached


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"embed must return a 2-D array, got shape {matrix.shape}.")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _embed(embed: Embed, texts: list[str]) -> np.ndarray:
    return _normalise(embed(texts)) if texts else np.zeros((0, 0))


def _utterances(record: dict[str, Any], speaker: int | None = None) -> list[str]:
    return [
        turn["text"].strip()
        for turn in record.get("turns") or []
        if turn["text"].strip() and (speaker is None or turn.get("speaker") == speaker)
    ]


def mean_pairwise_cosine_distance(vectors: np.ndarray) -> float:
    """Mean of ``1 - cos`` over unordered pairs of distinct rows (rows are normalised first); NaN for < 2 rows."""
    vectors = _normalise(vectors)
    n = len(vectors)
    if n < 2:
        return float("nan")
    total = vectors.sum(axis=0)
    pair_cosine_sum = float(total @ total) - float(np.einsum("ij,ij->", vectors, vectors))
    return 1.0 - pair_cosine_sum / (n * (n - 1))


def conversation_embeddings(records: list[dict[str, Any]], embed: Embed) -> np.ndarray:
    """One unit vector per record with at least one utterance: the re-normalised mean of its utterance embeddings."""
    texts = [_utterances(record) for record in records]
    texts = [utterances for utterances in texts if utterances]
    flat = [text for utterances in texts for text in utterances]
    if not flat:
        return np.zeros((0, 0))
    vectors = _embed(embed, flat)
    bounds = np.cumsum([0, *(len(utterances) for utterances in texts)])
    means = np.stack([vectors[start:stop].mean(axis=0) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)])
    return _normalise(means)


def embedding_diversity(records: list[dict[str, Any]], embed: Embed, *, unit: str = "conversation") -> float:
    """Mean pairwise cosine distance between conversations or between utterances (see the module docstring)."""
    if unit == "conversation":
        vectors = conversation_embeddings(records, embed)
    elif unit == "utterance":
        vectors = _embed(embed, [text for record in records for text in _utterances(record)])
    else:
        raise ValueError(f"unit must be 'conversation' or 'utterance', got {unit!r}.")
    return mean_pairwise_cosine_distance(vectors) if len(vectors) else float("nan")


def speaker_embedding_coverage(
    persona: list[str], utterances: list[str], embed: Embed, threshold: float = DEFAULT_COVERAGE_THRESHOLD
) -> float:
    """Share of `persona` attributes whose max cosine to `utterances` exceeds `threshold`; NaN without attributes."""
    persona = [attribute.strip() for attribute in persona if attribute.strip()]
    if not persona:
        return float("nan")
    if not utterances:
        return 0.0
    similarity = _embed(embed, persona) @ _embed(embed, list(utterances)).T
    return float(np.count_nonzero(similarity.max(axis=1) > threshold)) / len(persona)


def record_embedding_coverage(
    record: dict[str, Any], embed: Embed, threshold: float = DEFAULT_COVERAGE_THRESHOLD
) -> float:
    """Mean `speaker_embedding_coverage` over the record's speakers that have a persona; NaN when neither has."""
    shares = []
    for speaker in (1, 2):
        share = speaker_embedding_coverage(
            record.get(f"user{speaker}_persona") or [], _utterances(record, speaker), embed, threshold
        )
        if not math.isnan(share):
            shares.append(share)
    return sum(shares) / len(shares) if shares else float("nan")


def persona_embedding_coverage(
    records: list[dict[str, Any]], embed: Embed, *, threshold: float = DEFAULT_COVERAGE_THRESHOLD
) -> float:
    """Mean `record_embedding_coverage` over the records that have a persona; NaN when none has."""
    values = [record_embedding_coverage(record, embed, threshold) for record in records]
    values = [value for value in values if not math.isnan(value)]
    return sum(values) / len(values) if values else float("nan")


def shuffled_personas(records: list[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Copies of `records` whose persona pairs are reassigned by a seeded random derangement.

    Each record gets the (user1, user2) personas of another record (a random cyclic shift of a seeded shuffle, so no
    record keeps its own when there are at least two). Coverage on these is the chance level of a threshold.
    """
    if len(records) < 2:
        return [dict(record) for record in records]
    order = np.random.default_rng(seed).permutation(len(records))
    donor = {int(order[i]): int(order[(i + 1) % len(order)]) for i in range(len(order))}
    return [
        {
            **record,
            "user1_persona": records[donor[i]].get("user1_persona"),
            "user2_persona": records[donor[i]].get("user2_persona"),
        }
        for i, record in enumerate(records)
    ]


def embedding_statistics(
    records: list[dict[str, Any]], embed: Embed, *, threshold: float = DEFAULT_COVERAGE_THRESHOLD, seed: int = 0
) -> dict[str, float]:
    """The embedding metrics of one dataset (embeds each distinct text once).

    Keys: ``embedding_diversity_conversation``, ``embedding_diversity_utterance``, ``persona_embedding_coverage``,
    ``persona_embedding_coverage_shuffled`` (the same with personas shuffled between records, see
    `shuffled_personas`).
    """
    embed = cached_embed(embed)
    return {
        "embedding_diversity_conversation": embedding_diversity(records, embed, unit="conversation"),
        "embedding_diversity_utterance": embedding_diversity(records, embed, unit="utterance"),
        "persona_embedding_coverage": persona_embedding_coverage(records, embed, threshold=threshold),
        "persona_embedding_coverage_shuffled": persona_embedding_coverage(
            shuffled_personas(records, seed), embed, threshold=threshold
        ),
    }
