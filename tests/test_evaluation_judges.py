"""Evaluation by judges: the detection ("Turing") test, profile extraction, and the LLM-judge scores of Table 15.

Judges are `RuleLM`s (tests/test_critic.py): their next-token logits follow a rule on the decoded prompt, so each test
decides what the judge answers, and the numbers can be computed by hand.
"""

from __future__ import annotations

import math
import random
import re

import pytest
from test_critic import rule_judge, tok  # noqa: F401  (tok is a fixture)

from spc_train.evaluation import detection, llm_judge
from spc_train.evaluation import profile_extraction as extraction
from spc_train.evaluation.detection import detection_outcome, detection_pairs, detection_test
from spc_train.evaluation.llm_judge import (
    CRITERIA,
    criterion_question,
    expected_score,
    judge_options,
    llm_judge_scores,
)
from spc_train.evaluation.profile_extraction import (
    build_options,
    extraction_rows,
    extraction_summary,
    normalize,
    profile_extraction,
)
from spc_train.judge import option_token_ids

MARKER = "zebra"

pytestmark = pytest.mark.usefixtures("one_thread")


def record(pair_id: str, *lines: str, user1=("I like cats.",), user2=("I have a dog.",), parsed=True) -> dict:
    turns = [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(lines)]
    return {
        "pair_id": pair_id,
        "user1_persona": list(user1),
        "user2_persona": list(user2),
        "turns": turns,
        "parsed": parsed,
    }


class Recording:
    """Wraps a judge and records each call's (number of questions, options)."""

    def __init__(self, judge):
        self.judge, self.calls = judge, []

    def option_probabilities(self, questions, options, examples=()):
        self.calls.append((len(questions), tuple(options)))
        return self.judge.option_probabilities(questions, options, examples)


class Refusing:
    def option_probabilities(self, questions, options, examples=()):
        raise AssertionError("the judge should not be asked")


def test_every_option_is_one_token_of_the_tiny_tokenizer(tok):  # noqa: F811
    options = judge_options() + detection.OPTIONS + extraction.OPTIONS
    assert set(options) >= {str(d) for d in range(10)} | {"Yes", "No"}
    for option in options:
        assert option_token_ids(tok, option)  # raises JudgeError otherwise


# -- detection -------------------------------------------------------------------------------------------------------
def first_and_second(text: str) -> tuple[str, str]:
    head, second = text.rsplit("Conversation 2:", 1)
    return head.rsplit("Conversation 1:", 1)[1], second


def marker_is_ai(text: str) -> dict[str, float]:
    """Calls the conversation with the marker the AI one, wherever it is shown."""
    first, second = first_and_second(text)
    if MARKER in first:
        return {"1": 30.0}
    if MARKER in second:
        return {"2": 30.0}
    return {"1": 0.0, "2": 0.0}


def detection_items(marked: str, n: int = 3) -> list[tuple[dict, dict]]:
    pairs = []
    for i in range(n):
        seed = record(f"p{i}", "hi, how are you?", "fine, thanks. I walk my dog.")
        generated = record(f"p{i}", "hello there!", "I love my dog, we walk a lot.")
        for marked_record, name in ((seed, "seed"), (generated, "generated")):
            if marked == name:
                marked_record["turns"][0]["text"] += f" I saw a {MARKER} today."
        pairs.append((seed, generated))
    return pairs


def test_detection_catches_the_generated_conversation_in_both_orders(tok):  # noqa: F811
    judge = Recording(rule_judge(tok, marker_is_ai))
    result = detection_test(judge, detection_items("generated"))
    assert result["detection_lose"] == 1.0 and result["detection_win"] == 0.0 and result["detection_tie"] == 0.0
    assert result["detection_items"] == 3
    assert result["detection_p_generated"] == pytest.approx(1.0, abs=1e-6)
    assert judge.calls == [(6, ("1", "2"))]  # both orders of every item, in one call


