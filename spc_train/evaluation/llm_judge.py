"""LLM-judge quality scores in the style of the paper's Table 15 (PAPER.md §3.2), read from option probabilities.

The paper's judges wrote their scores as text (LLM-Eval a JSON object of 0-100 scores, GPT-Score a yes/no, G-Eval a
sampled score averaged into an expected one). Here each criterion is one question whose answer options are single
tokens, and the score is the expected value over the judge's next-token distribution: no sampling, no parsing, and a
judge that hesitates between 2 and 3 scores 2.5 instead of a coin flip.
- LLM-Eval (content, grammar, relevance, appropriateness; paper scale 0-100): 0-100 is not one token per score, so
  the judge answers 0-9 and the expected digit is rescaled to 0-100 (x 100 / 9).
- GPT-Score (fluency, consistent, coherent, depth, diversity, likeable): a yes/no question; score = 100 x P(Yes).
- G-Eval (relevance 1-5, fluency 1-3, consistent 1-5, coherent 1-5, faithfulness 1-5): the criterion and G-Eval's
  evaluation steps are written into the prompt (its chain of thought, given rather than generated), and the score
  is read directly as sum of p(s) x s over the scale's digits, which is what G-Eval's sampled average estimates.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from ..data.conversation import format_conversation
from ..judge import Judge

DIGITS = [str(d) for d in range(10)]
YES_NO = ["Yes", "No"]


class Criterion(NamedTuple):
    """One question: `question` has `{conversation}` and, where the criterion needs them, `{profiles}`.

    Every criterion starts with the conversation, then the profiles, then its own instructions
    (docs/prefix_sharing.md): the fifteen questions about one conversation share their first part, which the judge
    encodes once.
    """

    family: str
    question: str
    options: list[str]
    values: list[float]


def llm_eval(aspect: str, definition: str, profiles: bool = False) -> Criterion:
    question = (
        "Conversation:\n{{conversation}}\n{context}Score the conversation above between two users on {aspect} "
        "({definition}), on a scale from 0 to 9 where 0 is the worst and 9 the best. Answer with a single digit.\n"
        "{Aspect} score (0-9):"
    )
    context = "{profiles}" if profiles else ""
    text = question.format(aspect=aspect, Aspect=aspect.capitalize(), definition=definition, context=context)
    return Criterion("llm_eval", text, DIGITS, [d * 100 / 9 for d in range(10)])


def gpt_score(question: str, profiles: bool = False) -> Criterion:
    context = "{profiles}" if profiles else ""
    text = f"Conversation:\n{{conversation}}\n{context}{question} Answer Yes or No."
    return Criterion("gpt_score", text, YES_NO, [100.0, 0.0])


def g_eval(name: str, top: int, definition: str, steps: list[str], profiles: bool = False) -> Criterion:
    given = "the profiles of two users and a conversation between them" if profiles else "a conversation"
    context = "{profiles}" if profiles else ""
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps + [f"Assign a score from 1 to {top}."], 1))
    text = (
        f"Conversation:\n{{conversation}}\n{context}\nYou will be given {given}. Your task is to rate the "
        f"conversation on one metric.\n\nEvaluation Criteria:\n{name} (1-{top}) - {definition}\n\n"
        f"Evaluation Steps:\n{numbered}\n\nEvaluation Form (scores ONLY):\n- {name}:"
    )
    return Criterion("g_eval", text, DIGITS[1 : top + 1], list(range(1, top + 1)))


READ = "Read the conversation carefully"
# name -> criterion; the key is also the metric's name. Adding a criterion is adding a line.
CRITERIA: dict[str, Criterion] = {
    "llm_eval_content": llm_eval("content", "how interesting, informative and engaging the users' turns are"),
    "llm_eval_grammar": llm_eval("grammar", "how grammatically correct and well written the turns are"),
    "llm_eval_relevance": llm_eval("relevance", "how well the turns follow each other and fit the profiles", True),
    "llm_eval_appropriateness": llm_eval("appropriateness", "how natural and fitting each turn is in context"),
    "gpt_score_fluency": gpt_score("Is this a fluent conversation?"),
    "gpt_score_consistent": gpt_score("Are both users consistent with their profiles and with themselves?", True),
    "gpt_score_coherent": gpt_score("Is this a coherent conversation?"),
    "gpt_score_depth": gpt_score("Is this a deep conversation?"),
    "gpt_score_diversity": gpt_score("Is this a diverse conversation?"),
    "gpt_score_likeable": gpt_score("Are the users in this conversation likeable?"),
    "g_eval_relevance": g_eval(
        "Relevance",
        5,
        "whether the users talk about things that matter to them, given their profiles, and answer each other.",
        [f"{READ} and the profiles.", "Check whether each turn answers the previous one and draws on the profiles."],
        True,
    ),
    "g_eval_fluency": g_eval(
        "Fluency",
        3,
        "the quality of the turns in grammar, spelling, word choice and sentence structure.",
        [f"{READ}.", "Look for errors that make the turns hard to read or sound unnatural."],
    ),
    "g_eval_consistent": g_eval(
        "Consistency",
        5,
        "whether each user stays consistent with their own profile and with what they said earlier.",
        [f"{READ} and the profiles.", "List any turn that contradicts the speaker's profile or an earlier turn."],
        True,
    ),
    "g_eval_coherent": g_eval(
        "Coherence",
        5,
        "whether the conversation is well structured and each turn follows sensibly from the ones before.",
        [f"{READ}.", "Check that topics are introduced and changed naturally, and that no turn is out of place."],
    ),
    "g_eval_faithfulness": g_eval(
        "Faithfulness",
        5,
        "whether everything the users say about themselves is supported by, or compatible with, their profiles.",
        [f"{READ} and the profiles.", "For each thing a user says about themselves, check it against their profile."],
        True,
    ),
}
FAMILIES = ("llm_eval", "gpt_score", "g_eval")


def expected_score(probabilities: list[float], values: list[float]) -> float:
    """Sum of p x value, with the probabilities renormalised (a judge's options already sum to 1, up to rounding)."""
    if len(probabilities) != len(values):
        raise ValueError(f"{len(probabilities)} probabilities for {len(values)} values.")
    total = sum(probabilities)
    return sum(p * v for p, v in zip(probabilities, values)) / total if total > 0 else float("nan")


def criterion_question(criterion: Criterion, record: dict) -> str:
    profiles = (
        f"User 1 Profile: {' '.join(record['user1_persona'])}\nUser 2 Profile: {' '.join(record['user2_persona'])}\n"
    )
    return criterion.question.format(profiles=profiles, conversation=format_conversation(record["turns"]))


def judge_options(families: tuple[str, ...] = FAMILIES) -> list[str]:
    """Every answer option these families ask for, for a start-up check against the judge's tokenizer."""
    return sorted({o for c in CRITERIA.values() if c.family in families for o in c.options})


def llm_judge_scores(judge: Judge, records: list[dict], families: tuple[str, ...] = FAMILIES) -> dict[str, float]:
    """Mean score per criterion over the parsed, non-empty records (NaN when there are none), and their count.

    All questions sharing an option set (every record x criterion) go to the judge in one batched call.
    """
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"Unknown LLM-judge families {unknown}; known: {list(FAMILIES)}.")
    records = [r for r in records if r.get("parsed", True) and r.get("turns")]
    criteria = {name: c for name, c in CRITERIA.items() if c.family in families}
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for name, criterion in criteria.items():
        groups[tuple(criterion.options)].append(name)
    scores: dict[str, float] = {}
    for options, names in groups.items():
        questions = [criterion_question(criteria[n], r) for n in names for r in records]
        answers = judge.option_probabilities(questions, list(options)) if questions else []
        for index, name in enumerate(names):
            rows = answers[index * len(records) : (index + 1) * len(records)]
            values = [expected_score(p, criteria[name].values) for p in rows]
            scores[name] = sum(values) / len(values) if values else float("nan")
    result = {name: scores[name] for name in criteria}
    result["llm_judge_conversations"] = len(records)
    return result
