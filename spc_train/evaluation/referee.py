"""The referee's comparison: iteration k's conversation against iteration 0's for the same held-out pair, on named
criteria.

`pairwise` (`compare`): both conversations in one prompt, asked in both orders. An outcome is a `win` for iteration k
when the referee prefers it in both orders, a `loss` when it prefers iteration 0's in both, and a `tie` when the
orders disagree: a referee that only reads position ties every pair.

`pointwise` (`compare_pointwise`): each conversation alone, a Yes/No question per criterion; a `win` when iteration
k's P(Yes) is above iteration 0's by more than a margin, a `loss` when below by more, else a `tie`. Small judges
answer "1" to most pairwise questions whichever conversation comes first; a question about one conversation has no
order to be biased by. The two iterations' questions go in calls of their own with pair i at place i, so a judge
that reads its place in the call ties too. A pair's
overall outcome is the sign of its criteria's outcomes summed (+1 a win, -1 a loss). Rates come with 95% percentile
bootstrap intervals over pairs, as TRL's `WinRateCallback` and the self-rewarding LM papers report head-to-head win
rates; `referee_win_rate` leaves ties out (wins / (wins + losses)).
"""

from __future__ import annotations

import math

from ..data.conversation import format_conversation

OPTIONS = ["1", "2"]  # P("1") = P(the conversation shown first is better)
CRITERIA = {
    "persona_consistency": "keeps each user more consistent with their own persona",
    "naturalness": "sounds more like a natural conversation between two people",
    "coherence": "is more coherent, each turn following from the one before",
}
# Personas and both conversations first, the criterion last: the criteria of one order share the whole prefix, so a
# judge that shares prefixes (`Judge`) encodes each ordered pair once for every criterion.
QUESTION = (
    "User 1's persona:\n{persona1}\nUser 2's persona:\n{persona2}\n\n"
    "Conversation 1:\n{first}\nConversation 2:\n{second}\n"
    "Which one of Conversation 1 and Conversation 2 between these two users {criterion}? Answer with 1 or 2.\n"
    "Response:"
)
OUTCOMES = {"win": 1, "tie": 0, "loss": -1}
YES_NO = ["Yes", "No"]
POINTWISE = {
    "persona_consistency": "Does each user stay consistent with their own persona?",
    "naturalness": "Does this sound like a natural conversation between two people?",
    "coherence": "Is this conversation coherent, each turn following from the one before?",
}
# The personas and the conversation first, the criterion last: the criteria of one conversation share the prefix.
POINTWISE_QUESTION = (
    "User 1's persona:\n{persona1}\nUser 2's persona:\n{persona2}\n\nConversation:\n{conversation}\n"
    "{criterion} Answer with Yes or No.\nResponse:"
)


def shown(row: dict) -> str:
    """What the referee reads of a generated conversation: its turns when it parsed, else the text as written."""
    return format_conversation(row["turns"]) if row.get("parsed", True) and row.get("turns") else row.get("text", "")


def question(criterion: str, pair: dict, first: str, second: str) -> str:
    return QUESTION.format(
        persona1=" ".join(pair["user1_persona"]),
        persona2=" ".join(pair["user2_persona"]),
        first=first,
        second=second,
        criterion=CRITERIA[criterion],
    )


def outcome(p_new_first: float, p_new_second: float) -> str:
    """`win` / `loss` when both orders prefer iteration k's / iteration 0's conversation, else `tie`."""
    if p_new_first > 0.5 and p_new_second > 0.5:
        return "win"
    if p_new_first < 0.5 and p_new_second < 0.5:
        return "loss"
    return "tie"


def compare(judge, pairs: list[dict], new: list[str], old: list[str], criteria: list[str]) -> list[dict]:
    """One row per pair and criterion: P(iteration k's wins) shown first and shown second, and the outcome. One
    batched call, ordered so that the criteria of an ordered pair are neighbours (they share their prefix)."""
    questions = []
    for pair, a, b in zip(pairs, new, old):
        questions += [question(c, pair, a, b) for c in criteria] + [question(c, pair, b, a) for c in criteria]
    answers = judge.option_probabilities(questions, OPTIONS) if questions else []
    rows, width = [], 2 * len(criteria)
    for index, pair in enumerate(pairs):
        block = answers[index * width : (index + 1) * width]
        for offset, criterion in enumerate(criteria):
            first, second = block[offset][0], block[len(criteria) + offset][1]
            rows.append(
                {
                    "pair_id": pair["pair_id"],
                    "criterion": criterion,
                    "p_new_first": first,
                    "p_new_second": second,
                    "outcome": outcome(first, second),
                }
            )
    return rows