def test_detection_flips_to_win_when_the_seed_looks_generated(tok):  # noqa: F811
    result = detection_test(rule_judge(tok, marker_is_ai), detection_items("seed"))
    assert (result["detection_lose"], result["detection_win"], result["detection_tie"]) == (0.0, 1.0, 0.0)
    assert result["detection_p_generated"] == pytest.approx(0.0, abs=1e-6)


def test_pure_position_bias_is_a_tie(tok):  # noqa: F811
    result = detection_test(rule_judge(tok, lambda text: {"1": 30.0}), detection_items("generated"))
    assert (result["detection_lose"], result["detection_win"], result["detection_tie"]) == (0.0, 0.0, 1.0)
    assert result["detection_p_generated"] == pytest.approx(0.5, abs=1e-6)


def test_detection_rates_add_up_on_a_mixed_set(tok):  # noqa: F811
    # An unmarked item: the judge is indifferent, P = 0.5 in both orders, a tie.
    pairs = detection_items("generated", 2) + detection_items("seed", 1) + detection_items("neither", 1)
    result = detection_test(rule_judge(tok, marker_is_ai), pairs)
    assert result["detection_lose"] == 0.5 and result["detection_win"] == 0.25 and result["detection_tie"] == 0.25
    assert result["detection_lose"] + result["detection_win"] + result["detection_tie"] == pytest.approx(1.0)
    assert result["detection_p_generated"] == pytest.approx((2 * 1.0 + 0.0 + 0.5) / 4, abs=1e-6)


def test_detection_outcomes_at_the_boundary():
    assert detection_outcome(0.9, 0.6) == "lose"
    assert detection_outcome(0.1, 0.4) == "win"
    assert detection_outcome(0.9, 0.1) == "tie"
    assert detection_outcome(0.5, 0.9) == "tie"  # 0.5 picks neither conversation


def test_no_detection_items_gives_nan_and_asks_nothing():
    result = detection_test(Refusing(), [])
    assert result["detection_items"] == 0
    assert all(math.isnan(result[k]) for k in ("detection_lose", "detection_win", "detection_tie"))


def test_detection_pairs_match_by_pair_id_and_count_what_was_skipped():
    seeds = [record("a", "hi"), record("b", "hey"), record("c"), record("a", "second seed of a")]
    generated = [
        record("b", "gen b"),
        record("a", "gen a"),
        record("a", "gen a again"),  # duplicate
        record("c", "gen c"),  # its seed has no turns: unmatched
        record("d", "gen d"),  # unmatched
        record("b", "unparsed", parsed=False),  # unusable
        record("e"),  # unusable: no turns
    ]
    pairs, skipped = detection_pairs(seeds, generated)
    assert [(s["pair_id"], s["turns"][0]["text"], g["turns"][0]["text"]) for s, g in pairs] == [
        ("b", "hey", "gen b"),
        ("a", "hi", "gen a"),
    ]
    assert skipped == {"unusable": 2, "unmatched": 2, "duplicate": 1}


# -- profile extraction ----------------------------------------------------------------------------------------------
PERSONA = [
    "I like cats.",
    "I play guitar.",
    "I live in Paris.",
    "I drive a truck.",
    "I have two sons.",
    "I love jazz.",
]
POOL = [
    "i LIKE cats",  # a variant of a real attribute: never a distractor
    "I love jazz!!",
    "I have two   sons.",
    " ",
    "",
    "I collect stamps.",
    "I collect stamps",  # a variant of another pool attribute: at most one of them
    "I ride horses.",
    "I sing opera.",
    "I fix bikes.",
    "I hate rain.",
]
NEGATORS = {
    "unchanged": lambda attributes: list(attributes),
    "empty": lambda attributes: ["" for _ in attributes],
    "garbage": lambda attributes: [None, 3, "  "],
    "not a list": lambda attributes: 3,
    "variants of the persona": lambda attributes: ["i love JAZZ", "I HAVE TWO SONS", "I play guitar!"],
    "good": lambda attributes: ["I do not " + a[2:].lower() for a in attributes],
    "none": None,
}


