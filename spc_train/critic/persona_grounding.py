"""Persona grounding: how much each speaker's talk says about their OWN persona, above a chance baseline.

Faithfulness asks whether a conversation contradicts its profiles; a conversation that never mentions them passes.
This expert asks the complement, per candidate alone, with the sentence embedder (cosine of unit embeddings). The unit
of talk is a sentence of an utterance (split after . ! ?), so that what one sentence says cannot be diluted, or
padded, by the rest of its utterance.

1. For speaker s, the credit of attribute a is the cosine of the sentence of s that grounds it, where each sentence
   grounds at most one attribute and each attribute counts at most one sentence (the one-to-one assignment that
   maximises the summed cosine; negative cosines count 0).
2. Baseline: the same credit for the partner's attributes, over the same sentences of s, averaged over the
   attributes that got a sentence. It is what a sentence of this talk earns for a profile that is not the speaker's
   (chance, plus the partner's topics that s picks up), so a long or generic conversation gains nothing by being long
   or generic.
3. Attribute a scores clip((credit - baseline) / (COPY_SIMILARITY - baseline), 0, 1); a speaker scores the mean over
   their attributes, a candidate the mean over its speakers with a persona. Range [0, 1], higher = better grounded:
   0 is no better than the partner's profile, 1 is a paraphrase as close as a paraphrase may be.

Why copying does not pay: a sentence whose cosine to any attribute of either profile is at least `COPY_SIMILARITY`
(0.9) is a near copy and earns nothing, for any attribute, so reciting the profile scores 0, also when the copies are
pasted into longer utterances ("Hi! I'm a hair stylist. You?"), which a whole-utterance cosine would let pass. On SPC
4.9% of utterances hold such a sentence ("I work in a factory.", "I'm a nurse."): stating an attribute as it is
written costs no conversation, and it is exactly what this measure does not reward. One sentence that lists every
attribute ("I bought a house, run a dog school and love sweets.") stays below the copy threshold against each single
attribute, but the one-to-one assignment lets it ground only one of them: it adds at most 1 / |persona| to its
speaker's score. Not caught: one paraphrase below 0.9 per attribute per sentence; that is grounding as an embedder
sees it, and the FED policies judge whether it reads as conversation.

Measured on 50 SPC test conversations with all-MiniLM-L6-v2 (`docs/persona_grounding.md`): own personas beat another
pair's on 92% of conversations, AUC 0.92; reciting the attributes scores 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

# A cosine at which a sentence restates an attribute rather than talks about it (all-MiniLM-L6-v2: "I am a nurse." /
# "I'm a nurse." 0.95, "I love animals and have two dogs." / "I love animals, and I have two dogs." 0.99, while
# "My favorite music is jazz." / "I love jazz." is 0.88).
COPY_SIMILARITY = 0.9
# The baseline when the partner has no persona (or s no sentence left): the mean baseline of 100 SPC conversations.
CHANCE_CREDIT = 0.4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of an utterance, split after . ! or ? (an utterance without one is one sentence)."""
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def sentence_embed(model, batch_size: int = 128) -> Embed:
    """An `embed` callable from a sentence-transformers model: unit vectors, no progress bar."""

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        )

    return embed


