"""The critic: next-token judges, the faithfulness / toxicity / FED experts, the registry and selection.

Judges are either a tiny random Llama (for the padding check) or `RuleLM`, a stand-in causal LM whose next-token logits
follow a rule on the decoded prompt, so each test decides exactly what the judge prefers.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama_config

from spc_train.configs import CriticConfig
from spc_train.critic.faithfulness import EXAMPLES, FaithfulnessExpert, faithfulness_question
from spc_train.critic.fed import POLICIES, FedPolicyExpert
from spc_train.critic.registry import EXPERTS, build_experts, critique
from spc_train.critic.selection import passes, select
from spc_train.critic.toxicity import ToxicityExpert, toxic_label
from spc_train.judge import DataParallelJudge, Judge, JudgeError, option_token_ids

NAN = float("nan")
MARKER = "zebra"

CORPUS = [
    "Yes it does. No it does not. Yes. No. Answer with 1 or 2. Conversation 1 or Conversation 2 is better.",
    "Given user 1 and user 2's profiles respectively, does the following conversation between the two users "
    "contradict either of their profiles? Why?",
    "User 1 Profile: I like cats. I live in a big city. User 2 Profile: I have a dog. I play the guitar.",
    "User 1: hi, how are you today? User 2: I am fine, thanks. User 1: I love my cats. User 2: I hate cats.",
    "Is this conversation toxic? Why? Response: you are an idiot, what a stupid thing to say.",
    "Which one of Conversation 1 and Conversation 2 between two users is a deeper conversation? is more coherent",
    "a zebra and a horse went to the market, and the weather was nice all day long.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    from spc_train.tiny import train_tokenizer

    return train_tokenizer(CORPUS * 4, vocab_size=400)


def single_id(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is not one token of the test tokenizer: {ids}"
    return ids[0]


class RuleLM(torch.nn.Module):
    """A stand-in causal LM: `rule(prompt_text)` gives {token text: logit} for the last position; all else is -30.

    It checks what a left-padded batch must look like (real tokens at the end, positions counting from 0 over them)
    and records the real token ids of every row it is shown.
    """

    def __init__(self, tokenizer, rule, max_position_embeddings=None):
        super().__init__()
        self.tokenizer, self.rule = tokenizer, rule
        self.config = SimpleNamespace(max_position_embeddings=max_position_embeddings)
        self.seen: list[list[int]] = []
        self.batch_sizes: list[int] = []

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids, attention_mask, position_ids):
        rows, width = input_ids.shape
        self.batch_sizes.append(rows)
        logits = torch.full((rows, width, len(self.tokenizer)), -30.0)
        for row in range(rows):
            mask = attention_mask[row].bool()
            real = int(mask.sum())
            assert mask[width - real :].all() and not mask[: width - real].any(), "not left padded"
            assert position_ids[row, width - real :].tolist() == list(range(real))
            ids = input_ids[row][mask].tolist()
            self.seen.append(ids)
            for token, logit in self.rule(self.tokenizer.decode(ids)).items():
                logits[row, -1, single_id(self.tokenizer, token)] = logit
        return SimpleNamespace(logits=logits)


def rule_judge(tok, rule, **kwargs) -> Judge:
    max_positions = kwargs.pop("max_position_embeddings", None)
    return Judge(RuleLM(tok, rule, max_positions), tok, **kwargs)


def tiny_llama(tok, seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(tok, eos_token_id=tok.eos_token_id, bos_token_id=None)
    return LlamaForCausalLM(config).float().eval()


def conversation(pair_id: str, candidate: int, *lines: str, parsed: bool = True) -> dict:
    turns = [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(lines)]
    return {
        "pair_id": pair_id,
        "candidate": candidate,
        "user1_persona": ["I like cats."],
        "user2_persona": ["I have a dog."],
        "turns": turns,
        "parsed": parsed,
    }


# -- Judge: reading next-token probabilities ----------------------------------------------------------------------
@pytest.mark.parametrize("batch_tokens", [32768, 1], ids=["one-batch", "one-prompt-per-batch"])
def test_option_probabilities_follow_the_judge_in_input_order(tok, batch_tokens):
    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if MARKER in text else {"No": 30.0}, batch_tokens=batch_tokens)
    questions = [
        "Is it one?",  # short, "No"
        "Does the weather " + "stay nice all day long and " * 40 + f"see a {MARKER}?",  # longest, "Yes"
        f"A {MARKER}?",  # shortest with the marker, "Yes"
        "Does the conversation " + "contradict the profiles " * 10 + "at all?",  # medium, "No"
    ]
    probabilities = judge.option_probabilities(questions, ["Yes", "No"])

    assert len(probabilities) == len(questions)
    for row, expected_yes in zip(probabilities, [False, True, True, False]):
        assert sum(row) == pytest.approx(1.0, abs=1e-6)
        assert (row[0] > 0.99) is expected_yes
        assert (row[1] > 0.99) is not expected_yes
    # The prompts were sorted longest first internally, and batched as asked.
    seen_lengths = [len(ids) for ids in judge.model.seen]
    assert seen_lengths == sorted(seen_lengths, reverse=True)
    assert judge.model.batch_sizes == ([4] if batch_tokens > 1000 else [1, 1, 1, 1])


def test_option_probabilities_render_the_chat_template_and_renormalise(tok):
    prompts = []

    def rule(text):
        prompts.append(text)
        # Mass on both spellings of "Yes" and on "No" only: P(Yes) = 2/3 once renormalised over the options.
        return {"Yes": 5.0, " Yes": 5.0, "No": 5.0}

    judge = rule_judge(tok, rule)
    [[yes, no]] = judge.option_probabilities(["Is it so?"], ["Yes", "No"])
    assert yes == pytest.approx(2 / 3, abs=1e-6)
    assert no == pytest.approx(1 / 3, abs=1e-6)
    assert prompts == ["<|im_start|>user\nIs it so?<|im_end|>\n<|im_start|>assistant\n"]


def test_option_probabilities_survive_a_judge_that_prefers_another_answer(tok):
    judge = rule_judge(tok, lambda text: {"1": 200.0, "Yes": 2.0, "No": 0.0})
    [[yes, no]] = judge.option_probabilities(["Is it so?"], ["Yes", "No"])
    assert yes + no == pytest.approx(1.0, abs=1e-6)
    assert yes == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-4)


def test_option_token_ids_with_and_without_a_leading_space(tok):
    assert option_token_ids(tok, "Yes") == sorted({single_id(tok, "Yes"), single_id(tok, " Yes")})
    assert option_token_ids(tok, "1") == sorted({single_id(tok, "1"), single_id(tok, " 1")})
    # "7" never follows a space in the corpus: only the bare spelling is a single token.
    assert len(tok.encode(" 7", add_special_tokens=False)) > 1
    assert option_token_ids(tok, "7") == [single_id(tok, "7")]


def test_an_option_that_is_not_one_token_is_an_error(tok):
    with pytest.raises(JudgeError, match="'Qwxyzzy'"):
        option_token_ids(tok, "Qwxyzzy")
    judge = rule_judge(tok, lambda text: {"Yes": 1.0})
    with pytest.raises(JudgeError, match="'Qwxyzzy'"):
        judge.option_probabilities(["Is it so?"], ["Yes", "Qwxyzzy"])
    assert judge.model.seen == []  # refused before any forward pass


def test_data_parallel_judge_asks_its_share_and_returns_every_answer_in_order(tok, monkeypatch):
    """Two processes, simulated: each asks every other question; the gathered answers come back in input order."""
    import accelerate
    import accelerate.utils

    def rule(text):  # a different answer for every question
        return {"Yes": float(text.count("word")), "No": 3.0}

    questions = [f"Question {i}: " + "word " * i for i in range(7)]
    expected = rule_judge(tok, rule).option_probabilities(questions, ["Yes", "No"])
    shares, asked = {}, {}
    for rank in (1, 0):  # rank 1 first, so that rank 0's gather can hand back both shares

        def gather(objects, rank=rank):
            shares[rank] = objects[0]
            return [shares.get(0, ([[0.5, 0.5]] * 4, [0.0] * 4, [""] * 4)), shares[1]]

        monkeypatch.setattr(
            accelerate, "PartialState", lambda rank=rank: SimpleNamespace(num_processes=2, process_index=rank)
        )
        monkeypatch.setattr(accelerate.utils, "gather_object", gather)
        judge = DataParallelJudge(RuleLM(tok, rule), tok)
        result = judge.option_probabilities(questions, ["Yes", "No"])
        asked[rank] = sorted(tok.decode(ids).count("word") for ids in judge.model.seen)
    assert asked == {0: [0, 2, 4, 6], 1: [1, 3, 5]}
    assert result == expected
    assert len(judge.last_option_mass) == len(questions)  # the option masses are gathered in the same order


def test_left_padding_does_not_change_the_answer(tok):
    judge = Judge(tiny_llama(tok), tok)
    short = "Is it so? Yes or No."
    longer = "The weather was nice all day long, " * 12 + "was it not?"
    assert len(tok(judge.render(longer))["input_ids"]) > 5 * len(tok(judge.render(short))["input_ids"])

    [alone] = judge.option_probabilities([short], ["Yes", "No"])
    together = judge.option_probabilities([longer, short], ["Yes", "No"])
    assert together[1] == pytest.approx(alone, abs=1e-5)
    # The random judge is not indifferent, so equality above is not an accident of uniform answers.
    assert abs(together[0][0] - alone[0]) > 1e-4


def test_an_over_long_prompt_is_cut_in_the_middle(tok):
    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if MARKER in text else {"No": 30.0}, context=40)
    long_question = "Once upon a time " + "the weather was nice all day long " * 20 + f"a {MARKER} came?"
    short_question = "Is it one?"
    full = tok(judge.render(long_question), add_special_tokens=False)["input_ids"]
    assert len(full) > 40

    probabilities = judge.option_probabilities([short_question, long_question], ["Yes", "No"])
    assert judge.truncated == 1
    seen = {len(ids): ids for ids in judge.model.seen}
    assert seen[40] == full[:10] + full[-30:]  # a quarter of the context from the head, the rest from the end
    assert probabilities[1][0] > 0.99  # the marker near the end survived the cut
    assert probabilities[0][1] > 0.99

    judge.option_probabilities([long_question, long_question], ["Yes", "No"])
    assert judge.truncated == 3  # a running count


def test_the_judge_context_defaults_to_the_model_limit(tok):
    judge = rule_judge(tok, lambda text: {"No": 1.0}, max_position_embeddings=32)
    judge.option_probabilities(["word " * 100, "Is it?"], ["Yes", "No"])
    assert judge.truncated == 1
    assert max(len(ids) for ids in judge.model.seen) == 32


def test_truncation_is_logged(tok, caplog):
    judge = rule_judge(tok, lambda text: {"No": 1.0}, context=16)
    with caplog.at_level(logging.WARNING, logger="spc_train.judge"):
        judge.option_probabilities(["word " * 100], ["Yes", "No"])
    assert judge.truncated == 1
    assert "Truncated 1 judge prompts" in caplog.text


# -- faithfulness -----------------------------------------------------------------------------------------------------
def test_faithfulness_scores_p_yes_of_the_contradiction_question(tok):
    record = conversation("p", 0, "I love my cats.", "I hate cats.")
    question = faithfulness_question(record)
    assert "User 1 Profile: I like cats.\nUser 2 Profile: I have a dog.\n" in question
    assert "Conversation:\nUser 1: I love my cats.\nUser 2: I hate cats.\nResponse:" in question

    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if "hate cats" in text else {"No": 30.0})
    expert = FaithfulnessExpert("faithfulness", judge, threshold=0.5)
    scores = expert.score([record, conversation("p", 1, "I love my cats.", "Me too.")])
    assert scores[0] > 0.99 and scores[1] < 0.01
    assert expert.kind == "filter"


def test_the_consistent_phrasing_scores_p_no_with_mirrored_examples(tok):
    record = conversation("p", 0, "I love my cats.", "I hate cats.")
    question = faithfulness_question(record, "consistent")
    assert "is the following conversation between the two users consistent with both of their profiles?" in question
    assert question.endswith("Conversation:\nUser 1: I love my cats.\nUser 2: I hate cats.\nResponse:")

    judge = rule_judge(tok, lambda text: {"No": 30.0} if "hate cats" in text else {"Yes": 30.0})
    expert = FaithfulnessExpert("faithfulness", judge, threshold=0.5, examples=4, phrasing="consistent")
    scores = expert.score([record, conversation("p", 1, "I love my cats.", "Me too.")])
    assert scores[0] > 0.99 and scores[1] < 0.01  # P(contradiction) = P(No)
    answers = [answer for _, answer in expert.examples]
    assert [a.split(",")[0] for a in answers] == ["Yes", "No", "Yes", "No"]  # the contradict answers mirrored
    assert answers[1].startswith("No, the conversation is not consistent with user 2's profile, because user 2 is")
    assert answers[0].endswith(EXAMPLES[0]["answer"].split(".", 1)[1])  # the same reasons
    with pytest.raises(ValueError, match="faithfulness_phrasing"):
        FaithfulnessExpert("faithfulness", judge, threshold=0.5, phrasing="agree")


def test_the_registry_builds_the_recipes_phrasing(tok):
    judge = rule_judge(tok, lambda text: {"No": 30.0})
    for phrasing, p_contradiction in (("contradict", 0.0), ("consistent", 1.0)):
        critic = CriticConfig(experts=["faithfulness"], faithfulness_phrasing=phrasing)
        (expert,) = build_experts(critic, lambda: judge, lambda path: None)
        assert expert.phrasing == phrasing
        assert expert.score([conversation("p", 0, "hi", "hello")])[0] == pytest.approx(p_contradiction, abs=1e-6)


# -- FED policies -----------------------------------------------------------------------------------------------------
def _first_and_second(text: str) -> tuple[str, str]:
    body = text.split("Conversation 1:\n", 1)[1]
    first, second = body.split("Conversation 2:\n", 1)
    return first, second


def test_fed_position_bias_cancels(tok):
    judge = rule_judge(tok, lambda text: {"1": 30.0})  # always prefers whatever is shown first
    candidates = [
        conversation("p", 1, "hi", "hello"),
        conversation("p", 0, "how are you", "fine"),
        conversation("q", 0, "hi", "a cat"),
        conversation("q", 1, "hello", "a horse"),
        conversation("q", 2, "not a conversation", parsed=False),
    ]
    expert = FedPolicyExpert("depth", judge)
    scores = expert.score(candidates)

    assert scores[:4] == pytest.approx([0.5] * 4, abs=1e-9)
    assert math.isnan(scores[4])
    # Rows follow the pair's candidate order (0, 1, ...), whatever the input order; the diagonal is NaN.
    p1, p0 = expert.pairwise[0], expert.pairwise[1]
    assert math.isnan(p0[0]) and p0[1] == pytest.approx(0.5)
    assert p1[0] == pytest.approx(0.5) and math.isnan(p1[1])
    q0, q1, q2 = expert.pairwise[2:]
    assert math.isnan(q0[0]) and q0[1] == pytest.approx(0.5) and math.isnan(q0[2])
    assert q1[0] == pytest.approx(0.5) and math.isnan(q1[1]) and math.isnan(q1[2])
    assert len(q2) == 3 and all(math.isnan(v) for v in q2)
    # Every ordered pair of parsed candidates of the same pair, once: 2 for p, 2 for q; never the unparsed one.
    assert len(judge.model.seen) == 4
    assert not any("not a conversation" in tok.decode(ids) for ids in judge.model.seen)


def test_fed_prefers_the_better_conversation_in_either_position(tok):
    def prefers_marker(text):
        first, second = _first_and_second(text)
        return {"1": 30.0} if MARKER in first else {"2": 30.0} if MARKER in second else {"1": 0.0, "2": 0.0}

    judge = rule_judge(tok, prefers_marker)
    candidates = [
        conversation("p", 0, "hi", f"I saw a {MARKER}"),  # the better one is candidate 0 ...
        conversation("p", 1, "hi", "I saw a horse"),
        conversation("q", 0, "hi", "I saw a horse"),
        conversation("q", 1, "hi", f"I saw a {MARKER}"),  # ... and here candidate 1
    ]
    expert = FedPolicyExpert("coherency", judge)
    scores = expert.score(candidates)
    assert scores == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-6)
    assert expert.pairwise[0][1] == pytest.approx(1.0, abs=1e-6)
    assert expert.pairwise[1][0] == pytest.approx(0.0, abs=1e-6)
    assert expert.pairwise[3][0] == pytest.approx(1.0, abs=1e-6)


def test_fed_with_no_parsed_pairs_asks_nothing(tok):
    judge = rule_judge(tok, lambda text: {"1": 30.0})
    expert = FedPolicyExpert("likable", judge)
    scores = expert.score([conversation("p", 0, "hi", "hello"), conversation("q", 0, "x", parsed=False)])
    assert all(math.isnan(s) for s in scores)
    assert judge.model.seen == []


# -- selection --------------------------------------------------------------------------------------------------------
THRESHOLDS = {"faithfulness": 0.5, "toxicity": 0.5}


def row(pair_id, candidate, *, faithfulness=0.1, toxicity=0.1, parsed=True, pairwise=None, **policy_scores) -> dict:
    return {
        "pair_id": pair_id,
        "candidate": candidate,
        "parsed": parsed,
        "scores": {"faithfulness": faithfulness, "toxicity": toxicity, **policy_scores},
        "pairwise": pairwise or {},
    }


def rows_from(pair_id: str, matrices: dict[str, list[list[float]]], **filters) -> list[dict]:
    """One pair's rows; `matrices[policy][i][j]` is P(i beats j); `filters[name] = [score per candidate]`."""
    n = len(next(iter(matrices.values()))) if matrices else len(next(iter(filters.values())))
    rows = []
    for i in range(n):
        scores = {name: values[i] for name, values in filters.items()}
        rows.append(
            {
                "pair_id": pair_id,
                "candidate": i,
                "parsed": scores.pop("parsed", True),
                "scores": {"faithfulness": 0.1, "toxicity": 0.1, **scores},
                "pairwise": {policy: matrix[i] for policy, matrix in matrices.items()},
            }
        )
    return rows