@pytest.mark.parametrize("negator", list(NEGATORS))
def test_distractors_are_never_real_attributes(negator):
    contradicting = lambda persona, candidates: ["I like cats!", "I sing opera."]  # noqa: E731
    persona_keys = {normalize(a) for a in PERSONA}
    for seed in range(20):
        options = build_options(PERSONA, POOL, random.Random(seed), NEGATORS[negator], contradicting)
        real = [a for a, kind in options if kind == "real"]
        distractors = [a for a, kind in options if kind != "real"]
        assert len(options) == 8 and len(real) == 4 and len(set(real)) == 4 and set(real) <= set(PERSONA)
        assert len(distractors) == 4
        keys = [normalize(a) for a in distractors]
        assert all(keys) and len(set(keys)) == 4
        assert not set(keys) & persona_keys
        kinds = {kind for _, kind in options}
        assert ("negated" in kinds) is (negator == "good")
        assert ("I sing opera.", "contradicting") in options


def test_options_are_deterministic_for_a_seed_and_shuffled():
    def options(seed):
        return build_options(PERSONA, POOL, random.Random(f"{seed}:p:1"), NEGATORS["good"])

    assert options(7) == options(7)
    assert len({tuple(options(seed)) for seed in range(10)}) > 1
    real_positions = {tuple(i for i, (_, kind) in enumerate(options(seed)) if kind == "real") for seed in range(10)}
    assert len(real_positions) > 1  # the real options are not always in the same places


def test_a_short_persona_shows_all_its_attributes():
    options = build_options(["I like cats.", "I play guitar."], POOL, random.Random(0))
    assert sorted(a for a, kind in options if kind == "real") == ["I like cats.", "I play guitar."]
    assert sum(kind != "real" for _, kind in options) == 4


# Record A: user 1 mentions cats and guitar, user 2 tomatoes and baking; record B: user 1 mentions stamps.
EXTRACTION_RECORDS = [
    record(
        "A",
        "I like cats, and I play guitar for them.",
        "I grow tomatoes, I am a baker by trade.",
        user1=["I like cats.", "I play guitar.", "I live in Paris.", "I drive a truck."],
        user2=["I grow tomatoes.", "I am a baker.", "I swim daily.", "I read poems."],
    ),
    record(
        "B",
        "I collect stamps, old ones.",
        "Nice, how many?",
        user1=["I collect stamps.", "I hate rain.", "I own a boat.", "I speak French."],
        user2=["I ride horses.", "I paint walls.", "I fix bikes.", "I sing opera."],
    ),
]
# Unlisted attributes negate to "" (unusable): their slots are refilled with random attributes of other profiles.
NEGATIONS = {
    "I like cats.": "I do not like cats.",  # its words are in the conversation: the word-matching judge says Yes
    "I play guitar.": "I never play guitar.",  # "never" is not: No
    "I grow tomatoes.": "I do not grow tomatoes.",  # Yes
}


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4}


def says_yes_when_the_words_are_there(text: str) -> dict[str, float]:
    conversation = text.split("Conversation:\n", 1)[1].split("\nBased only", 1)[0]
    attribute = re.search(r'truthfully say "(.*)"\?', text).group(1)
    return {"Yes": 30.0} if words(attribute) <= words(conversation) else {"No": 30.0}


