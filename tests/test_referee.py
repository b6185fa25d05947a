"""The referee: held-out pairs that share no user with the run, iteration k's conversations against iteration 0's in
both orders, and the measures no critic optimises."""

import math
import re

import pytest

from spc_train.data.users import outside, user_key, users
from spc_train.evaluation.held_out import hold_out
from spc_train.evaluation.held_out_measures import conversation_measures, generation_measures, near_duplicate_flags
from spc_train.evaluation.referee import compare, compare_pointwise, outcome, overall, pointwise_outcome, summarize

CRITERIA = ["persona_consistency", "naturalness", "coherence"]
_SHOWN = re.compile(r"Conversation 1:\n(.*)\nConversation 2:\n(.*)\nWhich one", re.S)


class FakeReferee:
    """A judge over the referee's questions: `prefer(first, second)` is P("1")."""

    def __init__(self, prefer):
        self.prefer, self.questions = prefer, []

    def option_probabilities(self, questions, options):
        assert options == ["1", "2"]
        self.questions += questions
        answers = []
        for question in questions:
            first, second = _SHOWN.search(question).groups()
            p = self.prefer(first, second)
            answers.append([p, 1 - p])
        return answers


def pair(i, persona=None):
    persona = persona or [f"i own {i} cats.", f"my number is {i}."]
    return {"pair_id": f"p{i}", "user1_persona": persona, "user2_persona": [f"partner {i} likes tea."]}


PAIRS = [pair(i) for i in range(6)]
NEW = [f"User 1: NEW conversation {i}\nUser 2: yes" for i in range(6)]
OLD = [f"User 1: old conversation {i}\nUser 2: no" for i in range(6)]


def test_a_referee_that_always_prefers_iteration_k_gives_a_win_rate_of_one():
    referee = FakeReferee(lambda first, second: 0.9 if "NEW" in first else 0.1)
    rows = compare(referee, PAIRS, NEW, OLD, CRITERIA)
    assert len(referee.questions) == 6 * 2 * 3 and len(rows) == 6 * 3
    assert {row["outcome"] for row in rows} == {"win"}
    metrics = summarize(rows, CRITERIA, seed=0)
    assert metrics["referee_pairs"] == 6
    assert metrics["referee_win_rate"] == 1.0 and metrics["referee_win_rate_low"] == 1.0
    assert (metrics["referee_win"], metrics["referee_tie"], metrics["referee_loss"]) == (1.0, 0.0, 0.0)
    assert all(metrics[f"referee_{c}_win_rate"] == 1.0 for c in CRITERIA)
    # the persona and both conversations come before the criterion: the criteria of one order share their prefix
    first_order = referee.questions[:3]
    assert len({q.rsplit("Which one", 1)[0] for q in first_order}) == 1
    assert "i own 0 cats." in first_order[0]


def test_a_position_only_referee_ties_every_pair():
    referee = FakeReferee(lambda first, second: 0.8)  # always the conversation shown first
    rows = compare(referee, PAIRS, NEW, OLD, CRITERIA)
    assert {row["outcome"] for row in rows} == {"tie"}
    metrics = summarize(rows, CRITERIA, seed=0)
    assert metrics["referee_tie"] == 1.0 and metrics["referee_win"] == 0.0
    assert math.isnan(metrics["referee_win_rate"])  # no decisive pair: no win rate, not 0 or 0.5


class FakePointwiseReferee:
    """A judge over pointwise questions: `p_yes(conversation, place)` is P("Yes"), `place` its index in the call."""

    def __init__(self, p_yes):
        self.p_yes, self.calls = p_yes, []

    def option_probabilities(self, questions, options):
        assert options == ["Yes", "No"]
        self.calls.append(len(questions))
        shown = [re.search(r"Conversation:\n(.*)\n.*Answer with Yes or No", q, re.S)[1] for q in questions]
        return [[self.p_yes(text, place), 1 - self.p_yes(text, place)] for place, text in enumerate(shown)]