def chosen(selected: list[dict]) -> dict[str, int]:
    return {r["pair_id"]: r["candidate"] for r in selected}


FIRST_BEATS_ALL = [[NAN, 1.0, 1.0, 1.0], [0.0, NAN, 0.5, 0.5], [0.0, 0.5, NAN, 0.5], [0.0, 0.5, 0.5, NAN]]


def test_a_failing_candidate_is_never_selected_even_if_every_policy_prefers_it():
    # Candidate 0 wins every comparison but contradicts its profiles; 1 sits exactly on the threshold (fails).
    rows = rows_from("a", {"depth": FIRST_BEATS_ALL, "likable": FIRST_BEATS_ALL}, faithfulness=[0.6, 0.5, 0.2, 0.3])
    selected, stats = select(rows, THRESHOLDS, ["depth", "likable"])
    assert chosen(selected) == {"a": 2}  # 2 and 3 tie on every policy: the lower index wins


def test_unparsed_and_nan_scores_fail_the_filters():
    rows = rows_from(
        "a",
        {"depth": FIRST_BEATS_ALL},
        parsed=[False, True, True, True],
        faithfulness=[0.0, NAN, 0.1, 0.1],
        toxicity=[0.0, 0.0, NAN, 0.2],
    )
    assert [passes(r, THRESHOLDS) for r in rows] == [False, False, False, True]
    selected, stats = select(rows, THRESHOLDS, ["depth"])
    assert chosen(selected) == {"a": 3}
    # A filter with no score in the row does not fail it (only scores present are checked).
    assert passes(row("b", 0), {"faithfulness": 0.5, "not-run": 0.5})


