"""Faithfulness expert (PAPER.md §2): does the conversation contradict either user's profile? P(Yes) is the score."""

from __future__ import annotations

from ..data.conversation import format_conversation
from .scoring import Judge

QUESTION = (
    "Given user 1 and user 2's profiles respectively, does the following conversation between the two users "
    "contradict either of their profiles? Why?\n"
    "User 1 Profile: {user1}\nUser 2 Profile: {user2}\nConversation:\n{conversation}\nResponse:"
)


def faithfulness_question(record: dict) -> str:
    return QUESTION.format(
        user1=" ".join(record["user1_persona"]),
        user2=" ".join(record["user2_persona"]),
        conversation=format_conversation(record["turns"]),
    )


class FaithfulnessExpert:
    """A hard filter: the probability that the judge answers "Yes, it contradicts"; lower is better."""

    kind = "filter"

    def __init__(self, name: str, judge: Judge, threshold: float):
        self.name, self.judge, self.threshold = name, judge, threshold

    def score(self, candidates: list[dict]) -> list[float]:
        probabilities = self.judge.option_probabilities([faithfulness_question(c) for c in candidates], ["Yes", "No"])
        return [p[0] for p in probabilities]