def test_pointwise_a_referee_preferring_iteration_k_wins_and_a_place_only_referee_ties():
    knows = FakePointwiseReferee(lambda text, place: 0.8 if "NEW" in text else 0.3)
    rows = compare_pointwise(knows, PAIRS, NEW, OLD, CRITERIA, margin=0.05)
    assert knows.calls == [18, 18]  # each iteration's questions in a call of its own, pair i at place i
    assert {row["outcome"] for row in rows} == {"win"} and rows[0]["p_new"] == 0.8 and rows[0]["p_old"] == 0.3
    assert summarize(rows, CRITERIA, seed=0)["referee_win_rate"] == 1.0
    by_place = FakePointwiseReferee(lambda text, place: 1 - place / 20)  # reads only its place in the call
    rows = compare_pointwise(by_place, PAIRS, NEW, OLD, CRITERIA, margin=0.05)
    assert {row["outcome"] for row in rows} == {"tie"}
    assert pointwise_outcome(0.6, 0.5, 0.05) == "win" and pointwise_outcome(0.5, 0.53, 0.05) == "tie"
    assert pointwise_outcome(0.2, 0.5, 0.05) == "loss"


def test_outcomes_and_the_overall_verdict_of_a_pair():
    assert outcome(0.6, 0.7) == "win" and outcome(0.4, 0.3) == "loss" and outcome(0.9, 0.2) == "tie"
    assert outcome(0.5, 0.9) == "tie"  # no preference in one order is no win
    rows = [
        {"pair_id": "a", "outcome": "win"},
        {"pair_id": "a", "outcome": "tie"},
        {"pair_id": "b", "outcome": "win"},
        {"pair_id": "b", "outcome": "loss"},
        {"pair_id": "c", "outcome": "loss"},
    ]
    assert overall(rows) == {"a": "win", "b": "tie", "c": "loss"}


def test_a_referee_preferring_iteration_0_loses_and_the_interval_covers_the_rate():
    referee = FakeReferee(lambda first, second: 0.2 if "NEW" in first else 0.8)
    metrics = summarize(compare(referee, PAIRS, NEW, OLD, CRITERIA), CRITERIA, seed=0)
    assert metrics["referee_win_rate"] == 0.0 and metrics["referee_loss"] == 1.0

    def early_pairs_prefer_new(first, second):  # pairs 0-3 prefer iteration k, pairs 4-5 iteration 0
        return 0.9 if ("NEW" in first) == (int(re.search(r"conversation (\d)", first)[1]) < 4) else 0.1

    mixed = FakeReferee(early_pairs_prefer_new)
    metrics = summarize(compare(mixed, PAIRS, NEW, OLD, CRITERIA), CRITERIA, seed=0)
    assert metrics["referee_win_rate"] == pytest.approx(4 / 6)
    assert metrics["referee_win_rate_low"] < 4 / 6 < metrics["referee_win_rate_high"]


def test_held_out_pairs_share_no_user_with_the_run_or_each_other():
    shared = ["i love cats.", "i am a nurse."]
    seed = [pair(i) for i in range(20)]
    seed[3]["user1_persona"] = list(reversed(shared))  # the same user as the run's pair p0, in another order
    seed[7]["user2_persona"] = [a.upper() for a in shared]
    seed[9]["user1_persona"] = seed[11]["user1_persona"] = ["we share this user."]
    for record in seed:
        record["turns"] = [{"speaker": 1 + t % 2, "text": f"turn {t}"} for t in range(4)]
    run_pairs = [{**seed[0], "user1_persona": shared}]
    chosen = hold_out(seed, run_pairs, 30, min_turns=2, rng_seed="7-held-out")
    ids = {record["pair_id"] for record in chosen}
    assert not ids & {"p0", "p3", "p7"}
    assert not (users(chosen) & users(run_pairs))
    assert len(ids & {"p9", "p11"}) == 1  # two held-out pairs never share a user
    assert len(chosen) == 20 - 3 - 1
    assert chosen[:5] == hold_out(seed, run_pairs, 5, min_turns=2, rng_seed="7-held-out")
    assert user_key(["I  Love cats."]) == user_key(["i love cats."])
    assert [r["pair_id"] for r in outside(seed, run_pairs)] == [f"p{i}" for i in range(1, 20) if i not in (3, 7)]


def test_near_duplicates_within_and_across_lists():
    base = "i love to hike in the mountains every weekend with my two dogs and my sister"
    texts = [base, base + " and friends", "we talked about cooking pasta and the weather in paris today"]
    assert near_duplicate_flags(texts) == [True, True, False]
    assert near_duplicate_flags(texts[2:], others=texts[:1]) == [False]
    assert near_duplicate_flags([base], others=[base + " and friends"]) == [True]


