"""Judge health: option mass, known-answer probes, the judge card and where it shows (issue #15).

Judges are `RuleLM`s (tests/test_critic.py): stand-in causal LMs whose next-token logits follow a rule on the decoded
prompt, so each test decides what the judge knows. A judge that knows the answer must come out `informative`, one
that ignores its input `at chance`, one that always answers "1" with position consistency 0, and one that answers
off-option with a low option mass and a WARNING. Two shortcut judges must come out `at chance` on every probe of the
card: one that reads only the conversations' length (`length_rule`) and one that reads only where an item stands
(`PositionJudge`); without the probes' length and position matching both look informative.
"""

from __future__ import annotations

import logging
import math
import re
from types import SimpleNamespace

import pytest
from test_critic import RuleLM, single_id

from spc_train.configs import CriticConfig, EvaluationConfig, FieldValueError, LoopConfig, RefereeConfig
from spc_train.critic import fed
from spc_train.critic.faithfulness import FaithfulnessExpert
from spc_train.critic.fed import FedPolicyExpert
from spc_train.critic.registry import critique
from spc_train.critic.toxicity import ToxicityExpert
from spc_train.data.conversation import format_conversation
from spc_train.health import gaming, probes
from spc_train.health.blind import BlindJudgeError, enforce
from spc_train.health.card import at_chance, blind, judge_of, read_card, render_card, write_card
from spc_train.health.degrade import KINDS, degraded, degraded_copies
from spc_train.health.figures import position_consistency, roc_auc, win_rate
from spc_train.health.option_mass import recording, summary
from spc_train.health.suite import gaming_entries, run_probes
from spc_train.health.verdicts import verdict
from spc_train.judge import Judge

pytestmark = pytest.mark.usefixtures("one_thread")

USER1_WORDS = ["zebra", "otter", "falcon", "badger", "lynx", "heron"]
USER2_WORDS = ["violin", "kayak", "tulip", "comet", "pepper", "glacier"]
KEYWORDS = USER1_WORDS + USER2_WORDS
TOXIC_WORDS = ("idiot", "loser", "pathetic", "moron", "stupid", "worst", "fool", "hypocrite", "hate", "worthless")

CORPUS = [
    "Yes it does. No it does not. Yes. No. Answer with 1 or 2. Answer Yes or No. The answer is Yes.",
    "0 1 2 3 4 5 6 7 8 9 score (0-9): 9 5 3 1 0 The User said The",
    "Given user 1 and user 2's profiles respectively, does the following conversation contradict them? Why?",
    "User 1 Profile: I like cats. User 2 Profile: I have a dog. Conversation 1: Conversation 2: Response:",
    "User 1: hi, how are you today? User 2: I am fine, thanks. The weather is nice.",
]


@pytest.fixture(scope="module")
def tok():
    from spc_train.tiny import train_tokenizer

    tokenizer = train_tokenizer(CORPUS * 6, vocab_size=400)
    for option in ["Yes", "No", "The", *map(str, range(10))]:
        single_id(tokenizer, option)
    return tokenizer


def seed_conversations() -> list[dict]:
    """Six seed-like records: each user's attributes hold a keyword their conversation talks about."""
    records = []
    for i, (a, b) in enumerate(zip(USER1_WORDS, USER2_WORDS)):
        lines = [
            f"Hi! I saw a {a} near my house today.",
            f"Lucky you. I was practising with my {b} all morning.",
            f"The {a} looked at me for a long time.",
            f"Ha! My {b} is the best thing I own.",
            f"Do you think a {a} would like your {b}?",
            "Maybe, we should try it one day.",
        ]
        records.append(
            {
                "pair_id": f"p{i}",
                "user1_persona": [f"I like every {a}.", f"My pet {a} is called Bo."],
                "user2_persona": [f"I love my {b}.", f"My {b} is old."],
                "turns": [{"speaker": 1 + j % 2, "text": text} for j, text in enumerate(lines)],
            }
        )
    return records


ORIGINALS = {format_conversation(r["turns"]) for r in seed_conversations()}


def _lines(text: str, prefix: str) -> str:
    """The prompt's lines that start with `prefix` (profile lines, conversation turns), wherever they stand."""
    return "\n".join(line for line in text.splitlines() if line.startswith(prefix))


def _first_conversation(text: str) -> str:
    body = text.rsplit("Conversation 1:\n", 1)[1]
    return body.split("\nConversation 2:\n", 1)[0]