def test_extraction_precision_and_recall_by_hand(tok):  # noqa: F811
    judge = Recording(rule_judge(tok, says_yes_when_the_words_are_there))
    negated = []

    def negate(attributes):
        negated.append(list(attributes))
        return [NEGATIONS.get(a, "") for a in attributes]

    rows = extraction_rows(judge, EXTRACTION_RECORDS, seed=3, negate=negate)
    assert len(negated) == 1  # every attribute negated in one (batchable) call
    assert judge.calls == [(32, ("Yes", "No"))]
    by_item = {(row["pair_id"], row["speaker"]): row for row in rows}
    # A/1: real cats, guitar say Yes (2 of 4); distractors: "I do not like cats." Yes, "I never play guitar." No.
    # A/2: real tomatoes, baker Yes; "I do not grow tomatoes." Yes. B/1: stamps Yes. B/2: nothing.
    expected = {("A", 1): (2 / 3, 2 / 4), ("A", 2): (2 / 3, 2 / 4), ("B", 1): (1.0, 1 / 4), ("B", 2): (None, 0.0)}
    for item, (precision, recall) in expected.items():
        row = by_item[item]
        assert row["recall"] == recall
        assert math.isnan(row["precision"]) if precision is None else row["precision"] == pytest.approx(precision)
        assert row["kinds"].count("real") == 4 and len(row["options"]) == 8
    assert ("I do not like cats.", "negated") in zip(by_item[("A", 1)]["options"], by_item[("A", 1)]["kinds"])
    assert by_item[("A", 2)]["kinds"].count("negated") == 1  # "I am a baker." had no usable negation: refilled

    summary = extraction_summary(rows)
    assert summary["extraction_items"] == 4
    assert summary["extraction_precision"] == pytest.approx(5 / 7)
    assert summary["extraction_recall"] == pytest.approx(5 / 16)
    assert summary["extraction_p_yes_real"] == pytest.approx(5 / 16, abs=1e-6)
    assert summary["extraction_p_yes_distractor"] == pytest.approx(2 / 16, abs=1e-6)
    assert profile_extraction(judge, EXTRACTION_RECORDS, seed=3, negate=negate) == summary


def test_extraction_is_deterministic_and_survives_a_garbage_negator(tok):  # noqa: F811
    judge = rule_judge(tok, says_yes_when_the_words_are_there)
    first = extraction_rows(judge, EXTRACTION_RECORDS, seed=1, negate=lambda attributes: None)
    again = extraction_rows(judge, EXTRACTION_RECORDS, seed=1, negate=lambda attributes: None)
    assert [(row["options"], row["kinds"], row["p_yes"]) for row in first] == [
        (row["options"], row["kinds"], row["p_yes"]) for row in again
    ]
    assert all("negated" not in row["kinds"] and len(row["options"]) == 8 for row in first)


def test_extraction_threshold_and_nothing_selected(tok):  # noqa: F811
    judge = rule_judge(tok, lambda text: {"Yes": math.log(0.6), "No": math.log(0.4)})
    assert profile_extraction(judge, EXTRACTION_RECORDS)["extraction_recall"] == pytest.approx(1.0)
    strict = profile_extraction(judge, EXTRACTION_RECORDS, threshold=0.7)
    assert math.isnan(strict["extraction_precision"]) and strict["extraction_recall"] == 0.0
    assert strict["extraction_p_yes_real"] == pytest.approx(0.6, abs=1e-5)
    empty = profile_extraction(Refusing(), [record("x", "hi", parsed=False)])
    assert empty["extraction_items"] == 0 and math.isnan(empty["extraction_recall"])


# -- LLM-judge scores ------------------------------------------------------------------------------------------------
def test_expected_score_by_hand():
    assert expected_score([0.5, 0.5], [1, 3]) == 2.0
    assert expected_score([0.2, 0.8], [100.0, 0.0]) == pytest.approx(20.0)
    assert expected_score([1.0, 1.0, 2.0], [1, 2, 3]) == pytest.approx(2.25)  # renormalised
    with pytest.raises(ValueError):
        expected_score([1.0], [1, 2])


LLM_RECORDS = [
    record("a", f"I saw a {MARKER} at the zoo.", "Nice!", user1=["I like zoos."], user2=["I like cats."]),
    record("b", "I walk my dog.", "Nice!"),
    record("c", "not parsed", parsed=False),  # left out
]