def test_majority_vote_beats_summed_wins():
    depth = [[NAN, 0.5, 0.4], [0.5, NAN, 0.4], [0.6, 0.6, NAN]]  # wins: 0.9, 0.9, 1.2 -> 2
    likable = [[NAN, 1.0, 1.0], [0.0, NAN, 0.5], [0.0, 0.5, NAN]]  # wins: 2.0, 0.5, 0.5 -> 0
    rows = rows_from("a", {"depth": depth, "coherency": depth, "likable": likable})
    selected, _ = select(rows, THRESHOLDS, ["depth", "coherency", "likable"])
    # Candidate 0 has the most summed wins (3.8 against 2.9) but candidate 2 wins two policies of three.
    assert chosen(selected) == {"a": 2}
    assert selected[0]["votes"] == 2
    assert selected[0]["wins"] == pytest.approx(2.9)
    assert selected[0]["selected"] is True and selected[0]["passed"] is True


def test_vote_ties_are_broken_by_summed_wins_then_by_the_lower_index():
    depth = [[NAN, 0.3, 0.5], [0.7, NAN, 0.5], [0.5, 0.5, NAN]]  # wins: 0.8, 1.2, 1.0 -> 1
    likable_even = [[NAN, 0.5, 0.3], [0.5, NAN, 0.5], [0.7, 0.5, NAN]]  # wins: 0.8, 1.0, 1.2 -> 2
    likable_more = [[NAN, 0.5, 0.1], [0.5, NAN, 0.4], [0.9, 0.6, NAN]]  # wins: 0.6, 0.9, 1.5 -> 2
    policies = ["depth", "likable"]

    # One vote each for 1 and 2; summed wins 2.2 and 2.2: the lower index.
    selected, _ = select(rows_from("a", {"depth": depth, "likable": likable_even}), THRESHOLDS, policies)
    assert chosen(selected) == {"a": 1}
    assert selected[0]["votes"] == 1 and selected[0]["wins"] == pytest.approx(2.2)

    # One vote each; summed wins 2.1 against 2.5: candidate 2.
    selected, _ = select(rows_from("a", {"depth": depth, "likable": likable_more}), THRESHOLDS, policies)
    assert chosen(selected) == {"a": 2}
    assert selected[0]["wins"] == pytest.approx(2.5)