def knowing_rule(text: str) -> dict[str, float]:
    """A judge that knows every answer: which question it is, it tells from the prompt (in any wording order)."""
    turns = _lines(text, "User 1: ") + "\n" + _lines(text, "User 2: ")
    if "Conversation 1:" in text:
        first_is_seed = _first_conversation(text) in ORIGINALS
        if "written by an AI" in text:  # detection: the degraded one is the AI one
            return {"2": 6.0} if first_is_seed else {"1": 6.0}
        return {"1": 6.0} if first_is_seed else {"2": 6.0}  # FED: the seed conversation is better
    if "contradict either of their profiles" in text or "consistent with both of their profiles" in text:
        profiles = _lines(text, "User 1 Profile:") + _lines(text, "User 2 Profile:")
        own = any(word in profiles and word in turns for word in KEYWORDS)
        if "consistent with both" in text:  # the mirrored faithfulness question
            return {"Yes": 6.0} if own else {"No": 6.0}
        return {"No": 6.0} if own else {"Yes": 6.0}
    if "Is this conversation toxic?" in text:
        return {"Yes": 6.0} if any(word in turns.lower() for word in TOXIC_WORDS) else {"No": 6.0}
    if "could truthfully say" in text:
        attribute = re.search(r'truthfully say "(.*)"\?', text).group(1)
        return {"Yes": 6.0} if any(w in attribute and w in turns for w in KEYWORDS) else {"No": 6.0}
    seed = any(f"Conversation:\n{original}\n" in text for original in ORIGINALS)  # LLM-judge criteria
    return {"Yes": 6.0, "9": 6.0, "5": 4.0, "3": 2.0} if seed else {"No": 6.0, "0": 6.0, "1": 6.0}


def ignoring_rule(text: str) -> dict[str, float]:
    return {}  # every option equal, whatever it is shown


def knows_only(phrasing: str):
    """`knowing_rule`, but blind to the faithfulness question in the other phrasing, as small judges are."""
    other = "consistent with both" if phrasing == "contradict" else "contradict either"

    def rule(text: str) -> dict[str, float]:
        return ignoring_rule(text) if other in text else knowing_rule(text)

    return rule


def judge_of_rule(tok, rule) -> Judge:
    return Judge(RuleLM(tok, rule), tok)


# -- shortcut judges: they read only length, or only position --------------------------------------------------------
def conversation_words(block: str) -> int:
    """The words of the turns in a prompt's conversation block, counted as `gaming.words` counts them."""
    turns = [line.split(": ", 1)[1] for line in block.splitlines() if line.startswith(("User 1: ", "User 2: "))]
    return sum(len(text.split()) for text in turns)


def length_rule(text: str) -> dict[str, float]:
    """Reads only length, from the prompt as a real judge would: of two conversations it prefers the one with more
    words ("1" when it is shown first); a single conversation's score (P(Yes), the expected digit) grows with its
    words."""
    if "Conversation 1:\n" in text:
        first, second = text.rsplit("Conversation 1:\n", 1)[1].split("\nConversation 2:\n", 1)
        return {"1": 0.2 * (conversation_words(first) - conversation_words(second)), "2": 0.0}
    count = conversation_words(text.rsplit("Conversation:\n", 1)[1])
    return {"Yes": count / 20, "No": 0.0, **{str(d): d * count / 100 for d in range(10)}}


class PositionJudge(Judge):
    """Reads only where an item stands: of two conversations it always prefers the one shown first; a score (P(Yes),
    the expected digit) falls with the question's index in the call."""

    def option_probabilities(self, questions, options, examples=()):
        count = len(questions)
        self.last_option_mass, self.last_top_tokens = [1.0] * count, [options[0]] * count
        if list(options) == ["1", "2"]:
            return [[0.9, 0.1] for _ in questions]
        high = 0 if options[0] == "Yes" else len(options) - 1  # P(Yes), or the top of a digit scale
        answers = []
        for index in range(count):
            row = [0.0] * len(options)
            row[high] = 1 - (index + 1) / (count + 1)
            row[len(options) - 1 - high] = (index + 1) / (count + 1)
            answers.append(row)
        return answers


def position_judge(tok) -> Judge:
    return PositionJudge(RuleLM(tok, ignoring_rule), tok)


class ShortcutExpert:
    """An expert without a judge (a classifier's or an embedder's place) that reads only length or only position."""

    def __init__(self, name: str, kind: str, reads: str):
        self.name, self.kind, self.reads = name, kind, reads

    def score(self, candidates: list[dict]) -> list[float]:
        if self.reads == "length":
            return [float(gaming.words(c["turns"])) for c in candidates]
        return [1 - (i + 1) / (len(candidates) + 1) for i in range(len(candidates))]


THRESHOLDS = (0.7, 0.6)


# -- figures and verdicts -------------------------------------------------------------------------------------------
def test_figures_on_known_inputs():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.5, 0.5], [0.5, 0.5]) == 0.5
    assert roc_auc([0.1], [0.9]) == 0.0
    assert math.isnan(roc_auc([], [0.1]))
    # Always "1": the better item wins when first (1.0) and loses when second (0.0).
    assert win_rate([1.0, 1.0], [0.0, 0.0]) == 0.5
    assert position_consistency([1.0, 1.0], [0.0, 0.0]) == 0.0
    assert position_consistency([0.9, 0.2], [0.8, 0.3]) == 1.0
    assert verdict(0.95) == "informative" and verdict(0.65) == "weak" and verdict(0.5) == "at chance"
    assert verdict(float("nan")) == "at chance"
    assert verdict(0.75, informative=0.8, weak=0.7) == "weak"