def matched_credit(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per attribute (row): its credit under the one-to-one attribute-sentence assignment of largest total
    similarity, and the sentence (column) it got, -1 for none. Similarities below 0 count 0."""
    from scipy.optimize import linear_sum_assignment

    credit = np.zeros(similarity.shape[0])
    column = np.full(similarity.shape[0], -1)
    if similarity.size:
        weights = np.clip(similarity, 0.0, None)
        rows, columns = linear_sum_assignment(weights, maximize=True)
        credit[rows], column[rows] = weights[rows, columns], columns
    return credit, column


def speaker_grounding(
    own: np.ndarray, partner: np.ndarray, units: np.ndarray, copy_similarity: float = COPY_SIMILARITY
) -> dict:
    """One speaker's grounding from unit vectors of their attributes, the partner's, and their sentences (`units`):
    `score` in [0, 1], per attribute `grounded` (in [0, 1]) and `column` (the sentence that earned a credit above 0,
    else -1), the `baseline`, and which sentences are `copies`."""
    own_similarity, partner_similarity = own @ units.T, partner @ units.T
    copies = np.zeros(len(units), dtype=bool)
    for similarity in (own_similarity, partner_similarity):
        if similarity.size:
            copies |= (similarity >= copy_similarity).any(axis=0)
    kept = np.flatnonzero(~copies)
    credit, column = matched_credit(own_similarity[:, kept])
    partner_credit, partner_column = matched_credit(partner_similarity[:, kept])
    assigned = partner_column >= 0
    baseline = float(partner_credit[assigned].mean()) if assigned.any() else CHANCE_CREDIT
    grounded = np.clip((credit - baseline) / (copy_similarity - baseline), 0.0, 1.0)
    earned = (column >= 0) & (grounded > 0)
    credited = np.full(len(own), -1)
    credited[earned] = kept[column[earned]]
    return {
        "score": float(grounded.mean()),
        "grounded": grounded,
        "column": credited,
        "baseline": baseline,
        "copies": copies,
    }


class PersonaGroundingExpert:
    """Persona grounding in [0, 1]; HIGHER is better, unlike the filters' probabilities of something bad.

    `kind` is the recipe's role: `filter` (selection keeps a candidate scoring at least `threshold`) or `vote` (one
    more vote beside the FED policies, for the survivor with the highest score). After `score`, `reasons[i]` lists,
    for every attribute of candidate i: the `speaker`, the `turn` and `utterance` of that speaker holding the
    best-matching `sentence` and its raw cosine `similarity` (at least COPY_SIMILARITY: a copy, which earns nothing),
    the turn whose sentence earned the credit (`credited_turn`, None when none did), the attribute's `credit` in
    [0, 1], and the speaker's `baseline`. Unparsed candidates and those without turns or personas score NaN with
    reason None, and embed nothing.
    """

    def __init__(
        self,
        name: str,
        embed: Embed,
        role: str = "vote",
        threshold: float | None = None,
        copy_similarity: float = COPY_SIMILARITY,
    ):
        self.name, self.embed, self.kind, self.threshold = name, embed, role, threshold
        self.copy_similarity = copy_similarity
        self.reasons: list[list[dict] | None] = []

    def score(self, candidates: list[dict]) -> list[float]:
        scorable = [bool(c.get("parsed", True) and c["turns"] and _personas(c)) for c in candidates]
        vectors = self._vectors([c for c, ok in zip(candidates, scorable) if ok])
        scores, self.reasons = [], []
        for candidate, ok in zip(candidates, scorable):
            value, reason = self._ground(candidate, vectors) if ok else (math.nan, None)
            scores.append(value)
            self.reasons.append(reason)
        return scores

    def _vectors(self, candidates: list[dict]) -> dict[str, np.ndarray]:
        """Each distinct attribute and sentence embedded once (candidates of a pair share their profiles)."""
        texts = [text for c in candidates for text in _personas(c)]
        texts += [part for c in candidates for turn in c["turns"] for part in sentences(turn["text"])]
        texts = list(dict.fromkeys(texts))
        if not texts:
            return {}
        matrix = np.asarray(self.embed(texts), dtype=float)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        return dict(zip(texts, matrix))

    def _ground(self, candidate: dict, vectors: dict[str, np.ndarray]) -> tuple[float, list[dict]]:
        scores, reasons = [], []
        for speaker in (1, 2):
            own = _persona(candidate, speaker)
            if not own:
                continue
            units = [
                (position, part)
                for position, turn in enumerate(candidate["turns"])
                if turn["speaker"] == speaker
                for part in sentences(turn["text"])
            ]
            own_vectors, unit_vectors = _stack(own, vectors), _stack([part for _, part in units], vectors)
            result = speaker_grounding(
                own_vectors, _stack(_persona(candidate, 3 - speaker), vectors), unit_vectors, self.copy_similarity
            )
            scores.append(result["score"])
            similarity = own_vectors @ unit_vectors.T
            for a, attribute in enumerate(own):
                best = int(similarity[a].argmax()) if units else None
                column = int(result["column"][a])
                reasons.append(
                    {
                        "speaker": speaker,
                        "attribute": attribute,
                        "turn": units[best][0] if best is not None else None,
                        "utterance": candidate["turns"][units[best][0]]["text"] if best is not None else None,
                        "sentence": units[best][1] if best is not None else None,
                        "similarity": round(float(similarity[a, best]), 6) if best is not None else None,
                        "credited_turn": units[column][0] if column >= 0 else None,
                        "credit": round(float(result["grounded"][a]), 6),
                        "baseline": round(result["baseline"], 6),
                    }
                )
        return float(np.mean(scores)), reasons


def _persona(candidate: dict, speaker: int) -> list[str]:
    return [a for a in candidate.get(f"user{speaker}_persona") or [] if a and a.strip()]


def _personas(candidate: dict) -> list[str]:
    return _persona(candidate, 1) + _persona(candidate, 2)


def _stack(texts: list[str], vectors: dict[str, np.ndarray]) -> np.ndarray:
    width = len(next(iter(vectors.values()))) if vectors else 0
    return np.stack([vectors[text] for text in texts]) if texts else np.zeros((0, width))
