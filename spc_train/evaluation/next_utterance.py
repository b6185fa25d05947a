"""Next-utterance prediction with an IR (tf-idf) ranker: the paper's "IR baseline" row of Table 2 / Table 12.

What this computes, exactly:

* **Examples.** Every turn ``t > 0`` of every test conversation (both speakers' turns; turns with empty text are
  skipped) is one example. The responder is ``turns[t]["speaker"]``.
* **Context** (`build_context`). The previous utterance ``turns[t - 1]["text"]``, optionally preceded by persona
  sentences, joined with single spaces (persona sentences first, in their listed order):

  - ``"none"``: the previous utterance only;
  - ``"self"``: the responder's persona + the previous utterance;
  - ``"their"``: the other speaker's persona (speaker ``3 - responder``) + the previous utterance;
  - ``"both"``: the responder's persona, then the other speaker's, then the previous utterance.

  These are the columns No / Self / Their / Both of the paper's Table 12; Table 2's "Persona" column is ``"self"``.
* **Candidates** (`next_utterance_examples`). The true next utterance (always at index 0) plus ``candidates - 1``
  distractors drawn uniformly, without replacement, from the utterances of *other* conversations of the same test
  set; distractors whose normalised text (lowercase, stripped) equals the true utterance's are redrawn, so a
  generic "Hi!" cannot be its own distractor. Drawing uses ``numpy.random.default_rng(seed)``: the same records and
  seed give the same candidate sets.
* **Ranker** (`TfidfRanker`). A scikit-learn ``TfidfVectorizer`` (the package `tokenize` tokenizer, default smooth
  idf, l2 norm, no stop words) fit on the *training* records' utterances and persona sentences (each one document).
  A candidate's score is the cosine between its tf-idf vector and the context's. Words never seen in training carry
  no weight: that is what "trained on one dataset, tested on another" means for this baseline.
* **hit@1** (`hit_at_1`). 1 when the true utterance scores strictly highest; with ties at the top it counts
  ``1 / (number tied)``, the expected hit@1 of a uniformly random tie-break (so an empty context, where everything
  scores 0, counts 1/20 with 20 candidates: chance). The reported number is the mean over examples.

How this differs from ParlAI's ``ir_baseline`` agent as used for ConvAI2 (the paper's setup):

* ParlAI scores a candidate by the sum of ``1 / (1 + log(1 + freq(w)))`` over the distinct query words ``w`` it
  contains, divided by ``(sqrt(#distinct candidate words) * sqrt(#query words)) ** 0.5`` (``length_penalty=0.5``),
  with frequencies from a ParlAI dictionary built on the training task; here it is a plain tf-idf cosine.
* ParlAI's query is the last ``history_size`` (default 1) observed texts; in the ConvAI2 teachers the persona lines
  are part of the first text of each episode only. Here the persona (by mode) is prepended to *every* context.
* ConvAI2 ships fixed label candidates (19 distractors drawn from the same split) and its ``self``/``their`` teachers
  only ask the model to respond as one side. Here the candidates are drawn by us (as described above) and both
  speakers' turns are predicted. ParlAI breaks score ties by comparing candidate strings; here ties are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spc_train.evaluation.metrics import tokenize

PERSONA_MODES = ("none", "self", "their", "both")


@dataclass(frozen=True)
class NextUtteranceExample:
    """One ranking problem: `candidates[0]` is the true next utterance, the others are distractors."""

    pair_id: str
    turn: int
    context: str
    candidates: tuple[str, ...]


def _persona(record: dict[str, Any], speaker: int) -> list[str]:
    return [sentence.strip() for sentence in record.get(f"user{speaker}_persona") or [] if sentence.strip()]


def build_context(record: dict[str, Any], turn: int, persona: str = "none") -> str:
    """The ranker's query for predicting `record["turns"][turn]` (see the module docstring for the modes)."""
    if persona not in PERSONA_MODES:
        raise ValueError(f"persona must be one of {PERSONA_MODES}, got {persona!r}.")
    turns = record["turns"]
    if not 0 < turn < len(turns):
        raise ValueError(f"turn must be in [1, {len(turns) - 1}], got {turn}.")
    responder = int(turns[turn]["speaker"])
    other = 3 - responder
    sentences: list[str] = []
    if persona in ("self", "both"):
        sentences += _persona(record, responder)
    if persona in ("their", "both"):
        sentences += _persona(record, other)
    return " ".join([*sentences, turns[turn - 1]["text"].strip()])


def _normalised(text: str) -> str:
    return text.strip().lower()