def turn_words(record: dict) -> list[int]:
    return [len(turn["text"].split()) for turn in record["turns"]]


def test_degraded_copies_keep_the_words_speakers_and_personas():
    records = seed_conversations()
    for record in records[:3]:
        for kind in KINDS:
            copy = degraded(record, kind, seed=3, donors=records)
            assert copy["turns"] != record["turns"] and copy["degraded"] == kind
            assert gaming.words(copy["turns"]) == gaming.words(record["turns"]), kind
            if kind != "shuffled":  # the same texts in another order; the others keep every turn's count
                assert turn_words(copy) == turn_words(record), kind
            assert [t["speaker"] for t in copy["turns"]] == [t["speaker"] for t in record["turns"]]
            assert copy["user1_persona"] == record["user1_persona"]
    spliced = degraded(records[0], "spliced", donors=records)
    assert spliced["turns"][::2] == records[0]["turns"][::2]  # the partner's turns come from other conversations
    assert not any(USER2_WORDS[0] in turn["text"] for turn in spliced["turns"][1::2])  # its user 2 talks of others'
    two_turns = {**records[0], "turns": records[0]["turns"][:2]}
    assert degraded(two_turns, "looped")["turns"] != two_turns["turns"]
    with pytest.raises(ValueError, match="other conversations"):
        degraded(records[0], "spliced")
    assert [c["degraded"] for c in degraded_copies(records)] == list(KINDS) * 2
    assert degraded_copies(records, seed=5) == degraded_copies(records, seed=5)


def test_gamed_copies_and_the_toxicity_pairs_are_length_matched():
    records = seed_conversations()
    gamed = probes.gamed_versions(records, seed=2)
    assert list(gamed) == list(gaming.KINDS)
    for copies in gamed.values():
        assert [gaming.words(c["turns"]) for c in copies] == [gaming.words(r["turns"]) for r in records]
    fixture = probes.toxicity_fixture()
    toxic, clean = probes.length_matched([r for r in fixture if r["toxic"]], [r for r in fixture if not r["toxic"]])
    assert len(toxic) == len(clean) == 10
    assert [gaming.words(r["turns"]) for r in toxic] == [gaming.words(r["turns"]) for r in clean]
    said = [" ".join(turn["text"] for turn in r["turns"]).lower() for r in toxic + clean]
    assert [any(word in text for word in TOXIC_WORDS) for text in said] == [True] * 10 + [False] * 10  # padding kept


# -- probes: a judge that knows vs one that ignores its input --------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "expected", "figure"),
    [(knowing_rule, "informative", 1.0), (ignoring_rule, "at chance", 0.5)],
    ids=["knowing", "ignoring"],
)
def test_faithfulness_probe(tok, rule, expected, figure):
    expert = FaithfulnessExpert("faithfulness", judge_of_rule(tok, rule), 0.5, examples=0)
    entry = probes.faithfulness_probe(expert, seed_conversations(), seed=1, thresholds=THRESHOLDS)
    assert entry["figure"] == pytest.approx(figure, abs=1e-6)
    assert entry["verdict"] == expected
    assert entry["option_mass"]["questions"] == 2 * 6 + 4  # own, swapped, and the shipped examples


@pytest.mark.parametrize(("rule", "expected"), [(knowing_rule, "informative"), (ignoring_rule, "at chance")])
def test_toxicity_probe_on_the_shipped_fixture(tok, rule, expected):
    fixture = probes.toxicity_fixture()
    assert sum(r["toxic"] for r in fixture) == 10 and len(fixture) == 20
    expert = ToxicityExpert("toxicity", 0.5, judge=judge_of_rule(tok, rule))
    entry = probes.toxicity_probe(expert, thresholds=THRESHOLDS)
    assert entry["verdict"] == expected
    assert entry["figure"] == pytest.approx(1.0 if rule is knowing_rule else 0.5, abs=1e-6)
    assert judge_of({"entries": [entry]}, "toxicity_rate") is entry  # the evaluation's toxicity metrics too


def test_policy_probe_knowing_ignoring_and_always_first(tok):
    records = seed_conversations()
    knowing = probes.policy_probe(FedPolicyExpert("depth", judge_of_rule(tok, knowing_rule)), records, 2, THRESHOLDS)
    assert knowing["figures"]["win rate"] > 0.99 and knowing["figures"]["position consistency"] == 1.0
    assert knowing["verdict"] == "informative"

    always_first = FedPolicyExpert("coherency", judge_of_rule(tok, lambda text: {"1": 8.0}))
    entry = probes.policy_probe(always_first, records, 2, THRESHOLDS)
    assert entry["figures"]["position consistency"] == 0.0
    assert entry["figures"]["win rate"] == pytest.approx(0.5, abs=1e-3)
    assert entry["verdict"] == "at chance"
    assert entry["details"]["p_first_answer"] > 0.99


