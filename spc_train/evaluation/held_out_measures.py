"""Measures of generated conversations that no critic expert optimises, for the held-out pairs: how varied the
wording is (distinct-n), how often conversations repeat each other (MinHash near duplicates), their size (turns,
words), how much of them recites the profiles (`critic.recitation`), and the format (parse and stop rates).

Near duplicates: two conversations whose word 3-gram sets have a Jaccard similarity of at least 0.5, estimated with
datasketch's MinHash (128 permutations) and found with its LSH index, so the cost grows linearly with the rows.
"""

from __future__ import annotations

import math

from ..critic.recitation import recitation_rate
from .metrics import distinct_n, tokenize

NEAR_DUPLICATE_JACCARD = 0.5
PERMUTATIONS = 128


def _signature(text: str):
    from datasketch import MinHash

    tokens = tokenize(text)
    shingles = {" ".join(tokens[i : i + 3]).encode() for i in range(max(1, len(tokens) - 2))}
    signature = MinHash(num_perm=PERMUTATIONS, seed=1)
    signature.update_batch(sorted(shingles))
    return signature


def near_duplicate_flags(texts: list[str], others: list[str] | None = None) -> list[bool]:
    """Per text: whether another of `texts` (others None) or one of `others` is a near duplicate of it."""
    from datasketch import MinHashLSH

    mine = [_signature(text) for text in texts]
    theirs = mine if others is None else [_signature(text) for text in others]
    index = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=PERMUTATIONS)
    for key, signature in enumerate(theirs):
        index.insert(key, signature)
    flags = []
    for key, signature in enumerate(mine):
        found = [j for j in index.query(signature) if others is not None or j != key]
        flags.append(any(signature.jaccard(theirs[j]) >= NEAR_DUPLICATE_JACCARD for j in found))
    return flags


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else math.nan


def conversation_measures(records: list[dict]) -> dict[str, float]:
    """distinct-1/2, near-duplicate rate, mean turns and words, recitation rate of `records` (their `turns`)."""
    utterances = [turn["text"] for record in records for turn in record.get("turns") or []]
    texts = ["\n".join(turn["text"] for turn in record.get("turns") or []) for record in records]
    return {
        "distinct_1": distinct_n(utterances, 1) if utterances else math.nan,
        "distinct_2": distinct_n(utterances, 2) if utterances else math.nan,
        "near_duplicate_rate": _mean(near_duplicate_flags(texts)) if len(texts) > 1 else math.nan,
        "turns_mean": _mean(len(record.get("turns") or []) for record in records),
        "words_mean": _mean(sum(len(tokenize(t["text"])) for t in record.get("turns") or []) for record in records),
        "recitation_rate": recitation_rate(records),
    }


def generation_measures(rows: list[dict]) -> dict[str, float]:
    """`conversation_measures` plus the format: parse rate, stopped rate, and mean new tokens."""
    return {
        **conversation_measures(rows),
        "parse_rate": _mean(row["parsed"] for row in rows),
        "stopped_rate": _mean(row["finish_reason"] == "stop" for row in rows),
        "tokens_mean": _mean(row["num_tokens"] for row in rows),
    }