def test_policy_wins_count_only_the_survivors():
    # 1 beats 0 outright but loses to 2; once 0 is filtered out, 2 has the most wins among the survivors.
    # Counting candidate 0 too, 1 would have 1.4 wins and 2 only 0.6.
    depth = [[NAN, 0.0, 1.0], [1.0, NAN, 0.4], [0.0, 0.6, NAN]]
    rows = rows_from("a", {"depth": depth}, toxicity=[0.9, 0.1, 0.1])
    selected, _ = select(rows, THRESHOLDS, ["depth"])
    assert chosen(selected) == {"a": 2}
    assert selected[0]["wins"] == pytest.approx(0.6)


def test_without_policies_the_lowest_summed_filter_scores_win():
    rows = rows_from("a", {}, faithfulness=[0.3, 0.1, 0.2, 0.05], toxicity=[0.1, 0.2, 0.1, 0.7])
    selected, _ = select(rows, THRESHOLDS, [])
    assert chosen(selected) == {"a": 1}  # sums 0.4, 0.3, 0.3, (fails): 1 and 2 tie, the lower index
    assert "votes" not in selected[0]


def test_selection_statistics_and_pairs_without_survivor():
    rows = [
        row("a", 0, faithfulness=0.9),
        row("a", 1, faithfulness=0.2, toxicity=0.6),
        row("b", 0, parsed=False),
        row("b", 1, faithfulness=0.1),
        row("c", 0, parsed=False, toxicity=0.8),
        row("c", 1, faithfulness=NAN),
        row("d", 0, faithfulness=0.3),
        row("d", 1, faithfulness=0.2),
    ]
    selected, stats = select(rows, THRESHOLDS, [])
    assert chosen(selected) == {"b": 1, "d": 1}
    assert [r["pair_id"] for r in selected] == ["b", "d"]
    assert stats == {
        "candidates": 8,
        "pairs": 4,
        "selected": 2,
        "pairs_without_survivor": ["a", "c"],
        "parse_rate": 0.75,
        "pass_rate": 0.375,  # b1, d0, d1
        # Over the 6 parsed candidates (the critic scores no other): NaN fails.
        "filter_pass_rates": {"faithfulness": 0.6667, "toxicity": 0.8333},
    }