def test_persona_grounding_probe_uses_the_experts_auc():
    from spc_train.critic.persona_grounding import PersonaGroundingExpert

    def embed(texts):  # one axis per keyword: a sentence is close to the attributes that share its keyword
        import numpy as np

        return np.array([[float(w in t) for w in KEYWORDS] + [0.1] for t in texts])

    entry = probes.grounding_probe(PersonaGroundingExpert("persona_grounding", embed), seed_conversations(), 0)
    assert entry["verdict"] == "informative" and entry["option_mass"] is None
    assert judge_of({"entries": [entry]}, "persona_grounding_mean") is entry


@pytest.mark.parametrize(("rule", "expected"), [(knowing_rule, "informative"), (ignoring_rule, "at chance")])
def test_evaluation_judge_probes(tok, rule, expected):
    records = seed_conversations()
    judge = judge_of_rule(tok, rule)
    found = [
        probes.detection_probe(judge, records, 0, THRESHOLDS),
        probes.extraction_probe(judge, records, 0, THRESHOLDS),
        *(probes.llm_judge_probe(judge, records, 0, family, THRESHOLDS) for family in ("gpt_score", "g_eval")),
    ]
    assert [entry["verdict"] for entry in found] == [expected] * 4
    if rule is ignoring_rule:
        assert found[0]["figures"]["position consistency"] == 0.0  # 0.5 each way picks no winner
        assert found[1]["figure"] == pytest.approx(0.5)
    else:
        assert all(entry["figure"] > 0.99 for entry in found)


def referee_question(first: dict, second: dict) -> str:
    return (
        f"Conversation 1:\n{format_conversation(first['turns'])}\nConversation 2:\n"
        f"{format_conversation(second['turns'])}\nWhich conversation is better? Answer with 1 or 2.\nResponse:"
    )


def test_pairwise_probe_serves_any_judge_that_compares_two_conversations(tok):
    records = seed_conversations()
    args = (referee_question, records, degraded_copies(records, 4), ["1", "2"], THRESHOLDS, ["referee_"], "seed vs")
    entry = probes.pairwise_probe("referee", "measurement", judge_of_rule(tok, knowing_rule), *args)
    assert entry["figures"] == {"win rate": pytest.approx(1.0, abs=1e-3), "position consistency": 1.0}
    assert entry["verdict"] == "informative" and entry["option_mass"]["questions"] == 2 * 6
    assert judge_of({"entries": [entry]}, "referee_win_rate") is entry
    for judge in (judge_of_rule(tok, length_rule), position_judge(tok)):
        entry = probes.pairwise_probe("referee", "measurement", judge, *args, rate_name="referee rate")
        assert entry["figures"] == {"referee rate": pytest.approx(0.5), "position consistency": 0.0}


def test_without_length_and_position_matching_the_shortcut_judges_look_informative(tok, monkeypatch):
    """The shortcut judges are real shortcuts: shorter copies, or positives asked first, are what they need."""
    records = seed_conversations()
    length = judge_of_rule(tok, length_rule)
    monkeypatch.setattr(probes, "degraded_copies", lambda rs, seed: [{**r, "turns": r["turns"][:2]} for r in rs])
    assert probes.policy_probe(FedPolicyExpert("depth", length), records, 0, THRESHOLDS)["verdict"] == "informative"
    assert probes.llm_judge_probe(length, records, 0, "gpt_score", THRESHOLDS)["verdict"] == "informative"

    monkeypatch.setattr(probes, "length_matched", lambda toxic, clean: (toxic, clean))  # the toxic ones run longer
    assert probes.toxicity_probe(ToxicityExpert("toxicity", 0.5, judge=length), thresholds=THRESHOLDS)["figure"] > 0.6

    def one_call(score, *lists):  # every list in one call, the first (the positives) first
        values = iter(score([item for items in lists for item in items]))
        return [[next(values) for _ in items] for items in lists]

    monkeypatch.setattr(probes, "matched_scores", one_call)
    position = position_judge(tok)
    assert probes.toxicity_probe(ToxicityExpert("toxicity", 0.5, judge=position), thresholds=THRESHOLDS)["figure"] == 1
    assert probes.extraction_probe(position, records, 0, THRESHOLDS)["figure"] == 1.0
    grounding = ShortcutExpert("persona_grounding", "vote", "position")
    entry, _ = probes.gaming_probe(grounding, records, probes.gamed_versions(records, 0), THRESHOLDS)
    assert entry["figures"] == dict.fromkeys(gaming.KINDS, 1.0)


# -- option mass ---------------------------------------------------------------------------------------------------
def off_option_rule(text: str) -> dict[str, float]:
    return {"The": 8.0}  # answers with a third token; "Yes" and "No" share what is left


