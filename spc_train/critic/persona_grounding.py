"""Persona grounding: how much each speaker's talk says about their OWN persona, above chance, when it is talk.

Faithfulness asks whether a conversation contradicts its profiles; a conversation that never mentions them passes.
This expert asks the complement, per candidate alone, with the sentence embedder (cosine of unit embeddings). The unit
is a sentence of an utterance (`recitation.sentences`), so that what one sentence says cannot be diluted, or padded,
by the rest of its utterance. For speaker s:

1. Each sentence of s is a statement, an echo or talk. A statement of attribute a recites it (`recitation.recites`:
   a's whole wording, however framed, or most of its content words) or has a cosine to it of at least
   `COPY_SIMILARITY` (0.9: "I'm a nurse." for "I work as a nurse."). An echo repeats an earlier sentence of the
   conversation word for word (`recitation.echoes`: a parroted turn, the same filler again). The rest is talk.
2. Baseline: the partner's attributes are assigned one-to-one to the talk of s (largest summed cosine); the baseline
   is the mean cosine of those that got a sentence. It is what this talk earns for a profile that is not the
   speaker's (chance, plus the partner's topics that s picks up), so being long or generic earns nothing.
3. A sentence with cosine c to attribute a earns clip((min(c, 0.9) - baseline) / (0.9 - baseline), 0, 1); the
   attributes of s are assigned one-to-one to the talk of s (largest summed credit).
4. The statements of s together are worth one: the statement that gains most over the talk's credit of its attribute
   adds that gain divided by the number of statements of s. Saying once, plainly, who one is belongs to a
   conversation (SPC speakers do: "I'm a nurse."); every further statement makes each worth less.
5. The score of s is the mean credit of their attributes times their talk share, the share of the words of s in talk
   sentences: every recited or echoed word costs. A candidate scores the mean over its speakers with a persona.
   Range [0, 1], higher = better grounded.

Gaming loses (`spc_train.health.gaming`, each copy at the real conversation's word count): a framed recitation is all
statements (talk share 0); a listing is statements, then repeated fillers, which are echoes; a speaker who parrots
the partner says only echoes; a conversation cut short for a recitation keeps about half its talk share and gains a
fraction of one statement. Statements are not worth nothing because on SPC they are much of the evidence: with talk
alone, own personas beat swapped ones with an AUC of only 0.73-0.76 on the shipped sample. The price: one or two
statements added to a conversation can still raise its score; reciting the profile lowers it.

Measured with all-MiniLM-L6-v2 on the first 60 conversations of the shipped sample (`docs/persona_grounding.md`):
the real conversation scores above each gamed copy on 97-100% of them, and own personas beat swapped ones with an
AUC of 0.91-0.93 (derangement seeds 0-3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .recitation import echoes, recites, sentences

Embed = Callable[[list[str]], np.ndarray]

# A cosine at which a sentence restates an attribute rather than talks about it (all-MiniLM-L6-v2: "I am a nurse." /
# "I'm a nurse." 0.95, "I love animals and have two dogs." / "I love animals, and I have two dogs." 0.99, while
# "My favorite music is jazz." / "I love jazz." is 0.88), and the cosine of full credit.
COPY_SIMILARITY = 0.9
# The baseline when the partner has no persona (or s no talk): the mean baseline of 100 SPC conversations.
CHANCE_CREDIT = 0.4


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
    own: np.ndarray,
    partner: np.ndarray,
    units: np.ndarray,
    recited: np.ndarray,
    echoed: np.ndarray,
    lengths: np.ndarray,
    copy_similarity: float = COPY_SIMILARITY,
) -> dict:
    """One speaker's grounding (steps 1-5 of the module docstring) from unit vectors of their attributes, the
    partner's and their sentences (`units`), which sentence has `recited` which attribute (attributes x sentences,
    the lexical rule), which sentences are `echoed`, and their `lengths` in words: `score` in [0, 1], per attribute
    `grounded` (in [0, 1]), `column` (the sentence that earned it, -1 for none) and whether it was `stated`, the
    `baseline`, the `talk_share`, and which sentences are `statements`."""
    own_similarity = own @ units.T
    states = (recited | (own_similarity >= copy_similarity)) & ~echoed[None, :]
    statements = states.any(axis=0)
    talk = np.flatnonzero(~(statements | echoed))
    partner_credit, partner_column = matched_credit((partner @ units.T)[:, talk])
    assigned = partner_column >= 0
    baseline = float(partner_credit[assigned].mean()) if assigned.any() else CHANCE_CREDIT
    ramp = np.clip((np.minimum(own_similarity, copy_similarity) - baseline) / (copy_similarity - baseline), 0.0, 1.0)
    grounded, talk_column = matched_credit(ramp[:, talk])
    column = np.full(len(own), -1)
    column[talk_column >= 0] = talk[talk_column[talk_column >= 0]]
    # The statements together are worth one: the best one's gain over the talk, shared among all of them.
    said = np.where(states, ramp, 0.0)
    gain = said.max(axis=1, initial=0.0) - grounded
    stated = np.zeros(len(own), dtype=bool)
    if len(own) and gain.max() > 0:
        best = int(gain.argmax())
        grounded[best] += gain[best] / statements.sum()
        column[best], stated[best] = int(said[best].argmax()), True
    column[grounded <= 0] = -1
    talk_share = float(lengths[talk].sum() / lengths.sum()) if lengths.sum() else 0.0
    return {
        "score": float(grounded.mean() * talk_share) if len(own) else 0.0,
        "grounded": grounded,
        "column": column,
        "baseline": baseline,
        "talk_share": talk_share,
        "statements": statements,
        "stated": stated,
    }


class PersonaGroundingExpert:
    """Persona grounding in [0, 1]; HIGHER is better, unlike the filters' probabilities of something bad.

    `kind` is the recipe's role: `filter` (selection keeps a candidate scoring at least `threshold`) or `vote` (one
    more vote beside the FED policies, for the survivor with the highest score). After `score`, `reasons[i]` lists,
    for every attribute of candidate i: the `speaker`, the `turn` and `utterance` of that speaker holding the
    best-matching `sentence` and its raw cosine `similarity`, the turn whose sentence earned the credit
    (`credited_turn`, None when none did), whether that sentence is the speaker's one credited statement (`stated`),
    the attribute's `credit` in [0, 1], and the speaker's `baseline` and `talk_share`. Unparsed candidates and those
    without turns or personas score NaN with reason None, and embed nothing.
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
        units = [
            (position, turn["speaker"], part)
            for position, turn in enumerate(candidate["turns"])
            for part in sentences(turn["text"])
        ]
        echoed = np.array(echoes([part for _, _, part in units]), dtype=bool)
        scores, reasons = [], []
        for speaker in (1, 2):
            own = _persona(candidate, speaker)
            if not own:
                continue
            mine = [i for i, (_, who, _) in enumerate(units) if who == speaker]
            texts = [units[i][2] for i in mine]
            own_vectors, unit_vectors = _stack(own, vectors), _stack(texts, vectors)
            recited = np.array([[recites(text, attribute) for text in texts] for attribute in own], dtype=bool)
            result = speaker_grounding(
                own_vectors,
                _stack(_persona(candidate, 3 - speaker), vectors),
                unit_vectors,
                recited,
                echoed[mine],
                np.array([len(text.split()) for text in texts]),
                self.copy_similarity,
            )
            scores.append(result["score"])
            similarity = own_vectors @ unit_vectors.T
            for a, attribute in enumerate(own):
                best = units[mine[int(similarity[a].argmax())]] if mine else None
                column = int(result["column"][a])
                reasons.append(
                    {
                        "speaker": speaker,
                        "attribute": attribute,
                        "turn": best[0] if best else None,
                        "utterance": candidate["turns"][best[0]]["text"] if best else None,
                        "sentence": best[2] if best else None,
                        "similarity": round(float(similarity[a].max()), 6) if best else None,
                        "credited_turn": units[mine[column]][0] if column >= 0 else None,
                        "stated": bool(result["stated"][a]),
                        "credit": round(float(result["grounded"][a]), 6),
                        "baseline": round(result["baseline"], 6),
                        "talk_share": round(result["talk_share"], 6),
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
