"""The paper's "Turing test" (PAPER.md §3.1, Table 3) with a local judge in place of the annotators.

For one user pair the judge sees both profiles, the seed (human) conversation and the generated one, and answers
which was written by an AI ("1" or "2"), read from its next-token probabilities. A judge has a position bias, so every
item is asked in both orders: the generated conversation is *caught* in an order when the judge gives it more than
half the probability. Caught in both orders is a loss for the generator, the seed picked in both orders a win, and
orders that disagree a tie (the judge could not tell them apart beyond where they were shown).
"""

from __future__ import annotations

from ..data.conversation import format_conversation
from ..judge import Judge

OPTIONS = ["1", "2"]  # P(1) = P(the conversation shown first was written by an AI)
QUESTION = (
    "Here are the profiles of two users and two conversations between them. One conversation was written by the "
    "two users, the other was written by an AI. Which conversation was written by an AI? Answer with 1 or 2.\n"
    "User 1 Profile: {user1}\nUser 2 Profile: {user2}\n"
    "Conversation 1:\n{first}\nConversation 2:\n{second}\nResponse:"
)


def detection_question(profiles: dict, first: dict, second: dict) -> str:
    """The question for one order; `profiles` is the record whose personas are shown (the seed's: the same pair)."""
    return QUESTION.format(
        user1=" ".join(profiles["user1_persona"]),
        user2=" ".join(profiles["user2_persona"]),
        first=format_conversation(first["turns"]),
        second=format_conversation(second["turns"]),
    )


def _usable(record: dict) -> bool:
    return bool(record.get("parsed", True)) and bool(record.get("turns"))


def detection_pairs(seed: list[dict], generated: list[dict]) -> tuple[list[tuple[dict, dict]], dict[str, int]]:
    """(seed, generated) records of the same `pair_id`, in the generated records' order, and what was skipped.

    Unparsed or empty generated conversations cannot be compared (`unusable`); a generated record whose pair has no
    usable seed conversation is `unmatched`; a pair's later generated records are `duplicate`s (one item per pair,
    as in the paper: the selected conversation against the human one). The first usable seed record of a pair is used.
    """
    seeds: dict[str, dict] = {}
    for record in seed:
        if _usable(record):
            seeds.setdefault(record["pair_id"], record)
    pairs, used = [], set()
    skipped = {"unusable": 0, "unmatched": 0, "duplicate": 0}
    for record in generated:
        pair_id = record["pair_id"]
        if not _usable(record):
            skipped["unusable"] += 1
        elif pair_id not in seeds:
            skipped["unmatched"] += 1
        elif pair_id in used:
            skipped["duplicate"] += 1
        else:
            used.add(pair_id)
            pairs.append((seeds[pair_id], record))
    return pairs, skipped


def detection_outcome(p_generated_first: float, p_generated_second: float) -> str:
    """Lose (generated caught in both orders), win (the seed picked in both orders), or tie (the orders disagree).

    Each argument is the probability that the generated conversation is the AI one, in that order. Exactly 0.5
    picks neither, so it ties with anything but a unanimous other order.
    """
    caught = [p > 0.5 for p in (p_generated_first, p_generated_second)]
    fooled = [p < 0.5 for p in (p_generated_first, p_generated_second)]
    if all(caught):
        return "lose"
    if all(fooled):
        return "win"
    return "tie"


def detection_items(judge: Judge, pairs: list[tuple[dict, dict]]) -> list[dict]:
    """Per item: its pair, the generated conversation's AI probability in each order, and the outcome.

    All 2 x items questions go to the judge in one batched call.
    """
    questions = []
    for seed, generated in pairs:
        questions.append(detection_question(seed, generated, seed))  # generated shown first
        questions.append(detection_question(seed, seed, generated))  # generated shown second
    answers = judge.option_probabilities(questions, OPTIONS) if questions else []
    items = []
    for index, (_, generated) in enumerate(pairs):
        first, second = answers[2 * index][0], answers[2 * index + 1][1]
        items.append(
            {
                "pair_id": generated["pair_id"],
                "p_generated_first": first,
                "p_generated_second": second,
                "outcome": detection_outcome(first, second),
            }
        )
    return items


def detection_summary(items: list[dict]) -> dict:
    """Lose / win / tie rates (they sum to 1), the item count, and the mean AI probability of the generated ones."""
    n = len(items)
    if not n:
        nan = float("nan")
        return {
            "detection_lose": nan,
            "detection_win": nan,
            "detection_tie": nan,
            "detection_items": 0,
            "detection_p_generated": nan,
        }
    outcomes = [item["outcome"] for item in items]
    p_generated = sum((item["p_generated_first"] + item["p_generated_second"]) / 2 for item in items) / n
    return {
        "detection_lose": outcomes.count("lose") / n,
        "detection_win": outcomes.count("win") / n,
        "detection_tie": outcomes.count("tie") / n,
        "detection_items": n,
        "detection_p_generated": p_generated,
    }


def detection_test(judge: Judge, pairs: list[tuple[dict, dict]]) -> dict:
    """The Table 3 numbers for (seed, generated) pairs of the same user pair (see `detection_pairs`)."""
    return detection_summary(detection_items(judge, pairs))