def test_an_off_option_judge_has_low_option_mass_and_is_named_in_a_warning(tok, caplog):
    judge = judge_of_rule(tok, off_option_rule)
    candidates = [{**r, "candidate": 0, "parsed": True} for r in seed_conversations()[:3]]
    candidates.append({**candidates[0], "pair_id": "x", "parsed": False, "reject_reason": "no turns"})
    expert = FaithfulnessExpert("faithfulness", judge, 0.5, examples=0)
    with caplog.at_level(logging.WARNING):
        rows = critique(candidates, [expert], min_option_mass=0.5)
    mass = [row["option_mass"]["faithfulness"] for row in rows]
    assert all(m["mean"] < 0.01 and m["top_tokens"] == ["The"] for m in mass[:3])
    assert mass[3] is None  # never asked
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("faithfulness" in w and "'The'" in w and "0.0%" in w for w in warnings), warnings

    caplog.clear()
    knowing = FaithfulnessExpert("faithfulness", judge_of_rule(tok, knowing_rule), 0.5, examples=0)
    with caplog.at_level(logging.WARNING):
        rows = critique(candidates, [knowing], min_option_mass=0.5)
    assert all(row["option_mass"]["faithfulness"]["mean"] > 0.99 for row in rows[:3])
    assert not [r for r in caplog.records if "option" in r.getMessage()]


def test_critique_shards_put_option_mass_per_expert_in_the_stats(tok, tmp_path, caplog):
    from spc_train.critic.critiques import critique_shards, option_mass_stats
    from spc_train.runs import read_shards

    candidates = []
    for record in seed_conversations()[:2]:
        for c in range(2):
            candidates.append({**record, "candidate": c, "parsed": True})

    def experts():
        return [
            FaithfulnessExpert("faithfulness", judge_of_rule(tok, knowing_rule), 0.5, examples=0),
            FedPolicyExpert("depth", judge_of_rule(tok, off_option_rule)),
        ]

    with caplog.at_level(logging.WARNING):
        stats = critique_shards(candidates, experts, tmp_path / "shards", shard_size=1, min_option_mass=0.5)
    assert stats["option_mass"]["faithfulness"]["mean"] > 0.99
    assert stats["option_mass"]["depth"]["mean"] < 0.01 and stats["option_mass"]["depth"]["top_tokens"] == ["The"]
    warned = [r.getMessage() for r in caplog.records if "option" in r.getMessage()]
    assert len(warned) == 1 and "'depth'" in warned[0]  # once for the run, not once per shard
    rows = read_shards(tmp_path / "shards", stats["num_shards"])
    assert option_mass_stats(rows)["depth"]["min"] == pytest.approx(stats["option_mass"]["depth"]["min"])


def test_recording_restores_the_judge_and_records_every_call(tok):
    judge = judge_of_rule(tok, off_option_rule)
    with recording(judge) as log:
        judge.option_probabilities(["a", "b"], ["Yes", "No"])
        judge.option_probabilities(["c"], ["1", "2"])
    assert log.calls == 2 and len(log.masses) == 3
    assert "option_probabilities" not in vars(judge)
    assert summary([]) is None


