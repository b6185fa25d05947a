"""Degraded copies of a conversation: a known-worse partner for pairwise and score probes.

Each keeps the conversation's own words and personas, so the only difference a judge can see is the one a
conversation-quality judge must see: order (turns shuffled), a repetition loop (one line said again and again), or
a cut (the first third only). Which one a conversation gets cycles with its index, so every kind is probed.
"""

from __future__ import annotations

import random

KINDS = ("shuffled", "looped", "truncated")


def shuffled(record: dict, rng: random.Random) -> list[dict]:
    """The turns' texts in another order (speakers keep alternating); differs from the original when it can."""
    texts = [turn["text"] for turn in record["turns"]]
    order = list(range(len(texts)))
    for _ in range(8):
        rng.shuffle(order)
        if order != sorted(order) or len(order) < 2:
            break
    return [{**turn, "text": texts[i]} for turn, i in zip(record["turns"], order)]


def looped(record: dict, rng: random.Random) -> list[dict]:
    """The first two turns, then one of them repeated for the rest of the conversation's length."""
    turns = record["turns"]
    head = turns[:2]
    line = head[rng.randrange(len(head))]["text"] if head else ""
    return head + [{**turn, "text": line} for turn in turns[2:]]


def truncated(record: dict, rng: random.Random) -> list[dict]:
    """The first third of the turns (at least one)."""
    turns = record["turns"]
    return turns[: max(1, len(turns) // 3)]


def degraded(record: dict, kind: str, seed: int = 0) -> dict:
    """A copy of `record` with its turns degraded by `kind` (one of `KINDS`), seeded by (seed, pair)."""
    rng = random.Random(f"{seed}:{record.get('pair_id')}:{kind}")
    make = {"shuffled": shuffled, "looped": looped, "truncated": truncated}[kind]
    return {**record, "turns": make(record, rng), "degraded": kind}


def degraded_copies(records: list[dict], seed: int = 0) -> list[dict]:
    """One degraded copy per record, the kinds in turn."""
    return [degraded(record, KINDS[i % len(KINDS)], seed) for i, record in enumerate(records)]
