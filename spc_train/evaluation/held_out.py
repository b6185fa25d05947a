"""Held-out user pairs for the referee: seed conversations that share no user with the run's pairs
(`data.users`), so nothing the loop trains on, replays or shows as a few-shot example has seen their users."""

from __future__ import annotations

import random

from ..data.conversation import too_short
from ..data.users import outside, shares_user, users


def hold_out(seed: list[dict], pairs: list[dict], count: int, *, min_turns: int, rng_seed: str) -> list[dict]:
    """Up to `count` seed conversations with both personas and a usable conversation, sharing no user with `pairs`
    nor with each other (each held-out pair is an independent sample), drawn by `rng_seed`."""
    candidates = [
        record
        for record in outside(seed, pairs)
        if record["user1_persona"] and record["user2_persona"] and not too_short(record["turns"], min_turns)
    ]
    random.Random(rng_seed).shuffle(candidates)
    chosen: list[dict] = []
    seen: set[frozenset[str]] = set()
    for record in candidates:
        if len(chosen) == count:
            break
        if not shares_user(record, seen):
            chosen.append(record)
            seen |= users([record])
    return chosen
