"""Faithfulness by profile extraction (PAPER.md §3.1, faithfulness task), with a local judge as the annotator.

For each conversation and speaker the judge sees 8 attribute options, up to 4 of the speaker's real ones and 4
distractors, and says of each whether the conversation lets it infer that the speaker holds it. The paper's annotators
picked from such lists; its number is their precision. Distractors are of three kinds, as in the paper: negated real
attributes (an injected negator, e.g. an LLM), random attributes from other profiles, and attributes that contradict
the real ones (an injected picker, e.g. NLI over a candidate pool). A distractor that is in fact one of the speaker's
own attributes would count a correct inference as a false one, so every distractor is checked against the whole
persona (normalised), whatever the injected functions return.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable

from ..data.conversation import format_conversation
from ..judge import Judge

logger = logging.getLogger(__name__)

OPTIONS = ["Yes", "No"]  # P(Yes) = P(the attribute can be inferred from the conversation)
QUESTION = (
    "Conversation:\n{conversation}\n"
    'Based only on this conversation, would you infer that User {speaker} could truthfully say "{attribute}"? '
    "Answer Yes or No."
)
# The distractor kinds, in the order the slots are dealt: 4 distractors are 2 negated, 1 random, 1 contradicting.
DISTRACTOR_ORDER = ("negated", "random", "contradicting")

Negate = Callable[[list[str]], list[str]]
Contradicting = Callable[[list[str], list[str]], list[str]]


def normalize(attribute: str) -> str:
    """Lowercase, with whitespace and punctuation removed: "I like cats." and "i like  cats" are one attribute."""
    return re.sub(r"[\W_]+", "", attribute.lower())


def _listed(value) -> list:
    """What an injected function returned, if it is a list at all (they may be LLMs: anything can come back)."""
    return list(value) if isinstance(value, (list, tuple)) else []


def build_options(
    persona: list[str],
    pool: list[str],
    rng: random.Random,
    negate: Negate | None = None,
    contradicting: Contradicting | None = None,
    n_real: int = 4,
    n_distractors: int = 4,
    n_candidates: int = 32,
) -> list[tuple[str, str]]:
    """Shuffled (attribute, kind) options for one speaker; kind is "real", "negated", "random" or "contradicting".

    `pool` holds attributes of other profiles (random distractors, and `n_candidates` of them are offered to
    `contradicting`). A negation or pick that is empty, not a string, a duplicate, or one of the speaker's own
    attributes is dropped, and its slot refilled from the pool; with a small pool there may be fewer distractors.
    """
    persona = [a for a in persona if isinstance(a, str) and a.strip()]
    real = rng.sample(persona, n_real) if len(persona) > n_real else list(persona)
    taken = {normalize(a) for a in persona}
    others = [a for a in dict.fromkeys(pool) if isinstance(a, str) and normalize(a) and normalize(a) not in taken]
    rng.shuffle(others)
    wanted = [DISTRACTOR_ORDER[i % len(DISTRACTOR_ORDER)] for i in range(n_distractors)]
    proposals = {
        "negated": _listed(negate(list(real))) if negate and real and "negated" in wanted else [],
        "contradicting": (
            _listed(contradicting(list(persona), others[:n_candidates]))
            if contradicting and persona and "contradicting" in wanted
            else []
        ),
    }
    distractors: list[tuple[str, str]] = []

    def take(candidates: list, kind: str) -> bool:
        while candidates:
            candidate = candidates.pop(0)
            key = normalize(candidate) if isinstance(candidate, str) else ""
            if key and key not in taken:
                taken.add(key)
                distractors.append((candidate.strip(), kind))
                return True
        return False

    # Negated and contradicting first, then every other slot from the pool: a random draw never takes the attribute
    # the contradiction picker chose.
    missing = sum(kind == "random" or not take(proposals[kind], kind) for kind in wanted)
    for _ in range(missing):
        take(others, "random")
    options = [(a, "real") for a in real] + distractors
    rng.shuffle(options)
    return options


def extraction_question(record: dict, speaker: int, attribute: str) -> str:
    return QUESTION.format(conversation=format_conversation(record["turns"]), speaker=speaker, attribute=attribute)


def _cached_negate(negate: Negate, attributes: list[str]) -> Negate:
    """All attributes negated in one call (an LLM negator batches them), then looked up per speaker."""
    unique = list(dict.fromkeys(attributes))
    negations = negate(unique) if unique else []
    if not isinstance(negations, list) or len(negations) != len(unique):
        logger.warning(
            "The negator returned %s for %d attributes; no negated distractors.", type(negations), len(unique)
        )
        negations = [""] * len(unique)
    table = dict(zip(unique, negations))
    return lambda attributes: [table.get(a, "") for a in attributes]


def extraction_rows(
    judge: Judge,
    records: list[dict],
    seed: int = 0,
    negate: Negate | None = None,
    contradicting: Contradicting | None = None,
    threshold: float = 0.5,
) -> list[dict]:
    """One row per (conversation, speaker with a persona): options, kinds, P(Yes) each, selected, precision, recall.

    Unparsed or empty conversations are left out. Options are seeded by (`seed`, pair, speaker), so a rerun asks the
    same questions; the random pool excludes both users of the pair (partners often hold near-identical attributes).
    """
    records = [r for r in records if r.get("parsed", True) and r.get("turns")]
    pool = list(dict.fromkeys(a for r in records for key in ("user1_persona", "user2_persona") for a in r[key]))
    if negate is not None:
        negate = _cached_negate(negate, pool)
    rows, questions = [], []
    for record in records:
        pair = {normalize(a) for a in record["user1_persona"] + record["user2_persona"]}
        others = [a for a in pool if normalize(a) not in pair]
        for speaker in (1, 2):
            persona = record[f"user{speaker}_persona"]
            if not any(a.strip() for a in persona):
                continue
            rng = random.Random(f"{seed}:{record['pair_id']}:{speaker}")
            options = build_options(persona, others, rng, negate, contradicting)
            attributes, kinds = [a for a, _ in options], [kind for _, kind in options]
            rows.append({"pair_id": record["pair_id"], "speaker": speaker, "options": attributes, "kinds": kinds})
            questions += [extraction_question(record, speaker, attribute) for attribute, _ in options]
    answers = judge.option_probabilities(questions, OPTIONS) if questions else []
    start = 0
    for row in rows:
        row["p_yes"] = [p[0] for p in answers[start : start + len(row["options"])]]
        start += len(row["options"])
        row["selected"] = [p > threshold for p in row["p_yes"]]
        chosen = sum(row["selected"])
        hits = sum(s and k == "real" for s, k in zip(row["selected"], row["kinds"]))
        row["precision"] = hits / chosen if chosen else float("nan")
        row["recall"] = hits / row["kinds"].count("real")
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def extraction_summary(rows: list[dict]) -> dict:
    """Micro-averaged precision (NaN when nothing was selected) and recall, and the mean P(Yes) per option kind."""
    selected = [(s, k) for row in rows for s, k in zip(row["selected"], row["kinds"])]
    chosen = sum(s for s, _ in selected)
    hits = sum(s and k == "real" for s, k in selected)
    real = sum(k == "real" for _, k in selected)
    p_yes = [(p, k) for row in rows for p, k in zip(row["p_yes"], row["kinds"])]
    return {
        "extraction_precision": hits / chosen if chosen else float("nan"),
        "extraction_recall": hits / real if real else float("nan"),
        "extraction_items": len(rows),
        "extraction_p_yes_real": _mean([p for p, k in p_yes if k == "real"]),
        "extraction_p_yes_distractor": _mean([p for p, k in p_yes if k != "real"]),
    }


def profile_extraction(
    judge: Judge,
    records: list[dict],
    seed: int = 0,
    negate: Negate | None = None,
    contradicting: Contradicting | None = None,
    threshold: float = 0.5,
) -> dict:
    """The aggregate numbers; call `extraction_rows` + `extraction_summary` to keep the per-item rows too."""
    return extraction_summary(extraction_rows(judge, records, seed, negate, contradicting, threshold))
