"""Degraded copies of a conversation: a known-worse partner for pairwise and score probes.

Each copy keeps the conversation's personas, speakers, number of turns and number of words (`gaming.words`), so a
judge that reads only length cannot tell it from the original: what differs is what a conversation-quality judge
must see. `shuffled`: the turns' texts in another order; `looped`: the opening, then one line said again and again
(cut or repeated to each turn's length); `spliced`: every second turn replaced by talk from other conversations, cut
or padded to the replaced turn's length. Looped and spliced copies keep every turn's word count too. Which kind a
conversation gets cycles with its index, so every kind is probed.
"""

from __future__ import annotations

import random

KINDS = ("shuffled", "looped", "spliced")


def take(words: list[str], start: int, count: int) -> str:
    """`count` words of `words` from `start` on, going round to the start when they run out (a cut, or a pad with
    the same text)."""
    return " ".join(words[(start + i) % len(words)] for i in range(count)) if words else ""


def padded(turns: list[dict], count: int) -> list[dict]:
    """`turns` with the last turn extended by the conversation's own words from its start, up to `count` words in
    all (unchanged when it has as many already): a length match that adds nothing new."""
    own = " ".join(turn["text"] for turn in turns).split()
    missing = count - len(own)
    if missing <= 0 or not turns:
        return turns
    last = turns[-1]
    return turns[:-1] + [{**last, "text": " ".join([last["text"], take(own, 0, missing)]).strip()}]


def shuffled(record: dict, rng: random.Random, donors: list[dict]) -> list[dict]:
    """The turns' texts in another order (speakers keep alternating); differs from the original when it can."""
    texts = [turn["text"] for turn in record["turns"]]
    order = list(range(len(texts)))
    for _ in range(8):
        rng.shuffle(order)
        if order != sorted(order) or len(order) < 2:
            break
    return [{**turn, "text": texts[i]} for turn, i in zip(record["turns"], order)]


def looped(record: dict, rng: random.Random, donors: list[dict]) -> list[dict]:
    """The first two turns (the first one of a two-turn conversation), then one of them said again and again, each
    turn cut or repeated to its original length."""
    turns = record["turns"]
    head = turns[:2] if len(turns) > 2 else turns[:1]
    line = head[rng.randrange(len(head))]["text"].split()
    return head + [{**turn, "text": take(line, 0, len(turn["text"].split()))} for turn in turns[len(head) :]]


def spliced(record: dict, rng: random.Random, donors: list[dict]) -> list[dict]:
    """Every second turn (the partner's answers) replaced by a turn of another conversation, cut to the replaced
    turn's length or padded with the words that follow it there."""
    if not donors:
        raise ValueError("A spliced copy needs other conversations to take turns from.")
    turns = []
    for position, turn in enumerate(record["turns"]):
        if position % 2 == 0:
            turns.append(turn)
            continue
        donor = rng.choice(donors)["turns"]
        words = " ".join(t["text"] for t in donor).split()
        start = len(" ".join(t["text"] for t in donor[: rng.randrange(len(donor))]).split())
        turns.append({**turn, "text": take(words, start, len(turn["text"].split()))})
    return turns


def degraded(record: dict, kind: str, seed: int = 0, donors: list[dict] = ()) -> dict:
    """A copy of `record` with its turns degraded by `kind` (one of `KINDS`), seeded by (seed, pair); `donors`
    (other conversations) give a spliced copy its foreign turns."""
    rng = random.Random(f"{seed}:{record.get('pair_id')}:{kind}")
    make = {"shuffled": shuffled, "looped": looped, "spliced": spliced}[kind]
    donors = [d for d in donors if d is not record and any(t["text"].split() for t in d.get("turns") or [])]
    return {**record, "turns": make(record, rng, donors), "degraded": kind}


def degraded_copies(records: list[dict], seed: int = 0) -> list[dict]:
    """One degraded copy per record, the kinds in turn; a spliced copy takes its turns from the other records."""
    return [
        degraded(record, KINDS[i % len(KINDS)], seed, records[:i] + records[i + 1 :])
        for i, record in enumerate(records)
    ]
