"""Faithfulness expert (PAPER.md §2): does the conversation contradict either user's profile? P(Yes) is the score.

As in the paper, the judge first sees human-curated, answered examples (Table 7: two faithful ones answered "No, ...",
two unfaithful ones answered "Yes, the conversation contradicts user 2's profile ..."), then the question about the
candidate. The paper's own examples are not published; `EXAMPLES` below are ours, written for this package in the same
shape: two profiles, a short conversation, and an answer that starts with the option and says why. They alternate
faithful / unfaithful so that any prefix (`critic.faithfulness_examples: n`) stays balanced; our two unfaithful ones
contradict user 2's profile and user 1's, so that the judge is not taught to look at one profile only.

Small judges answer one wording of the question far better than the other, so `critic.faithfulness_phrasing` picks
one: `contradict` (the paper's question, P(contradiction) = P(Yes)) or `consistent` (the mirrored question "is it
consistent with both profiles?", P(contradiction) = P(No)), with the same examples and mirrored answers. The score
means P(contradiction) either way, so thresholds and selection do not depend on the phrasing.
"""

from __future__ import annotations

from ..data.conversation import format_conversation
from ..judge import Judge

OPTIONS = ["Yes", "No"]
PHRASINGS = ("contradict", "consistent")
# The question's fixed head first, then the candidate's text: the examples and the head are the shared prefix
# (docs/prefix_sharing.md).
_BODY = "User 1 Profile: {user1}\nUser 2 Profile: {user2}\nConversation:\n{conversation}\nResponse:"
QUESTIONS = {
    "contradict": "Given user 1 and user 2's profiles respectively, does the following conversation between the two "
    "users contradict either of their profiles? Why?\n" + _BODY,
    "consistent": "Given user 1 and user 2's profiles respectively, is the following conversation between the two "
    "users consistent with both of their profiles? Why?\n" + _BODY,
}
CONTRADICTION = {"contradict": "Yes", "consistent": "No"}  # the option that means "it contradicts a profile"
# The answers' openings under `consistent`: the same reasons, the option mirrored.
_MIRRORED = {
    "No, the conversation does not contradict either profile.": "Yes, the conversation is consistent with both "
    "profiles.",
    "Yes, the conversation contradicts": "No, the conversation is not consistent with",
}


def _turns(*lines: str, first: int = 1) -> list[dict]:
    return [{"speaker": 1 + (first - 1 + i) % 2, "text": text} for i, text in enumerate(lines)]


