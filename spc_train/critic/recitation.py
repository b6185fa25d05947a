"""Recitation and echo: sentences that restate a persona attribute, or an earlier sentence, instead of talking.

Lexical, deterministic and model-free, so that the `persona_grounding` critic and an evaluation of generated
conversations (`recitation_rate`) apply one rule. A sentence is a piece of an utterance split after . ! or ?
(`sentences`). Its words are lower-cased runs of letters and digits, contractions spelled out ("I'm" is "i am"),
each cut to a crude stem: one final "ing", "ed", "es", "s" or "e" goes when three letters stay, and a doubled final
consonant is then undoubled, so "baking" / "bakes" / "bake" meet, and "planning" / "plan". An attribute's content
words are its stems outside `STOP_WORDS`.

A sentence recites an attribute when
1. it holds the attribute's whole word sequence: a copy, however it is framed ("Oh, fun fact, i love to bake cookies,
   haha, what about you?"), one-word attributes too ("Hey, guess what, I am a nurse."); or
2. it holds at least `MIN_SHARED` of the attribute's content words and at least `RECITED_SHARE` of them: a copy with
   words changed or dropped ("I love baking cookies!"). A sentence listing several attributes recites each of them.
A sentence on the attribute's topic that shares a word or so with it ("My oven is always busy with cookies." for "I
love to bake cookies.") is no recitation: that is the talk a persona is for. On the first 60 conversations of the
shipped SPC sample, 5.6% of sentences recite an attribute of either speaker.

A sentence echoes when its words repeat those of an earlier sentence of the conversation (either speaker's) word for
word: a parroted turn, or the same filler ("Cool.") again.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

# Words a recitation may add or drop without saying anything else: function words.
STOP_WORDS = frozenset(
    """a about after again all also am an and any are as at be been being both but by can could did do does doing
    down during each few for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or other our ours ourselves
    out over own really same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves""".split()
)
# Of an attribute's content words, how many a sentence must hold to recite it: "I love baking cookies!" holds all
# three of "I love to bake cookies.", "I plan to go to business school next year." needs five of its six.
MIN_SHARED = 2
RECITED_SHARE = 0.75
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_CONTRACTIONS = (
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), ""),
)
_SUFFIXES = ("ing", "ed", "es", "s", "e")
_DOUBLED = re.compile(r"([b-df-hj-kmnp-rtv-y])\1$")


def sentences(text: str) -> list[str]:
    """The sentences of an utterance, split after . ! or ? (an utterance without one is one sentence)."""
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def stem(word: str) -> str:
    """The word without one final "ing", "ed", "es", "s" (not of "ss") or "e", when three letters stay, and a
    doubled final consonant then undoubled ("planning" and "plan" meet)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
            word = word[: -len(suffix)]
            return word[:-1] if _DOUBLED.search(word) else word
    return word


@lru_cache(maxsize=1 << 16)
def words(text: str) -> tuple[str, ...]:
    """The stems of `text`, in order (cached: a conversation's sentences are checked against every attribute)."""
    text = text.lower().replace("\u2019", "'")
    for contraction, spelled in _CONTRACTIONS:
        text = contraction.sub(spelled, text)
    return tuple(stem(word) for word in _WORD.findall(text))


@lru_cache(maxsize=1 << 16)
def content_words(text: str) -> frozenset[str]:
    return frozenset(word for word in words(text) if word not in STOP_WORDS)


def recites(sentence: str, attribute: str) -> bool:
    """Whether `sentence` restates `attribute` (rule 1 or 2 of the module docstring)."""
    said, stated = words(sentence), words(attribute)
    if stated and any(said[i : i + len(stated)] == stated for i in range(len(said) - len(stated) + 1)):
        return True
    wanted = content_words(attribute)
    shared = len(wanted & content_words(sentence))
    return shared >= MIN_SHARED and shared >= RECITED_SHARE * len(wanted)


def recited(sentence: str, attributes: list[str]) -> bool:
    """Whether `sentence` recites any of `attributes`."""
    return any(recites(sentence, attribute) for attribute in attributes)


def echoes(texts: list[str]) -> list[bool]:
    """For each sentence of a conversation, in order: whether it repeats an earlier one word for word."""
    seen, out = set(), []
    for text in texts:
        key = words(text)
        out.append(bool(key) and key in seen)
        seen.add(key)
    return out


def recitation_rate(records: list[dict]) -> float:
    """Share of all sentences of all turns that recite an attribute of either speaker's persona; NaN for none."""
    flags = [
        recited(part, persona)
        for record in records
        for persona in [[*(record.get("user1_persona") or []), *(record.get("user2_persona") or [])]]
        for turn in record.get("turns") or []
        for part in sentences(turn["text"])
    ]
    return sum(flags) / len(flags) if flags else math.nan