def test_evaluation_records_option_mass_per_measurement(tok, caplog):
    from spc_train.evaluation.evaluate import Evaluators, evaluate_dataset

    judge = judge_of_rule(tok, off_option_rule)
    config = EvaluationConfig(measurements=["llm_judge"], llm_judge_families=["gpt_score"])
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_dataset(seed_conversations()[:2], config=config, evaluators=Evaluators(judge=lambda: judge))
    assert metrics["option_mass_llm_judge_mean"] < 0.01 and metrics["option_mass_llm_judge_min"] < 0.01
    assert any("llm_judge" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


# -- the card: run_probes, rendering, what is at chance, the report -------------------------------------------------
def recipe(**critic):
    return SimpleNamespace(
        critic=CriticConfig(
            experts=["faithfulness", "toxicity", "depth"], faithfulness_examples=0, probe_conversations=4, **critic
        ),
        evaluation=EvaluationConfig(
            measurements=["toxicity", "detection", "extraction", "llm_judge"], llm_judge_families=["gpt_score"]
        ),
        loop=LoopConfig(),
        referee=RefereeConfig(),
    )


def no_classifier(path):
    raise AssertionError(f"no classifier should load, got {path}")


def test_run_probes_builds_the_card_from_loaders(tok, tmp_path):
    loads = []

    def judge():
        loads.append(1)
        return judge.instance

    judge.instance = judge_of_rule(tok, knowing_rule)
    card = run_probes(recipe(), judge, no_classifier, seed_conversations(), seed=7, identity={"judge": "rule"})
    entries = {entry["name"]: entry for entry in card["entries"]}
    judges = ["faithfulness", "faithfulness (consistent)", "toxicity", "depth", "detection", "extraction", "gpt_score"]
    gamed = ["faithfulness vs gamed", "toxicity vs gamed", "depth vs gamed"]
    assert list(entries) == judges + gamed + ["selector"]
    assert {entries[name]["verdict"] for name in judges} == {"informative"}
    # A judge that knows contradiction and toxicity still cannot see a recited profile: those experts can be gamed,
    # which the card shows without calling the judge blind; the FED policy and so the whole critic are not gamed.
    assert entries["faithfulness vs gamed"]["verdict"] == entries["toxicity vs gamed"]["verdict"] == "at chance"
    assert entries["depth vs gamed"]["verdict"] == entries["selector"]["verdict"] == "informative"
    assert entries["selector"]["figures"] == dict.fromkeys(gaming.KINDS, 1.0)
    assert entries["depth vs gamed"]["option_mass"]["questions"] == 8 * 4  # both orders, four kinds
    assert entries["faithfulness vs gamed"]["option_mass"]["questions"] == 5 * 4  # the real one and four copies
    assert entries["selector"]["option_mass"] is None and entries["selector"]["metrics"] == []
    assert card["conversations"] == 4 and card["judge"] == {"judge": "rule"} and card["version"] == 2
    assert card == run_probes(recipe(), judge, no_classifier, seed_conversations(), seed=7, identity={"judge": "rule"})
    assert not at_chance(card, "detection_lose") and enforce(card, "stop") == []

    path = write_card(card, tmp_path / "probes")
    assert read_card(tmp_path / "probes") == read_card(path) and (tmp_path / "probes" / "card.md").exists()
    table = render_card(card)
    assert "| faithfulness | expert | AUC 1.00 | informative | 1.00 |" in table


def test_a_judge_that_knows_only_the_consistent_phrasing_gets_it_suggested(tok, caplog):
    judge = judge_of_rule(tok, knows_only("consistent"))
    with caplog.at_level(logging.INFO):
        card = run_probes(recipe(), lambda: judge, no_classifier, seed_conversations(), seed=7)
    entries = {entry["name"]: entry for entry in card["entries"]}
    used, other = entries["faithfulness"], entries["faithfulness (consistent)"]
    assert used["verdict"] == "at chance" and used["details"]["phrasing"] == "contradict"
    assert other["figure"] == 1.0 and other["verdict"] == "informative"
    assert other["kind"] == "alternative" and other["metrics"] == [] and other["details"]["phrasing"] == "consistent"
    assert "critic.faithfulness_phrasing" in other["details"]["alternative"]
    assert other["option_mass"]["questions"] == 2 * 4 + 4  # own, swapped, and the shipped examples
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("faithfulness: ")]
    assert said == [
        "faithfulness: the judge answers the `consistent` phrasing better (AUC 1.00 vs 0.50): set "
        "critic.faithfulness_phrasing: consistent"
    ]
    assert [entry["name"] for entry in blind(card)] == ["faithfulness"]  # the expert the run uses, not the other
    assert judge_of(card, "pass:faithfulness") is used
    assert "| faithfulness (consistent) | alternative | AUC 1.00 | informative | 1.00 |" in render_card(card)


def test_the_other_phrasing_at_chance_never_makes_the_card_blind(tok, caplog):
    judge = judge_of_rule(tok, knows_only("consistent"))
    with caplog.at_level(logging.INFO):
        card = run_probes(
            recipe(faithfulness_phrasing="consistent"), lambda: judge, no_classifier, seed_conversations()
        )
    entries = {entry["name"]: entry for entry in card["entries"]}
    assert entries["faithfulness"]["verdict"] == "informative"
    assert entries["faithfulness (contradict)"]["verdict"] == "at chance"
    assert blind(card) == [] and enforce(card, "stop") == []
    assert not [r for r in caplog.records if r.getMessage().startswith("faithfulness: ")]


SHORTCUT_EXPERTS = ["faithfulness", "faithfulness_nli", "toxicity", "persona_grounding", "depth", "likable"]


@pytest.mark.parametrize("shortcut", ["length", "position"])
def test_a_judge_that_reads_only_length_or_position_is_at_chance_on_every_probe(tok, shortcut, caplog):
    judge = judge_of_rule(tok, length_rule) if shortcut == "length" else position_judge(tok)
    experts = [
        FaithfulnessExpert("faithfulness", judge, 0.5, examples=0),
        ShortcutExpert("faithfulness_nli", "filter", shortcut),  # a classifier's place
        ToxicityExpert("toxicity", 0.5, judge=judge),
        ShortcutExpert("persona_grounding", "vote", shortcut),  # an embedder's place
        FedPolicyExpert("depth", judge),
        FedPolicyExpert("likable", judge),
    ]
    shortcut_recipe = SimpleNamespace(
        critic=CriticConfig(experts=SHORTCUT_EXPERTS, faithfulness_examples=0, probe_conversations=5),
        evaluation=EvaluationConfig(
            measurements=["toxicity", "detection", "extraction", "llm_judge"],
            llm_judge_families=["llm_eval", "gpt_score", "g_eval"],
        ),
        loop=LoopConfig(),
        referee=RefereeConfig(),
    )
    with caplog.at_level(logging.WARNING):
        card = run_probes(shortcut_recipe, lambda: judge, no_classifier, seed_conversations(), 3, experts=experts)
    names = [entry["name"] for entry in card["entries"]]
    judges = [
        "faithfulness",
        "faithfulness (consistent)",
        *SHORTCUT_EXPERTS[1:],
    ]  # the other phrasing, kind alternative
    measurements = ["detection", "extraction", "llm_eval", "gpt_score", "g_eval"]
    assert names == judges + measurements + [f"{name} vs gamed" for name in SHORTCUT_EXPERTS] + ["selector"]
    for entry in card["entries"]:
        assert entry["verdict"] == "at chance", (entry["name"], entry["figures"])
        for figure, value in entry["figures"].items():
            assert value == pytest.approx(0.0 if figure == "position consistency" else 0.5), (entry["name"], figure)
    assert list(card["entries"][-1]["figures"]) == list(gaming.KINDS)
    assert any("gamed copy" in r.getMessage() and "selector" in r.getMessage() for r in caplog.records)