# Ours (see the module docstring), not the paper's: faithful, unfaithful (user 2), faithful, unfaithful (user 1).
EXAMPLES: list[dict] = [
    {
        "user1_persona": [
            "I am a nurse.",
            "I have two daughters.",
            "I like hiking on weekends.",
            "I grew up in Ohio.",
        ],
        "user2_persona": ["I am a college student.", "I play the violin.", "My favorite food is sushi."],
        "turns": _turns(
            "Hi! Long week at the hospital, I am glad it is finally Saturday.",
            "Nice to meet you! Any plans for the weekend?",
            "I am taking my two girls on a hike by the lake. How about you?",
            "Violin practice, and then sushi with friends from my dorm.",
            "That sounds lovely. What piece are you learning?",
            "A Bach partita. It is hard, but my teacher says I am getting there.",
        ),
        "answer": (
            "No, the conversation does not contradict either profile. User 1 works at a hospital and goes hiking "
            "with their two girls, as a nurse with two daughters who likes hiking would. User 2 practises the violin, "
            "lives in a dorm and eats sushi with friends, all in line with a college student who plays the violin "
            "and loves sushi."
        ),
    },
    {
        "user1_persona": ["I love to cook.", "I have a golden retriever.", "I work from home."],
        "user2_persona": [
            "I am a vegetarian.",
            "I live in a small apartment in the city.",
            "I am training for a marathon.",
        ],
        "turns": _turns(
            "Hey! I just baked bread, and my dog sat by the oven the whole time.",
            "Ha, smart dog. Fresh bread is the best.",
            "Do you cook much?",
            "Not really. Last night I grilled a big steak in the garden of my farmhouse.",
            "A farmhouse! That must be quiet.",
            "Very quiet. I only go for short walks there, I have never liked running.",
        ),
        "answer": (
            "Yes, the conversation contradicts user 2's profile, because user 2 is a vegetarian but grilled a steak, "
            "lives in a small city apartment but talks about their farmhouse, and is training for a marathon but "
            "says they have never liked running."
        ),
    },
    {
        "user1_persona": ["I am retired.", "I volunteer at the library.", "I have three grandchildren."],
        "user2_persona": ["I am a software engineer.", "I recently moved to Seattle.", "I enjoy board games."],
        "turns": _turns(
            "Good morning! I just got back from my shift at the library.",
            "Morning! Do you work there?",
            "I volunteer a few days a week now that I am retired. It keeps me busy between visits from my grandkids.",
            "That sounds nice. I just moved to Seattle for a programming job, so I am still finding my way around.",
            "Welcome! The library has a board game night on Fridays, if you want to meet people.",
            "I love board games, I will be there.",
        ),
        "answer": (
            "No, the conversation does not contradict either profile. User 1 volunteers at the library in retirement "
            "and mentions grandkids; user 2 moved to Seattle for a programming job and enjoys board games. Nothing "
            "either of them says goes against their profile."
        ),
    },
    {
        "user1_persona": ["I am afraid of flying.", "I have never left my home country.", "I work as a mechanic."],
        "user2_persona": ["I am a flight attendant.", "I speak three languages.", "I have a cat named Luna."],
        "turns": _turns(
            "I just landed from Tokyo, I am exhausted.",
            "Welcome back! I was in Tokyo last spring, I flew there on vacation.",
            "Really? Did you like it?",
            "Loved it. I love flying, I always ask for a window seat.",
            "Me too. Luna is never happy when I travel, though.",
            "Ha, cats. I spend my days fixing cars, so I need a trip like that now and then.",
            first=2,
        ),
        "answer": (
            "Yes, the conversation contradicts user 1's profile, because user 1 is afraid of flying and has never "
            "left their home country, yet says they flew to Tokyo on vacation and that they love flying."
        ),
    },
]


def faithfulness_question(record: dict, phrasing: str = "contradict") -> str:
    return QUESTIONS[phrasing].format(
        user1=" ".join(record["user1_persona"]),
        user2=" ".join(record["user2_persona"]),
        conversation=format_conversation(record["turns"]),
    )


def example_answer(example: dict, phrasing: str = "contradict") -> str:
    """The example's answer to `phrasing`'s question: its own answer, or for `consistent` the mirrored one."""
    if phrasing == "contradict":
        return example["answer"]
    for opening, mirrored in _MIRRORED.items():
        if example["answer"].startswith(opening):
            return mirrored + example["answer"][len(opening) :]
    raise ValueError(f"No mirrored opening for the example answer {example['answer'][:40]!r}.")


def faithfulness_examples(count: int, phrasing: str = "contradict") -> list[tuple[str, str]]:
    """The first `count` in-context examples as (question, answer) turns; 0 asks zero-shot."""
    if not 0 <= count <= len(EXAMPLES):
        raise ValueError(f"critic.faithfulness_examples must be between 0 and {len(EXAMPLES)}, not {count}.")
    return [(faithfulness_question(e, phrasing), example_answer(e, phrasing)) for e in EXAMPLES[:count]]


class FaithfulnessExpert:
    """A hard filter: the probability that the judge answers that the conversation contradicts a profile (P(Yes) to
    `contradict`, P(No) to `consistent`); lower is better."""

    kind = "filter"

    def __init__(
        self, name: str, judge: Judge, threshold: float, examples: int = len(EXAMPLES), phrasing: str = "contradict"
    ):
        if phrasing not in PHRASINGS:
            raise ValueError(f"critic.faithfulness_phrasing must be one of {PHRASINGS}, not {phrasing!r}.")
        self.name, self.judge, self.threshold, self.phrasing = name, judge, threshold, phrasing
        self.examples = faithfulness_examples(examples, phrasing)

    def score(self, candidates: list[dict]) -> list[float]:
        questions = [faithfulness_question(c, self.phrasing) for c in candidates]
        probabilities = self.judge.option_probabilities(questions, OPTIONS, self.examples)
        contradiction = OPTIONS.index(CONTRADICTION[self.phrasing])
        return [p[contradiction] for p in probabilities]