def next_utterance_examples(
    records: list[dict[str, Any]],
    *,
    persona: str = "none",
    candidates: int = 20,
    seed: int = 0,
    max_examples: int | None = None,
) -> list[NextUtteranceExample]:
    """All (or `max_examples` seeded-random, kept in order) next-utterance examples of `records`.

    Distractors come from the other conversations of `records` (see the module docstring). Raises ValueError when
    the records do not hold enough utterances to fill a candidate set.
    """
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}.")
    pool_text: list[str] = []
    pool_conversation: list[int] = []
    positions: list[tuple[int, int]] = []
    for index, record in enumerate(records):
        turns = record.get("turns") or []
        for turn, entry in enumerate(turns):
            if not entry["text"].strip():
                continue
            pool_text.append(entry["text"].strip())
            pool_conversation.append(index)
            if turn > 0:
                positions.append((index, turn))
    rng = np.random.default_rng(seed)
    if max_examples is not None and max_examples < len(positions):
        keep = np.sort(rng.choice(len(positions), size=max_examples, replace=False))
        positions = [positions[i] for i in keep]
    pool_conversation_array = np.asarray(pool_conversation)
    pool_normalised = [_normalised(text) for text in pool_text]
    examples = []
    for index, turn in positions:
        record = records[index]
        answer = record["turns"][turn]["text"].strip()
        answer_key = _normalised(answer)
        eligible = np.flatnonzero(pool_conversation_array != index)
        chosen: list[int] = []
        seen: set[int] = set()
        while len(chosen) < candidates - 1:
            if len(seen) >= len(eligible):
                raise ValueError(f"not enough distinct utterances in other conversations for {candidates} candidates.")
            draw = int(eligible[rng.integers(len(eligible))])
            if draw in seen:
                continue
            seen.add(draw)
            if pool_normalised[draw] != answer_key:
                chosen.append(draw)
        examples.append(
            NextUtteranceExample(
                pair_id=str(record.get("pair_id", index)),
                turn=turn,
                context=build_context(record, turn, persona),
                candidates=(answer, *(pool_text[i] for i in chosen)),
            )
        )
    return examples


def hit_at_1(scores: np.ndarray, label: int = 0) -> float:
    """1 if `scores[label]` is the unique maximum; 1/k if it ties with k-1 others at the top; else 0."""
    scores = np.asarray(scores, dtype=float)
    best = scores.max()
    if scores[label] < best:
        return 0.0
    return 1.0 / int(np.count_nonzero(scores == best))


class TfidfRanker:
    """Ranks candidate responses by tf-idf cosine to a context; fit the idf on the training texts first."""

    def __init__(self) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(tokenizer=tokenize, token_pattern=None, lowercase=False)
        self.fitted = False

    def fit(self, texts: list[str]) -> TfidfRanker:
        self.vectorizer.fit(texts)
        self.fitted = True
        return self

    def fit_records(self, records: list[dict[str, Any]]) -> TfidfRanker:
        """Fit on every utterance and every unique persona sentence of `records` (one document each)."""
        return self.fit(training_texts(records))

    def score(self, context: str, candidates: list[str] | tuple[str, ...]) -> np.ndarray:
        """Cosine of each candidate to the context, in candidate order."""
        return self.score_many([context], [tuple(candidates)])[0]

    def rank(self, context: str, candidates: list[str] | tuple[str, ...]) -> list[int]:
        """Candidate indices, best first (stable: ties keep candidate order)."""
        return [int(i) for i in np.argsort(-self.score(context, candidates), kind="stable")]

    def score_many(self, contexts: list[str], candidate_sets: list[tuple[str, ...]]) -> list[np.ndarray]:
        """`score` for many examples at once (vectorises each distinct text once)."""
        if not self.fitted:
            raise RuntimeError("TfidfRanker.fit (or fit_records) must be called before scoring.")
        texts = sorted({text for candidates in candidate_sets for text in candidates})
        row = {text: i for i, text in enumerate(texts)}
        candidate_matrix = self.vectorizer.transform(texts)
        context_matrix = self.vectorizer.transform(contexts)
        sizes = [len(candidates) for candidates in candidate_sets]
        owners = np.repeat(np.arange(len(contexts)), sizes)
        rows = np.asarray([row[text] for candidates in candidate_sets for text in candidates], dtype=int)
        flat = np.zeros(len(rows))
        step = 50_000
        for start in range(0, len(rows), step):
            stop = start + step
            product = context_matrix[owners[start:stop]].multiply(candidate_matrix[rows[start:stop]])
            flat[start:stop] = np.asarray(product.sum(axis=1)).ravel()
        return np.split(flat, np.cumsum(sizes)[:-1])


def training_texts(records: list[dict[str, Any]]) -> list[str]:
    """The documents the idf is fit on: all non-empty utterances, then the unique persona sentences."""
    utterances = [turn["text"] for record in records for turn in record.get("turns") or [] if turn["text"].strip()]
    personas = sorted({s for record in records for speaker in (1, 2) for s in _persona(record, speaker)})
    return utterances + personas


def evaluate_ir(
    ranker: TfidfRanker,
    test_records: list[dict[str, Any]],
    *,
    persona: str = "none",
    candidates: int = 20,
    seed: int = 0,
    max_examples: int | None = None,
) -> dict[str, float]:
    """hit@1 of a fitted ranker on `test_records`: ``{"hit_at_1", "examples", "candidates"}``."""
    examples = next_utterance_examples(
        test_records, persona=persona, candidates=candidates, seed=seed, max_examples=max_examples
    )
    if not examples:
        return {"hit_at_1": float("nan"), "examples": 0, "candidates": candidates}
    scores = ranker.score_many([e.context for e in examples], [e.candidates for e in examples])
    hits = [hit_at_1(example_scores, 0) for example_scores in scores]
    return {"hit_at_1": float(np.mean(hits)), "examples": len(examples), "candidates": candidates}


def ir_hit_at_1(
    train_records: list[dict[str, Any]],
    test_records: list[dict[str, Any]],
    *,
    persona: str = "none",
    candidates: int = 20,
    seed: int = 0,
    max_examples: int | None = None,
) -> float:
    """The IR baseline's hit@1 (in [0, 1]): tf-idf fit on `train_records`, ranked on `test_records`."""
    ranker = TfidfRanker().fit_records(train_records)
    return evaluate_ir(
        ranker, test_records, persona=persona, candidates=candidates, seed=seed, max_examples=max_examples
    )["hit_at_1"]