def test_measures_of_held_out_conversations():
    records = [
        {
            "user1_persona": ["I love to bake cookies."],
            "user2_persona": ["I am a nurse."],
            "turns": [
                {"speaker": 1, "text": "Oh, fun fact, I love to bake cookies, haha, what about you?"},
                {"speaker": 2, "text": "Long shifts at the hospital keep me busy."},
            ],
            "parsed": True,
            "finish_reason": "stop",
            "num_tokens": 30,
        },
        {
            "user1_persona": ["I play chess."],
            "user2_persona": ["I like rain."],
            "turns": [{"speaker": 1, "text": "Hello there."}, {"speaker": 2, "text": "Hi."}],
            "parsed": False,
            "finish_reason": "length",
            "num_tokens": 50,
        },
    ]
    measures = generation_measures(records)
    assert measures["turns_mean"] == 2 and measures["parse_rate"] == 0.5 and measures["stopped_rate"] == 0.5
    assert measures["recitation_rate"] == pytest.approx(1 / 4)  # one recited sentence of four
    assert measures["tokens_mean"] == 40 and measures["near_duplicate_rate"] == 0.0
    assert 0 < measures["distinct_2"] <= 1
    assert set(conversation_measures(records)) < set(measures)


@pytest.fixture(scope="module")
def tiny_referee(tiny_models, tmp_path_factory):
    """The tiny generator with its output layer nudged: a model of its own, as a referee must be (not the judge)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-referee")
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "generator")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(1.01)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_models / "generator").save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_the_loop_referees_iteration_1_on_held_out_pairs_no_iteration_trains_on(demo_run, tiny_referee, tmp_path):
    from conftest import copy_run

    from spc_train.cli import main
    from spc_train.health.card import read_card
    from spc_train.runs import load_rows, read_stage

    recipe, _ = demo_run
    run = copy_run(demo_run, tmp_path)
    referee = ["--referee.held_out_pairs", "3", "--referee.name_or_path", str(tiny_referee)]
    same = ["--referee.held_out_pairs", "3", "--referee.name_or_path", str(recipe.parent / "missing")]
    assert main(["check", "--config", str(recipe), *same]) != 0  # a referee that is not there is named at check
    assert main(["loop", "--config", str(recipe), "--run_dir", str(run), *referee, "--loop.replay_seed", "2"]) == 0

    held_out = load_rows(run / "held-out")
    assert len(held_out) == 3
    assert not users(held_out) & users(load_rows(run / "pairs"))
    for k in (0, 1):
        generations = load_rows(run / f"iter-{k:02d}" / "held-out-generations")
        assert [row["pair_id"] for row in generations] == [row["pair_id"] for row in held_out]
        replayed = [row for row in load_rows(run / f"iter-{k:02d}" / "train") if row["source"].startswith("replay:")]
        assert replayed and not {row["pair_id"] for row in replayed} & {row["pair_id"] for row in held_out}
    assert not (run / "iter-00" / "referee").exists()  # iteration 0 is the baseline
    verdicts = load_rows(run / "iter-01" / "referee")
    assert len(verdicts) == 3 * 3 and {row["outcome"] for row in verdicts} <= {"win", "tie", "loss"}

    seed_metrics = read_stage(run / "eval")["metrics"]
    metrics = read_stage(run / "iter-01" / "eval")["metrics"]
    assert 0 <= seed_metrics["held_out_distinct_2"] <= 1 and "referee_win" not in seed_metrics
    assert metrics["referee_pairs"] == 3 and metrics["referee_win"] + metrics["referee_tie"] + metrics[
        "referee_loss"
    ] == pytest.approx(1)
    assert {"held_out_parse_rate", "held_out_recitation_rate", "held_out_near_duplicate_of_iteration_0"} <= set(
        metrics
    )
    report = (run / "report" / "report.md").read_text()
    assert "Referee: iteration k against iteration 0 on held-out pairs" in report and "referee_win_rate" in report
    (entry,) = [e for e in read_card(run / "probes")["entries"] if e["name"] == "referee"]
    assert entry["metrics"] == ["referee_"] and "position consistency" in entry["figures"]
    section = report.split("## Referee", 1)[1].split("\n## ", 1)[0]
    if entry["verdict"] == "at chance":  # the tiny referee usually is: its win rate is marked as noise
        assert "**Judge at chance**" in section and "`referee`" in section and "referee_win_rate ⚠" in section
