"""Gamed copies of a conversation: what a critic that can be gamed would prefer to the real one.

Each copy keeps the record's personas and pair id and has exactly the real conversation's number of words
(`words`), its speakers alternating from the real first speaker, so neither a length-only nor a position-only judge
can tell it from the real conversation. A copy is known to be worse: it recites the profiles instead of talking
(`recitation`, `listing`), repeats the partner instead of answering (`echo`), or ends the real conversation early
to append a recitation (`appended`). Which frame a recited attribute gets is seeded by (seed, pair, kind).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

KINDS = ("recitation", "listing", "echo", "appended")

# Chatty frames around a recited attribute: they keep a near copy of the attribute under a whole-utterance cosine
# threshold while the sentence says nothing but the profile.
FRAMES = (
    "Oh, fun fact, {attribute}, haha, what about you?",
    "Well, {attribute}, so that is me!",
    "Hey, guess what, {attribute}.",
    "Honestly, {attribute}, you know?",
    "Haha, {attribute}, anyway.",
)
FILLERS = ("Cool.", "Yeah.", "Nice.", "Okay.")


def words(turns: list[dict]) -> int:
    """The conversation's length as a length-only judge sees it: whitespace-separated words over all turns."""
    return sum(len(turn["text"].split()) for turn in turns)


def _clause(attribute: str) -> str:
    text = attribute.strip().rstrip(".!?")
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text.startswith("I ") else text


def _speakers(record: dict) -> tuple[int, int]:
    first = record["turns"][0]["speaker"] if record.get("turns") else 1
    return first, 3 - first


def _persona(record: dict, speaker: int) -> list[str]:
    return [a for a in record.get(f"user{speaker}_persona") or [] if a and a.strip()] or ["i like to talk"]


def _fit(texts: Iterator[str], first: int, budget: int) -> list[dict]:
    """Alternating turns from `texts` until `budget` words are reached, the last turn cut to the exact count."""
    turns, used = [], 0
    for text in texts:
        if used >= budget:
            break
        tokens = text.split()[: budget - used]
        if not tokens:
            continue
        turns.append({"speaker": first if len(turns) % 2 == 0 else 3 - first, "text": " ".join(tokens)})
        used += len(tokens)
    return turns


def _recited(record: dict, rng: random.Random, first: int) -> Iterator[str]:
    """Each speaker states their attributes in frames, in turn, cycling (the frames change on each round)."""
    for a, b in zip(itertools.cycle(_persona(record, first)), itertools.cycle(_persona(record, 3 - first))):
        yield rng.choice(FRAMES).format(attribute=_clause(a))
        yield rng.choice(FRAMES).format(attribute=_clause(b))


def recitation(record: dict, rng: random.Random) -> list[dict]:
    """Every turn a framed attribute of its speaker ("Oh, fun fact, i love to bake cookies, haha, what about you?")."""
    first, _ = _speakers(record)
    return _fit(_recited(record, rng, first), first, words(record["turns"]))


def listing(record: dict, rng: random.Random) -> list[dict]:
    """One turn per speaker listing their whole persona, then one-word fillers ("Cool." / "Yeah.")."""
    first, second = _speakers(record)

    def texts() -> Iterator[str]:
        yield " ".join(_clause(a) + "." for a in _persona(record, first))
        yield " ".join(_clause(a) + "." for a in _persona(record, second))
        while True:
            yield rng.choice(FILLERS)

    return _fit(texts(), first, words(record["turns"]))


def echo(record: dict, rng: random.Random) -> list[dict]:
    """The first speaker's real turns, each answered by the partner repeating it word for word."""
    first, _ = _speakers(record)
    own = [turn["text"] for turn in record["turns"] if turn["speaker"] == first] or ["hi"]

    def texts() -> Iterator[str]:
        for text in itertools.cycle(own):
            yield text
            yield text

    return _fit(texts(), first, words(record["turns"]))


def appended(record: dict, rng: random.Random) -> list[dict]:
    """The real conversation's opening, then each speaker's framed attributes, to the real conversation's length:
    the real talk plus a recitation that a critic paying for recited attributes would reward."""
    first, _ = _speakers(record)
    budget = words(record["turns"])
    recited = _fit(_recited(record, rng, first), first, max(1, budget // 2))
    head = _fit((turn["text"] for turn in record["turns"]), first, budget - words(recited))
    tail_first = 3 - head[-1]["speaker"] if head else first
    recited = _fit(_recited(record, rng, tail_first), tail_first, budget - words(head))
    return head + recited


def gamed(record: dict, kind: str, seed: int = 0) -> dict:
    """A copy of `record` with its turns replaced by the gamed variant `kind` (one of `KINDS`)."""
    rng = random.Random(f"{seed}:{record.get('pair_id')}:{kind}")
    make = {"recitation": recitation, "listing": listing, "echo": echo, "appended": appended}[kind]
    return {**record, "turns": make(record, rng), "gamed": kind}


def gamed_copies(records: list[dict], kind: str, seed: int = 0) -> list[dict]:
    """One gamed copy of each record, all of `kind`."""
    return [gamed(record, kind, seed) for record in records]