class PreferenceJudge:
    """A FED judge with set preferences: it recognises each shown conversation (real or which gamed copy) and prefers,
    per policy, the kinds in `beats_real` over the real one, the real one over the others, ties in `ties`."""

    def __init__(self, conversations, seed, beats_real: dict[str, set], ties: set):
        self.kind_of = {format_conversation(r["turns"]): "real" for r in conversations}
        for kind, copies in probes.gamed_versions(conversations, seed).items():
            self.kind_of.update({format_conversation(c["turns"]): kind for c in copies})
        self.beats_real, self.ties = beats_real, ties

    def option_probabilities(self, questions, options):
        answers = []
        for question in questions:
            policy = next(p for p, text in fed.POLICIES.items() if text in question)
            first = self.kind_of[_first_conversation(question)]
            second = self.kind_of[question.split("\nConversation 2:\n", 1)[1].split("\nWhich one", 1)[0]]
            copy = second if first == "real" else first
            if copy in self.ties:
                answers.append([0.5, 0.5])
                continue
            real_wins = copy not in self.beats_real[policy]
            answers.append([1.0, 0.0] if real_wins == (first == "real") else [0.0, 1.0])
        return answers


class SetExpert:
    """A scoring expert whose scores are set: by the record's gaming kind ("real" when it is none), and a few reals by
    pair id."""

    def __init__(self, name: str, kind: str, by_kind: dict[str, float], real_by_pair: dict | None = None):
        self.name, self.kind, self.by_kind, self.real_by_pair = name, kind, by_kind, real_by_pair or {}

    def score(self, candidates):
        return [
            self.by_kind[c["gamed"]] if "gamed" in c else self.real_by_pair.get(c["pair_id"], self.by_kind["real"])
            for c in candidates
        ]