def test_all_mass_on_nine_is_a_perfect_llm_eval(tok):  # noqa: F811
    # Mass on "9"; among the options of the other scales, on "3" and "Yes".
    judge = Recording(rule_judge(tok, lambda text: {"9": 30.0, "3": 10.0, "Yes": 10.0}))
    scores = llm_judge_scores(judge, LLM_RECORDS)
    assert scores["llm_judge_conversations"] == 2
    for name in ("content", "grammar", "relevance", "appropriateness"):
        assert scores[f"llm_eval_{name}"] == pytest.approx(100.0, abs=1e-6)
    # "9" is no option of the other scales: each is read over its own options only.
    assert scores["gpt_score_fluency"] == pytest.approx(100.0, abs=1e-6)
    assert scores["g_eval_relevance"] == pytest.approx(3.0, abs=1e-6)
    assert scores["g_eval_fluency"] == pytest.approx(3.0, abs=1e-6)
    assert set(scores) == set(CRITERIA) | {"llm_judge_conversations"}
    # One call per option set, every record x criterion of that set in it.
    digits, scale5, scale3 = tuple(str(d) for d in range(10)), ("1", "2", "3", "4", "5"), ("1", "2", "3")
    assert sorted(judge.calls) == sorted([(8, digits), (12, ("Yes", "No")), (8, scale5), (2, scale3)])


def test_gpt_score_is_100_times_p_yes(tok):  # noqa: F811
    def rule(text):
        p = 0.9 if MARKER in text else 0.3
        return {"Yes": math.log(p), "No": math.log(1 - p)}

    scores = llm_judge_scores(rule_judge(tok, rule), LLM_RECORDS, families=("gpt_score",))
    assert set(scores) == {k for k in CRITERIA if k.startswith("gpt_score_")} | {"llm_judge_conversations"}
    for name in ("fluency", "consistent", "coherent", "depth", "diversity", "likeable"):
        assert scores[f"gpt_score_{name}"] == pytest.approx((90 + 30) / 2, abs=1e-4)


def test_g_eval_reads_the_expected_score_over_each_scale(tok):  # noqa: F811
    scores = llm_judge_scores(rule_judge(tok, lambda text: {"2": 0.0, "4": 0.0}), LLM_RECORDS, families=("g_eval",))
    for name in ("relevance", "consistent", "coherent", "faithfulness"):
        assert scores[f"g_eval_{name}"] == pytest.approx(3.0, abs=1e-6)  # half on 2, half on 4
    assert scores["g_eval_fluency"] == pytest.approx(2.0, abs=1e-6)  # 4 is off the 1-3 scale


def test_questions_show_the_profiles_where_the_criterion_needs_them():
    question = {name: criterion_question(c, LLM_RECORDS[0]) for name, c in CRITERIA.items()}
    with_profiles = {name for name, text in question.items() if "User 1 Profile: I like zoos." in text}
    assert with_profiles == {
        "llm_eval_relevance",
        "gpt_score_consistent",
        "g_eval_relevance",
        "g_eval_consistent",
        "g_eval_faithfulness",
    }
    assert all(f"User 1: I saw a {MARKER} at the zoo.\nUser 2: Nice!" in text for text in question.values())
    assert "Evaluation Steps:" in question["g_eval_coherent"] and "Coherence (1-5)" in question["g_eval_coherent"]


def test_llm_judge_families_and_empty_input():
    with pytest.raises(ValueError, match="bogus"):
        llm_judge_scores(Refusing(), LLM_RECORDS, families=("bogus",))
    scores = llm_judge_scores(Refusing(), [], families=("llm_eval",))
    assert scores["llm_judge_conversations"] == 0 and math.isnan(scores["llm_eval_content"])
    assert llm_judge.FAMILIES == ("llm_eval", "gpt_score", "g_eval")
