"""FED quality policies (PAPER.md §2) as pairwise judges, asked in both orders to cancel position bias.

The prompt shows both conversations before the paper's question, so that what the policies and orders share comes
first (docs/prefix_sharing.md). For the candidates of one pair, every ordered pair (a, b) is asked once; P(a beats
b) is the mean of P("1") when a is shown first and P("2") when it is shown second. The per-candidate score is its
mean win probability; the whole matrix is kept so that selection can re-rank any subset of survivors without asking
again.
"""

from __future__ import annotations

from collections import defaultdict

from ..data.conversation import format_conversation
from ..judge import Judge

OPTIONS = ["1", "2"]  # P(1) = P(the conversation shown first is better)
POLICIES = {
    "depth": "is a deeper conversation",
    "coherency": "is more coherent",
    "consistency": "is more consistent",
    "diversity": "is more diverse",
    "likable": "has more likable users",
}
# The conversations first, the policy's question last (docs/prefix_sharing.md): the five policies then ask about one
# ordered pair with prompts that differ only in their last line, and the judge encodes the pair once for all five.
QUESTION = (
    "Conversation 1:\n{first}\nConversation 2:\n{second}\n"
    "Which one of Conversation 1 and Conversation 2 between two users {policy}? Answer with 1 or 2.\nResponse:"
)


def pairwise_question(policy: str, first: dict, second: dict) -> str:
    return QUESTION.format(
        policy=POLICIES[policy], first=format_conversation(first["turns"]), second=format_conversation(second["turns"])
    )


class FedPolicyExpert:
    """A quality policy: higher is better. Only parsed candidates take part; the others score NaN."""

    kind = "policy"

    def __init__(self, name: str, judge: Judge):
        self.name, self.judge = name, judge
        self.pairwise: list[list[float]] = []

    def score(self, candidates: list[dict]) -> list[float]:
        groups: dict[str, list[int]] = defaultdict(list)
        for index, candidate in enumerate(candidates):
            groups[candidate["pair_id"]].append(index)
        for members in groups.values():
            members.sort(key=lambda i: candidates[i]["candidate"])
        questions, slots = [], []
        for members in groups.values():
            for a in members:
                for b in members:
                    if a != b and candidates[a]["parsed"] and candidates[b]["parsed"]:
                        questions.append(pairwise_question(self.name, candidates[a], candidates[b]))
                        slots.append((a, b))
        answers = self.judge.option_probabilities(questions, OPTIONS) if questions else []
        first_wins = {slot: p[0] for slot, p in zip(slots, answers)}
        nan = float("nan")
        # pairwise[i][j]: P(candidate i beats its pair's j-th candidate, in candidate order).
        self.pairwise = [[] for _ in candidates]
        scores = [nan] * len(candidates)
        for members in groups.values():
            for a in members:
                row = []
                for b in members:
                    if (a, b) in first_wins:
                        row.append((first_wins[(a, b)] + 1.0 - first_wins[(b, a)]) / 2)
                    else:
                        row.append(nan)
                self.pairwise[a] = row
                known = [p for p in row if p == p]
                if known:
                    scores[a] = sum(known) / len(known)
        return scores