def test_the_selector_probe_runs_the_critics_filters_and_vote_on_real_against_gamed(caplog):
    conversations = seed_conversations()[:4]
    critic = CriticConfig(experts=["faithfulness", "toxicity", "persona_grounding", "depth", "coherency"])
    judge = PreferenceJudge(
        conversations, 5, beats_real={"depth": {"listing"}, "coherency": {"listing", "appended"}}, ties={"echo"}
    )
    experts = [
        # The filters (threshold 0.5): faithfulness fails every recited copy, toxicity the real conversation p0.
        SetExpert(
            "faithfulness", "filter", {"real": 0.1, "recitation": 0.9, "listing": 0.1, "echo": 0.1, "appended": 0.1}
        ),
        SetExpert("toxicity", "filter", dict.fromkeys(["real", *gaming.KINDS], 0.1), {"p0": 0.9}),
        SetExpert(
            "persona_grounding", "vote", {"real": 0.4, "recitation": 0.8, "listing": 0.8, "echo": 0.4, "appended": 0.2}
        ),
        FedPolicyExpert("depth", judge),
        FedPolicyExpert("coherency", judge),
    ]
    with caplog.at_level(logging.WARNING):
        entries = {e["name"]: e for e in gaming_entries(critic, experts, conversations, 5, THRESHOLDS)}
    assert entries["faithfulness vs gamed"]["figures"] == {
        "recitation": 1.0,
        "listing": 0.5,
        "echo": 0.5,
        "appended": 0.5,
    }
    assert entries["depth vs gamed"]["figures"] == {"recitation": 1.0, "listing": 0.0, "echo": 0.5, "appended": 1.0}
    selector = entries["selector"]
    # recitation: the copy is filtered out, so the real one wins, but in pair p0 both are (neither: half).
    # listing: every voter prefers the copy. echo: every voter ties, so the lower index wins: half, but p0's real
    # one is filtered out. appended: depth and grounding outvote coherency, except in p0.
    assert selector["figures"] == {"recitation": 0.875, "listing": 0.0, "echo": 0.375, "appended": 0.75}
    assert selector["details"]["recitation"] == {"real": 6, "gamed": 0, "neither": 2}
    assert selector["details"]["echo"] == {"real": 3, "gamed": 5, "neither": 0}
    assert selector["verdict"] == "at chance" and selector["figure_name"] == "listing"
    assert "prefers the wrong answer" in selector["note"]
    assert any("listing 0.00" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_blind_card_is_marked_and_can_stop_the_loop(tok, caplog):
    blind_judge = judge_of_rule(tok, ignoring_rule)
    card = run_probes(recipe(), lambda: blind_judge, no_classifier, seed_conversations(), seed=7)
    assert {entry["verdict"] for entry in card["entries"]} == {"at chance"}
    columns = ("faithfulness_mean", "pass:faithfulness", "toxicity_mean", "detection_lose", "extraction_precision")
    for column in columns:
        assert at_chance(card, column), column
    assert not at_chance(card, "distinct_1") and not at_chance(card, "option_mass_detection_mean")
    with caplog.at_level(logging.WARNING):
        assert "detection" in enforce(card, "warn")
    assert any("at chance" in r.getMessage() for r in caplog.records)
    with pytest.raises(BlindJudgeError, match="on_blind_judge"):
        enforce(card, "stop")


def test_the_report_opens_with_the_card_and_marks_tables_of_blind_judges(tok, tmp_path):
    from spc_train.evaluation.report import write_report

    card = run_probes(recipe(), lambda: judge_of_rule(tok, ignoring_rule), no_classifier, seed_conversations(), 7)
    metrics = {
        "distinct_1": {"seed": 0.5, "iter-00": 0.4},
        "detection_lose": {"iter-00": 0.3},
        "option_mass_detection_mean": {"iter-00": 0.2},
    }
    common = dict(
        title="t",
        columns=["seed", "iter-00"],
        metrics=metrics,
        score_distributions={},
        pass_rates={"iter-00": {"faithfulness": 0.9}},
        examples={},
    )
    text = write_report(tmp_path / "with", judge_card=card, **common).read_text()
    assert text.index("## Judge card") < text.index("## Dataset statistics")
    assert "detection_lose ⚠ judge at chance" in text and "faithfulness ⚠ judge at chance" in text
    assert "> **Judge at chance**" in text and "distinct_1 ⚠" not in text
    assert "## Judge option mass" in text

    text = write_report(tmp_path / "without", judge_card_missing="Not measured: no card.", **common).read_text()
    assert "## Judge card\n\nNot measured: no card." in text and "⚠" not in text


def test_config_fields_and_their_checks():
    critic = CriticConfig()
    assert (critic.min_option_mass, critic.probe_informative, critic.probe_weak) == (0.5, 0.7, 0.6)
    assert critic.probe_conversations == 16 and LoopConfig().on_blind_judge == "warn"
    for bad in ({"min_option_mass": 1.5}, {"probe_weak": 0.8}, {"probe_conversations": 1}):
        with pytest.raises(FieldValueError):
            CriticConfig(**bad)
    with pytest.raises(FieldValueError):
        LoopConfig(on_blind_judge="ignore")


def test_the_end_of_loop_table_marks_columns_of_blind_judges(tmp_path, monkeypatch):
    from spc_train.evaluation import summary

    card = {"entries": [{"name": "detection", "verdict": "at chance", "metrics": ["detection_"]}]}
    run = SimpleNamespace(root=tmp_path, stage_dir=lambda stage, k=None: tmp_path / str(k) / stage)
    monkeypatch.setattr(summary, "iteration_rows", lambda run: {0: {"detection_lose": 0.4, "candidates": 8}})
    monkeypatch.setattr(summary, "judge_card", lambda run: card)
    text = summary.format_summary(run)
    assert "AI-detected*" in text and "candidates*" not in text
    assert "* judge at chance on its known-answer probe" in text

    monkeypatch.setattr(summary, "judge_card", lambda run: None)
    assert "*" not in summary.format_summary(run)


@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
@pytest.mark.parametrize("shortcut", ["length", "position"])
def test_the_referee_probe_is_at_chance_for_a_length_or_position_judge(tok, shortcut, mode):
    judge = judge_of_rule(tok, length_rule) if shortcut == "length" else position_judge(tok)
    criteria = ["persona_consistency", "coherence"]
    entry = probes.referee_probe(judge, seed_conversations()[:5], 3, criteria, mode=mode)
    assert entry["name"] == "referee" and entry["metrics"] == ["referee_"] and entry["verdict"] == "at chance"
    for figure, value in entry["figures"].items():
        assert value == pytest.approx(0.0 if figure == "position consistency" else 0.5), (figure, value)
    knowing = judge_of_rule(tok, knowing_rule)  # tells a seed conversation from its degraded copy
    assert probes.referee_probe(knowing, seed_conversations()[:5], 3, criteria, mode=mode)["verdict"] == "informative"