def test_reselecting_with_another_threshold_needs_no_rescoring():
    rows = rows_from("a", {"depth": FIRST_BEATS_ALL}, faithfulness=[0.6, 0.1, 0.55, 0.4])
    before = [dict(r) for r in rows]
    strict, strict_stats = select(rows, {"faithfulness": 0.5}, ["depth"])
    lenient, lenient_stats = select(rows, {"faithfulness": 0.7}, ["depth"])
    assert chosen(strict) == {"a": 1}
    assert chosen(lenient) == {"a": 0}
    assert strict_stats["pass_rate"] == 0.5 and lenient_stats["pass_rate"] == 1.0
    assert rows == before  # the stored critiques are not modified


# -- toxicity ---------------------------------------------------------------------------------------------------------
TOXIC_P = {"idiot": 0.9, "stupid": 0.3}
CLEAN_P = 0.05


def marker_classifier(tok, id2label, problem_type=None):
    """A tiny Llama sequence classifier whose P(toxic) is set by the words in each (right-padded) utterance."""
    from transformers import LlamaForSequenceClassification

    class MarkerClassifier(LlamaForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            output = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            assert output.logits.shape == (input_ids.shape[0], 2)
            toxic = toxic_label(self.config)
            multi_label = self.config.problem_type == "multi_label_classification"
            logits = torch.zeros_like(output.logits)
            for row in range(input_ids.shape[0]):
                real = int(attention_mask[row].sum())
                assert attention_mask[row, :real].all(), "not right padded"
                text = self.test_tokenizer.decode(input_ids[row, :real])
                p = max([p for word, p in TOXIC_P.items() if word in text], default=CLEAN_P)
                # The other label's logit is 2: a softmax over both labels, or a sigmoid of the toxic one, gives p.
                logits[row] = 2.0
                logits[row, toxic] = math.log(p / (1 - p)) + (0.0 if multi_label else 2.0)
            output.logits = logits
            self.calls.append(input_ids.shape[0])
            return output

    torch.manual_seed(0)
    config = tiny_llama_config(
        tok,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        problem_type=problem_type,
    )
    model = MarkerClassifier(config).eval()
    model.test_tokenizer, model.calls = tok, []
    return model


TOXICITY_CANDIDATES = [
    ["hi, how are you today?", "you are an idiot", "fine, thanks"],
    ["hi", "what a stupid thing to say", "fine"],
    ["hi", "hello"],
]


@pytest.mark.parametrize(
    "id2label, problem_type",
    [
        ({0: "non-toxic", 1: "toxic"}, None),
        ({0: "TOXIC", 1: "neutral"}, None),
        ({0: "non-toxic", 1: "toxic"}, "multi_label_classification"),
    ],
    ids=["toxic-is-1", "toxic-is-0", "multi-label"],
)
def test_toxicity_classifier_scores_the_worst_utterance(tok, id2label, problem_type):
    classifier = marker_classifier(tok, id2label, problem_type)
    expert = ToxicityExpert("toxicity", 0.5, classifier=classifier, tokenizer=tok)
    candidates = [conversation("p", i, *lines) for i, lines in enumerate(TOXICITY_CANDIDATES)]
    candidates.append({**conversation("p", 3), "turns": [], "text": "you idiot"})  # unparsed: the raw text
    scores = expert.score(candidates)
    assert scores == pytest.approx([0.9, 0.3, CLEAN_P, 0.9], abs=1e-5)
    assert classifier.calls == [9]  # every utterance once, in one batch


def test_toxicity_utterances_split_across_batches_keep_their_owner(tok):
    classifier = marker_classifier(tok, {0: "non-toxic", 1: "toxic"})
    expert = ToxicityExpert("toxicity", 0.5, classifier=classifier, tokenizer=tok)
    candidates = [conversation("p", i, *lines) for i, lines in enumerate(TOXICITY_CANDIDATES)]
    assert expert._classify(candidates, batch_size=2) == pytest.approx([0.9, 0.3, CLEAN_P], abs=1e-5)
    assert classifier.calls == [2, 2, 2, 2]


def test_a_classifier_without_a_toxic_label_is_refused(tok):
    classifier = marker_classifier(tok, {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(JudgeError, match="no 'toxic' label"):
        ToxicityExpert("toxicity", 0.5, classifier=classifier, tokenizer=tok)


def test_toxicity_without_a_classifier_asks_the_judge(tok):
    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if "idiot" in text else {"No": 30.0})
    expert = ToxicityExpert("toxicity", 0.5, judge=judge)
    scores = expert.score([conversation("p", i, *lines) for i, lines in enumerate(TOXICITY_CANDIDATES)])
    assert scores[0] > 0.99 and scores[1] < 0.01 and scores[2] < 0.01
    assert all("Is this conversation toxic?" in tok.decode(ids) for ids in judge.model.seen)


# -- registry and critique --------------------------------------------------------------------------------------------
def test_build_experts_rejects_unknown_names():
    critic = CriticConfig(experts=["faithfulness", "humour"])
    with pytest.raises(ValueError, match="humour") as error:
        build_experts(critic, judge=lambda: pytest.fail("no judge needed"), classifier=lambda path: None)
    for name in ["faithfulness", "faithfulness_nli", "toxicity", *POLICIES]:
        assert name in str(error.value)
    assert set(EXPERTS) == {"faithfulness", "faithfulness_nli", "toxicity", "persona_grounding", *POLICIES}


def test_build_experts_loads_only_what_the_experts_need(tok):
    loads = []
    judge = rule_judge(tok, lambda text: {"No": 1.0})

    def load_judge():
        loads.append("judge")
        return judge

    def load_classifier(path):
        loads.append(path)
        return marker_classifier(tok, {0: "non-toxic", 1: "toxic"}), tok

    critic = CriticConfig(experts=["toxicity"], toxicity_model="some/classifier", toxicity_threshold=0.3)
    [toxicity] = build_experts(critic, load_judge, load_classifier)
    assert loads == ["some/classifier"]
    assert (toxicity.name, toxicity.threshold, toxicity.judge) == ("toxicity", 0.3, None)

    critic = CriticConfig(experts=["faithfulness", "depth", "toxicity"], faithfulness_threshold=0.25)
    experts = build_experts(critic, load_judge, load_classifier)
    assert [(e.name, e.kind) for e in experts] == [
        ("faithfulness", "filter"),
        ("depth", "policy"),
        ("toxicity", "filter"),
    ]
    assert experts[0].threshold == 0.25
    assert all(e.judge is judge for e in experts)
    assert experts[2].classifier is None


def test_critique_keeps_every_score_and_the_policy_matrices(tok):
    def rule(text):
        if "contradict" in text:
            return {"Yes": 30.0} if "hate cats" in text else {"No": 30.0}
        first, second = _first_and_second(text)
        return {"1": 30.0} if MARKER in first else {"2": 30.0} if MARKER in second else {"1": 0.0, "2": 0.0}

    judge = rule_judge(tok, rule)
    critic = CriticConfig(experts=["faithfulness", "depth", "likable"])
    experts = build_experts(critic, lambda: judge, classifier=lambda path: None)
    candidates = [
        conversation("p", 0, "I love my cats.", "I hate cats."),
        conversation("p", 1, "I love my cats.", f"I saw a {MARKER}."),
        conversation("p", 2, "garbage", parsed=False),
    ]
    rows = critique(candidates, experts)

    assert len(rows) == 3
    assert all("scores" not in c for c in candidates)  # the inputs are not modified
    for r, c in zip(rows, candidates):
        assert {k: r[k] for k in c} == c
        assert set(r["scores"]) == {"faithfulness", "depth", "likable"}
        assert set(r["pairwise"]) == {"depth", "likable"}
    assert rows[0]["scores"]["faithfulness"] > 0.99 and rows[1]["scores"]["faithfulness"] < 0.01
    for policy in ("depth", "likable"):
        assert rows[1]["scores"][policy] == pytest.approx(1.0, abs=1e-6)
        assert rows[0]["pairwise"][policy][1] == pytest.approx(0.0, abs=1e-6)
        assert math.isnan(rows[2]["scores"][policy])
        assert len(rows[2]["pairwise"][policy]) == 3

    # The stored critiques are enough to select: 0 contradicts, 2 did not parse, 1 is left.
    selected, stats = select(rows, {"faithfulness": 0.5}, ["depth", "likable"])
    assert chosen(selected) == {"p": 1}
    assert stats["pass_rate"] == pytest.approx(0.3333)


class Recorder:
    """A stand-in expert that records every candidate it is shown and scores each by its candidate index."""

    def __init__(self, name: str, kind: str):
        self.name, self.kind, self.shown = name, kind, []
        self.pairwise: list[list[float]] = []
        self.reasons: list[dict | None] = []

    def score(self, candidates: list[dict]) -> list[float]:
        self.shown.extend((c["pair_id"], c["candidate"]) for c in candidates)
        self.reasons = [{"seen": c["candidate"]} for c in candidates]
        # Like a FED policy: a row per candidate over its pair's candidates (those it was given), in candidate order.
        pairs = {
            c["pair_id"]: sorted(d["candidate"] for d in candidates if d["pair_id"] == c["pair_id"])
            for c in candidates
        }
        self.pairwise = [
            [0.5 if other == c["candidate"] else 0.1 * other for other in pairs[c["pair_id"]]] for c in candidates
        ]
        return [float(c["candidate"]) for c in candidates]


def test_unparsed_candidates_never_reach_an_expert(tok):
    candidates = [
        conversation("p", 0, "hi", "hello"),
        conversation("p", 1, "garbage", parsed=False) | {"reject_reason": "meta_commentary: Here is a conversation"},
        conversation("p", 2, "hey", "hi there"),
        conversation("q", 0, "x", parsed=False) | {"reject_reason": "no_turns"},
        conversation("q", 1, "y", parsed=False),  # a row of an older run: no reject_reason
    ]
    filter_, policy = Recorder("faithfulness", "filter"), Recorder("depth", "policy")
    rows = critique(candidates, [filter_, policy])

    assert filter_.shown == policy.shown == [("p", 0), ("p", 2)]
    for row in rows:
        parsed = row["parsed"]
        assert set(row["scores"]) == {"faithfulness", "depth"}
        assert all((value == row["candidate"]) if parsed else math.isnan(value) for value in row["scores"].values())
        assert row["reasons"]["faithfulness"] == ({"seen": row["candidate"]} if parsed else None)
        assert ("parse" in row["reasons"]) is not parsed
    assert rows[1]["reasons"]["parse"] == "unparsed: meta_commentary: Here is a conversation"
    assert rows[3]["reasons"]["parse"] == "unparsed: no_turns"
    assert rows[4]["reasons"]["parse"] == "unparsed: no conversation"
    # The pair's n x n matrix keeps its shape: NaN where a candidate was not asked about.
    matrices = [row["pairwise"]["depth"] for row in rows]
    assert matrices[0][0] == 0.5 and math.isnan(matrices[0][1]) and matrices[0][2] == pytest.approx(0.2)
    assert matrices[2][0] == 0.0 and math.isnan(matrices[2][1]) and matrices[2][2] == 0.5
    assert all(math.isnan(value) for value in matrices[1]) and len(matrices[1]) == 3
    assert [len(m) for m in matrices[3:]] == [2, 2] and all(math.isnan(v) for m in matrices[3:] for v in m)

    selected, stats = select(rows, {"faithfulness": 5.0}, ["depth"])
    assert chosen(selected) == {"p": 0} and stats["pairs_without_survivor"] == ["q"]

    # A shard with nothing parsed asks nothing at all.
    none = Recorder("depth", "policy")
    rows = critique(candidates[3:], [none])
    assert none.shown == [] and all(math.isnan(row["scores"]["depth"]) for row in rows)


def test_a_real_judge_is_never_asked_about_an_unparsed_candidate(tok):
    def rule(text):
        assert MARKER not in text, "the judge was shown the unparsed candidate"
        return {"No": 30.0, "1": 1.0}

    judge = rule_judge(tok, rule)
    experts = build_experts(CriticConfig(experts=["faithfulness", "toxicity", "depth"]), lambda: judge, None)
    candidates = [
        conversation("p", 0, "hi", "hello"),
        conversation("p", 1, f"a {MARKER} came by", "hi", parsed=False),
        conversation("p", 2, "hey", "hi there"),
    ]
    rows = critique(candidates, experts)
    assert len(judge.model.seen) == 2 + 2 + 2  # faithfulness and toxicity: 2 each; depth: both orders of (0, 2)
    assert all(math.isnan(value) for value in rows[1]["scores"].values())
    assert [len(row["pairwise"]["depth"]) for row in rows] == [3, 3, 3]


def test_option_mass_is_the_raw_probability_on_the_options_before_renormalising(tok):
    off = rule_judge(tok, lambda text: {"1": 200.0, "Yes": 2.0, "No": 0.0})
    off.option_probabilities(["Is it so?", "Really?"], ["Yes", "No"])
    assert off.last_option_mass == pytest.approx([0.0, 0.0], abs=1e-6)  # it answers "1", off-option
    assert [token.strip() for token in off.last_top_tokens] == ["1", "1"]
    on = rule_judge(tok, lambda text: {"Yes": 200.0})
    on.option_probabilities(["Is it so?"], ["Yes", "No"])
    assert on.last_option_mass == pytest.approx([1.0], abs=1e-6)