def pointwise_question(criterion: str, pair: dict, conversation: str) -> str:
    return POINTWISE_QUESTION.format(
        persona1=" ".join(pair["user1_persona"]),
        persona2=" ".join(pair["user2_persona"]),
        conversation=conversation,
        criterion=POINTWISE[criterion],
    )


def pointwise_outcome(p_new: float, p_old: float, margin: float) -> str:
    """`win` / `loss` when iteration k's P(Yes) is above / below iteration 0's by more than `margin`, else `tie`."""
    if p_new - p_old > margin:
        return "win"
    if p_old - p_new > margin:
        return "loss"
    return "tie"


def yes_probabilities(judge, pairs: list[dict], texts: list[str], criteria: list[str]) -> list[list[float]]:
    """P(Yes) per pair and criterion, in one call ordered pair by pair (a pair's criteria share their prefix)."""
    questions = [pointwise_question(c, pair, text) for pair, text in zip(pairs, texts) for c in criteria]
    answers = judge.option_probabilities(questions, YES_NO) if questions else []
    width = len(criteria)
    return [[p[0] for p in answers[i * width : (i + 1) * width]] for i in range(len(pairs))]


def compare_pointwise(
    judge, pairs: list[dict], new: list[str], old: list[str], criteria: list[str], margin: float
) -> list[dict]:
    """One row per pair and criterion: P(Yes) of iteration k's and of iteration 0's conversation, and the outcome.
    Each iteration's questions go in a call of their own, pair i at place i of both."""
    new_yes, old_yes = yes_probabilities(judge, pairs, new, criteria), yes_probabilities(judge, pairs, old, criteria)
    return [
        {
            "pair_id": pair["pair_id"],
            "criterion": criterion,
            "p_new": a,
            "p_old": b,
            "outcome": pointwise_outcome(a, b, margin),
        }
        for pair, row_new, row_old in zip(pairs, new_yes, old_yes)
        for criterion, a, b in zip(criteria, row_new, row_old)
    ]


def overall(rows: list[dict]) -> dict[str, str]:
    """Each pair's overall outcome: the sign of its criteria's outcomes summed."""
    sums: dict[str, int] = {}
    for row in rows:
        sums[row["pair_id"]] = sums.get(row["pair_id"], 0) + OUTCOMES[row["outcome"]]
    return {pair: "win" if total > 0 else "loss" if total < 0 else "tie" for pair, total in sums.items()}


def _rates(outcomes: list[str], prefix: str, seed: int, intervals: bool) -> dict[str, float]:
    from .metrics import bootstrap_mean_interval

    metrics: dict[str, float] = {}
    for name in OUTCOMES:
        flags = [float(o == name) for o in outcomes]
        if intervals:
            mean, low, high = bootstrap_mean_interval(flags, seed=seed)
            metrics |= {f"{prefix}_{name}": mean, f"{prefix}_{name}_low": low, f"{prefix}_{name}_high": high}
        else:
            metrics[f"{prefix}_{name}"] = sum(flags) / len(flags) if flags else math.nan
    decisive = [float(o == "win") for o in outcomes if o != "tie"]
    mean, low, high = bootstrap_mean_interval(decisive, seed=seed)
    metrics[f"{prefix}_win_rate"] = mean
    if intervals:
        metrics |= {f"{prefix}_win_rate_low": low, f"{prefix}_win_rate_high": high}
    return metrics


def summarize(rows: list[dict], criteria: list[str], seed: int) -> dict[str, float]:
    """`referee_win` / `_tie` / `_loss` (shares of pairs, with intervals), `referee_win_rate` (ties left out, with
    its interval) and the same shares per criterion (`referee_<criterion>_win`, ...)."""
    by_pair = overall(rows)
    metrics: dict[str, float] = {"referee_pairs": len(by_pair)}
    metrics |= _rates(list(by_pair.values()), "referee", seed, intervals=True)
    for criterion in criteria:
        outcomes = [row["outcome"] for row in rows if row["criterion"] == criterion]
        metrics |= _rates(outcomes, f"referee_{criterion}", seed, intervals=False)
    return metrics
