"""User profile construction (paper §3.1.2): k attributes per user, none redundant, none contradicting another.

Profiles grow one random candidate π′ at a time. π′ is rejected as *redundant* when its embedding cosine to an
attribute already in the profile is above 0.9, and as *inconsistent* when the NLI model says π′ ⇒ ¬π or π ⇒ ¬π′ for
some π in the profile, where ¬π is a negation the LLM wrote. Every rejection is kept with the attribute it clashed
with, so a profile set can be explained and thresholds can be revisited.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, deque
from collections.abc import Callable

import numpy as np

from ..console import progress
from ..nli import NliBackend
from .expand import Complete, complete_in_batches, normalise

logger = logging.getLogger(__name__)

Negate = Callable[[list[str]], list[str]]

# The paper does not give its negation prompt. This one asks for a sentence that cannot hold together with the
# attribute (not just "not" inserted), in the attribute's own first-person voice, so NLI compares like with like.
NEGATION_TEMPLATE = (
    "Write the negation of the following statement about a person: one short sentence in the first person that "
    "cannot be true at the same time as the statement. Answer with the sentence only.\n"
    "Statement: {attribute}\nNegation:"
)


class ProfileConstructionError(ValueError):
    """Profiles cannot be built as asked; `profiles` and `rejections` hold what was built before stopping."""

    def __init__(self, message: str, profiles: list[list[str]] | None = None, rejections: list[dict] | None = None):
        super().__init__(message)
        self.profiles, self.rejections = profiles or [], rejections or []


def llm_negate(complete: Complete, batch_size: int = 64) -> Negate:
    """A `negate` callable that asks the LLM (`NEGATION_TEMPLATE`) and keeps the first line of each answer.

    An empty answer falls back to "It is not true that ...", so the NLI check never compares against nothing.
    """

    def negate(attributes: list[str]) -> list[str]:
        prompts = [NEGATION_TEMPLATE.format(attribute=a) for a in attributes]
        answers = complete_in_batches(complete, prompts, batch_size, "negations")
        negations = []
        for attribute, answer in zip(attributes, answers):
            line = next((s.strip().strip("\"'") for s in answer.splitlines() if s.strip()), "")
            if not line:
                logger.warning("Empty negation for %r; using a templated one.", attribute)
                line = f"It is not true that {attribute[0].lower()}{attribute[1:]}"
            negations.append(line)
        return negations

    return negate


class NegationCache:
    """One negation per attribute, written on first need; `prefetch` lets the LLM see full batches."""

    def __init__(self, negate: Negate, batch_size: int = 32):
        self.negate, self.batch_size, self.cache = negate, batch_size, {}

    def prefetch(self, attributes: list[str]) -> None:
        missing = [a for a in dict.fromkeys(attributes) if a not in self.cache]
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            negations = list(self.negate(batch))
            if len(negations) != len(batch):
                raise ValueError(f"`negate` returned {len(negations)} negations for {len(batch)} attributes.")
            self.cache.update(zip(batch, negations))

    def __call__(self, attribute: str) -> str:
        if attribute not in self.cache:
            self.prefetch([attribute])
        return self.cache[attribute]


def redundant_with(candidate: np.ndarray, members: np.ndarray, texts: list[str], threshold: float) -> dict | None:
    """The profile attribute whose cosine to the candidate is above `threshold` (the closest one), if any."""
    if not len(texts):
        return None
    similarities = members @ candidate
    best = int(np.argmax(similarities))
    if similarities[best] > threshold:
        return {
            "reason": "redundant",
            "clashed_with": texts[best],
            "score": float(similarities[best]),
            "direction": None,
        }
    return None


def inconsistent_with(
    candidate: str, profile: list[str], nli: NliBackend, negation: Callable[[str], str], threshold: float
) -> dict | None:
    """The strongest NLI clash, checking π′ ⇒ ¬π and π ⇒ ¬π′ for every π in the profile in one batch."""
    if not profile:
        return None
    premises = [candidate] * len(profile) + profile
    hypotheses = [negation(p) for p in profile] + [negation(candidate)] * len(profile)
    scores = nli.entailment(premises, hypotheses)
    best = int(np.argmax(scores))
    if scores[best] < threshold:
        return None
    direction = "candidate => not(member)" if best < len(profile) else "member => not(candidate)"
    clashed = profile[best % len(profile)]
    return {"reason": "inconsistent", "clashed_with": clashed, "score": float(scores[best]), "direction": direction}


def _unique_pool(attributes: list[str], embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    if len(embeddings) != len(attributes):
        raise ValueError(f"Got {len(embeddings)} embeddings for {len(attributes)} attributes.")
    first = {}
    for index, attribute in enumerate(attributes):
        first.setdefault(attribute, index)
    if len(first) < len(attributes):
        logger.debug("Profiles: %d duplicate attributes ignored.", len(attributes) - len(first))
    return list(first), normalise(np.asarray(embeddings)[list(first.values())])


def _check_request(pool: int, count: int, size: int) -> None:
    if pool == 0:
        raise ProfileConstructionError("No persona attributes: profiles need a non-empty attribute set.")
    if size < 1 or count < 0:
        raise ProfileConstructionError(f"Profile size must be at least 1 and count at least 0 (got {size}, {count}).")
    if size > pool:
        raise ProfileConstructionError(f"Profiles of {size} attributes need at least {size} attributes; got {pool}.")
    if count > math.comb(pool, size):
        raise ProfileConstructionError(
            f"Asked for {count} distinct profiles of {size} attributes, but {pool} attributes allow only "
            f"{math.comb(pool, size)}."
        )


def _stop(message: str, profiles: list, rejections: list[dict], count: int) -> ProfileConstructionError:
    reasons = dict(Counter(r["reason"] for r in rejections))
    return ProfileConstructionError(
        f"Built {len(profiles)} of {count} profiles: {message} Rejections so far: {reasons or 'none'}.",
        profiles,
        rejections,
    )


class _ProfileFiller:
    """The state one profile build shares across profiles: random source, negation cache, draw budget, rejections."""

    def __init__(self, pool, vectors, nli, negation, rng, *, budget, batch, redundancy, entailment):
        self.pool, self.vectors, self.nli, self.negation, self.rng = pool, vectors, nli, negation, rng
        self.budget, self.batch, self.redundancy, self.entailment = budget, batch, redundancy, entailment
        self.draws, self.rejections = 0, []

    def clash(self, index: int, members: list[int], upcoming: deque, tried: set[int]) -> dict | None:
        """Why pool[index] cannot join `members` (redundant first: it is cheap), or None."""
        texts = [self.pool[i] for i in members]
        found = redundant_with(self.vectors[index], self.vectors[members], texts, self.redundancy)
        if found is None and members:
            if any(text not in self.negation.cache for text in [*texts, self.pool[index]]):
                # A miss: negate the upcoming candidates too, so the LLM sees a full batch.
                upcoming.extend(_draw(self.rng, len(self.pool), tried, self.batch - len(upcoming)))
                self.negation.prefetch([*texts, self.pool[index], *(self.pool[i] for i in upcoming)])
            found = inconsistent_with(self.pool[index], texts, self.nli, self.negation, self.entailment)
        return found

    def fill(self, number: int, size: int) -> list[int] | str:
        """Attribute indices of profile `number`, or why it cannot be completed."""
        members: list[int] = []
        tried: set[int] = set()
        upcoming: deque[int] = deque()
        while len(members) < size:
            if self.draws >= self.budget:
                return f"max_attempts={self.budget} candidate draws used up."
            if not upcoming:
                upcoming.extend(_draw(self.rng, len(self.pool), tried, self.batch))
                if not upcoming:
                    return f"a profile stuck at {len(members)} attributes after trying all {len(self.pool)}."
            index = upcoming.popleft()
            self.draws += 1
            if found := self.clash(index, members, upcoming, tried):
                self.rejections.append({"profile": number, "candidate": self.pool[index], **found})
            else:
                members.append(index)
        return members


def build_profiles(
    attributes: list[str],
    embeddings: np.ndarray,
    *,
    nli: NliBackend,
    negate: Negate,
    count: int,
    size: int = 5,
    seed: int = 0,
    redundancy_threshold: float = 0.9,
    entailment_threshold: float = 0.5,
    max_attempts: int | None = None,
    negation_batch_size: int = 32,
) -> tuple[list[list[str]], list[dict]]:
    """`count` distinct profiles of `size` attributes, and every rejected candidate with its reason.

    `max_attempts` bounds candidate draws over the whole run (default 50 per attribute slot); a profile that has
    tried every attribute without filling up stops the run too. Either way the error says how many profiles were
    built and why candidates were rejected; it carries them as `error.profiles` / `error.rejections`.
    """
    pool, vectors = _unique_pool(attributes, embeddings)
    _check_request(len(pool), count, size)
    negation = NegationCache(negate, negation_batch_size)
    if count * size >= len(pool):  # most attributes will be needed: negate them all in full batches up front
        logger.debug("Negating all %d attributes up front.", len(pool))
        negation.prefetch(pool)
    filler = _ProfileFiller(
        pool,
        vectors,
        nli,
        negation,
        random.Random(seed),
        budget=50 * count * size if max_attempts is None else max_attempts,
        batch=negation_batch_size,
        redundancy=redundancy_threshold,
        entailment=entailment_threshold,
    )
    profiles: list[list[str]] = []
    seen: set[frozenset] = set()
    with progress(total=count, desc="profiles", unit="profile", disable=count < 50) as bar:
        while len(profiles) < count:
            members = filler.fill(len(profiles), size)
            if isinstance(members, str):
                raise _stop(members, profiles, filler.rejections, count)
            if frozenset(members) in seen:
                filler.rejections.append(
                    {
                        "profile": len(profiles),
                        "candidate": None,
                        "reason": "duplicate_profile",
                        "clashed_with": None,
                        "score": None,
                        "direction": None,
                    }
                )
                continue
            seen.add(frozenset(members))
            profiles.append([pool[i] for i in members])
            bar.update()
    reasons = dict(Counter(r["reason"] for r in filler.rejections))
    logger.debug(
        "Built %d profiles in %d candidate draws (%s).", len(profiles), filler.draws, reasons or "none rejected"
    )
    return profiles, filler.rejections


def _draw(rng: random.Random, n: int, tried: set[int], k: int) -> list[int]:
    """Up to `k` attribute indices this profile has not tried yet, in random order (and now marked tried)."""
    left = n - len(tried)
    if left <= 4 * k:  # a small remainder: sample from what is left rather than retry
        chosen = rng.sample(sorted(set(range(n)) - tried), min(k, left))
    else:
        chosen = []
        while len(chosen) < k:
            index = rng.randrange(n)
            if index not in tried:
                tried.add(index)
                chosen.append(index)
    tried.update(chosen)
    return chosen
