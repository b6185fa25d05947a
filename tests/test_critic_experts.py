"""The critic's experts in depth: few-shot faithfulness, utterance-level NLI faithfulness, the start-up check, the
toxicity expert on alt-profanity-check, and critique + selection end to end with judges and classifiers whose
preferences each test controls.

Judges are `RuleLM`s (tests/test_critic.py): their next-token logits follow a rule on the decoded prompt. Classifiers
are tiny Llama sequence classifiers whose outputs are overwritten from marker words, so every score is known.
"""

from __future__ import annotations

import importlib.util
import math
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama_config
from test_critic import CORPUS, RuleLM, conversation, marker_classifier, rule_judge, single_id

from spc_train.configs import (
    CriticConfig,
    EvaluationConfig,
    GenerationArguments,
    GeneratorConfig,
    JudgeConfig,
    LoopConfig,
    PersonasConfig,
    Recipe,
    RecipeError,
    SeedConfig,
)
from spc_train.critic.faithfulness import EXAMPLES, OPTIONS, FaithfulnessExpert, faithfulness_question
from spc_train.critic.faithfulness_nli import NliFaithfulnessExpert, contradiction_label
from spc_train.critic.registry import ExpertCheckError, build_experts, check_experts, critique, judge_options
from spc_train.critic.selection import select
from spc_train.judge import Judge, JudgeError

NAN = float("nan")
FAITHFULNESS_CUE = "contradict either of their profiles"
UNFAITHFUL = "zebra"  # the judge says "Yes, it contradicts" when the candidate's conversation mentions one
BETTER = "golden"  # every FED policy prefers the conversation that mentions it
# (premise = attribute, hypothesis = utterance) -> P(contradiction); any other pair: NO_CONTRADICTION.
CONTRADICTIONS = {
    ("I am a vegetarian.", "I grilled a steak last night."): 0.95,
    ("I have a dog.", "I have never had a pet."): 0.7,
    # Would be the worst pair, were user 2's utterance checked against user 1's profile: it must not be.
    ("I never eat meat.", "I grilled a steak last night."): 0.99,
}
NO_CONTRADICTION = 0.02


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    from spc_train.tiny import train_tokenizer

    texts = [faithfulness_question(e) + " " + e["answer"] for e in EXAMPLES]
    texts += [f"{premise} {hypothesis}" for premise, hypothesis in CONTRADICTIONS]
    tokenizer = train_tokenizer((CORPUS + texts) * 4 + ["No", "Yes", "1", "2"] * 50, vocab_size=600)
    for option in ("Yes", " Yes", "No", " No", "1", "2"):
        single_id(tokenizer, option)
    return tokenizer


def last_user_turn(text: str) -> str:
    return text.rsplit("<|im_start|>user\n", 1)[-1]


# -- the faithfulness judge's in-context examples -------------------------------------------------------------------
def test_examples_are_ours_two_faithful_and_two_unfaithful_alternating():
    assert len(EXAMPLES) == 4
    answers = [e["answer"] for e in EXAMPLES]
    assert [a.split(",")[0] for a in answers] == ["No", "Yes", "No", "Yes"]
    for example in EXAMPLES:
        assert 4 <= len(example["turns"]) <= 6
        assert {t["speaker"] for t in example["turns"]} == {1, 2}
        assert example["user1_persona"] and example["user2_persona"]
    for answer in answers[1::2]:
        assert answer.startswith("Yes, the conversation contradicts user ") and "because" in answer
    users = {re.match(r"Yes, the conversation contradicts user (\d)'s profile", a).group(1) for a in answers[1::2]}
    assert users == {"1", "2"}  # one about each user, not only user 2 as in the paper's Table 7


def test_examples_are_prior_chat_turns_before_the_question(tok):
    judge = Judge(None, tok)
    prompt = judge.render("Q?", [("E1?", "No, e1."), ("E2?", "Yes, e2.")])
    assert prompt == (
        "<|im_start|>user\nE1?<|im_end|>\n<|im_start|>assistant\nNo, e1.<|im_end|>\n"
        "<|im_start|>user\nE2?<|im_end|>\n<|im_start|>assistant\nYes, e2.<|im_end|>\n"
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert judge.render("Q?") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"


def test_examples_without_a_chat_template_are_concatenated():
    judge = Judge(None, SimpleNamespace(chat_template=None))
    assert judge.render("Q?", [("E1?", "No, e1.")]) == "E1?\nAnswer: No, e1.\n\nQ?\nAnswer:"
    assert judge.render("Q?") == "Q?\nAnswer:"


@pytest.mark.parametrize("count", [0, 1, 4])
def test_faithfulness_shows_the_configured_examples_and_reads_p_yes_after_the_last_prompt(tok, count):
    seen = []

    def rule(text):
        seen.append(text)
        return {"Yes": 30.0} if UNFAITHFUL in last_user_turn(text) else {"No": 30.0}

    judge = rule_judge(tok, rule)
    [expert] = build_experts(
        CriticConfig(experts=["faithfulness"], faithfulness_examples=count), lambda: judge, lambda path: None
    )
    candidates = [conversation("p", 0, "hi", f"I saw a {UNFAITHFUL}"), conversation("p", 1, "hi", "I saw a horse")]
    scores = expert.score(candidates)
    assert scores[0] > 0.99 and scores[1] < 0.01

    assert len(seen) == 2
    for text, candidate in zip(seen, candidates):
        assert text.count("<|im_start|>user\n") == count + 1
        assert text.count("<|im_start|>assistant\n") == count + 1
        assert text.endswith(faithfulness_question(candidate) + "<|im_end|>\n<|im_start|>assistant\n")
        for example in EXAMPLES[:count]:
            assert f"{faithfulness_question(example)}<|im_end|>\n<|im_start|>assistant\n{example['answer']}" in text
        for example in EXAMPLES[count:]:
            assert example["answer"] not in text


def test_the_examples_decide_nothing_by_themselves(tok):
    """Two of the examples answer "Yes": a judge that says Yes whenever "Yes" is anywhere would fail everything."""
    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if "Yes" in last_user_turn(text) else {"No": 30.0})
    expert = FaithfulnessExpert("faithfulness", judge, 0.5, examples=4)
    assert expert.score([conversation("p", 0, "hi", "hello")])[0] < 0.01


def test_a_bad_example_count_is_refused(tok):
    judge = rule_judge(tok, lambda text: {"No": 1.0})
    with pytest.raises(ValueError, match="between 0 and 4"):
        FaithfulnessExpert("faithfulness", judge, 0.5, examples=5)
    with pytest.raises(ExpertCheckError, match="between 0 and 4"):
        check_experts(CriticConfig(experts=["faithfulness"], faithfulness_examples=-1), tok)


def test_over_long_few_shot_prompts_drop_examples_before_cutting_the_question(tok):
    judge = rule_judge(tok, lambda text: {"Yes": 30.0} if UNFAITHFUL in last_user_turn(text) else {"No": 30.0})
    record = conversation("p", 0, "hi", f"a {UNFAITHFUL} ate my homework")
    question = faithfulness_question(record)
    one_shot = FaithfulnessExpert("faithfulness", judge, 0.5, examples=1).examples
    fits_one = len(tok(judge.render(question, one_shot), add_special_tokens=False)["input_ids"])
    judge.context = fits_one  # room for exactly one example
    expert = FaithfulnessExpert("faithfulness", judge, 0.5, examples=4)

    assert expert.score([record])[0] > 0.99
    assert (judge.examples_dropped, judge.truncated) == (3, 0)
    [ids] = judge.model.seen
    assert tok.decode(ids) == judge.render(question, one_shot)  # the first example kept, the question whole


def test_a_model_that_can_skip_the_lm_head_is_asked_for_the_last_position_only(tok):
    class LastOnly(RuleLM):
        def forward(self, input_ids, attention_mask, position_ids, logits_to_keep=0):
            self.kept = logits_to_keep
            return super().forward(input_ids, attention_mask, position_ids)

    judge = Judge(LastOnly(tok, lambda text: {"Yes": 30.0}), tok)
    assert judge.option_probabilities(["Is it?"], OPTIONS)[0][0] > 0.99
    assert judge.model.kept == 1
    plain = rule_judge(tok, lambda text: {"Yes": 30.0})  # a forward without the argument gets none
    assert plain.option_probabilities(["Is it?"], OPTIONS)[0][0] > 0.99


# -- faithfulness_nli -----------------------------------------------------------------------------------------------
def marker_nli(tok, id2label=None):
    """A tiny Llama NLI classifier: P(contradiction) comes from CONTRADICTIONS, keyed by (premise, hypothesis)."""
    from transformers import LlamaForSequenceClassification

    id2label = id2label or {0: "entailment", 1: "neutral", 2: "contradiction"}

    class MarkerNli(LlamaForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            output = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            label = contradiction_label(self.config)
            logits = torch.zeros_like(output.logits)
            for row in range(input_ids.shape[0]):
                real = int(attention_mask[row].sum())
                assert attention_mask[row, :real].all(), "not right padded"
                premise, hypothesis = self.test_tokenizer.decode(input_ids[row, :real]).split("<|sep|>")
                self.pairs.append((premise, hypothesis))
                p = CONTRADICTIONS.get((premise, hypothesis), NO_CONTRADICTION)
                # The other two logits are 0: softmax gives p to the contradiction label.
                logits[row, label] = math.log(2 * p / (1 - p))
            output.logits = logits
            self.calls.append(input_ids.shape[0])
            return output

    torch.manual_seed(0)
    config = tiny_llama_config(
        tok, num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    )
    model = MarkerNli(config).eval()
    model.test_tokenizer, model.calls, model.pairs = tok, [], []
    return model


def persona_conversation(pair_id: str, candidate: int, *lines: str, parsed: bool = True) -> dict:
    return {
        **conversation(pair_id, candidate, *lines, parsed=parsed),
        "user1_persona": ["I have a dog.", "I never eat meat."],
        "user2_persona": ["I like to cook.", "I am a vegetarian."],
    }


NLI_CANDIDATES = [
    # User 2's steak contradicts user 2's "vegetarian" (0.95); user 1's "never had a pet" contradicts "dog" (0.7).
    ("hi there", "I grilled a steak last night.", "I have never had a pet.", "hi there"),
    ("hi there", "I like to cook soup.", "I have never had a pet."),  # only user 1's, 0.7
    ("I grilled a steak last night.", "hi there"),  # user 1 said it: user 1 "never eats meat" (0.99)
    ("hi there", "hello"),  # nothing contradicts
]


@pytest.mark.parametrize("batch_size", [64, 3])
def test_nli_points_at_the_contradicting_utterance_and_attribute(tok, batch_size):
    classifier = marker_nli(tok)
    expert = NliFaithfulnessExpert("faithfulness_nli", 0.5, classifier, tok, batch_size=batch_size)
    candidates = [persona_conversation("p", i, *lines) for i, lines in enumerate(NLI_CANDIDATES)]
    candidates.append(persona_conversation("p", 4, parsed=False))  # no turns
    scores = expert.score(candidates)

    assert scores[:4] == pytest.approx([0.95, 0.7, 0.99, NO_CONTRADICTION], abs=1e-5)
    assert math.isnan(scores[4]) and expert.reasons[4] is None
    assert expert.reasons[0] == {
        "turn": 1,
        "speaker": 2,
        "attribute": "I am a vegetarian.",
        "utterance": "I grilled a steak last night.",
        "probability": pytest.approx(0.95, abs=1e-5),
    }
    assert {k: expert.reasons[1][k] for k in ("turn", "speaker", "attribute")} == (
        {"turn": 2, "speaker": 1, "attribute": "I have a dog."}
    )
    assert {k: expert.reasons[2][k] for k in ("turn", "speaker", "attribute")} == (
        {"turn": 0, "speaker": 1, "attribute": "I never eat meat."}
    )
    assert expert.reasons[3]["probability"] == pytest.approx(NO_CONTRADICTION, abs=1e-5)

    # Each speaker's utterances against that speaker's own attributes only, premise first, each pair once.
    expected = {
        (attribute, turn["text"])
        for c in candidates
        for turn in c["turns"]
        for attribute in c[f"user{turn['speaker']}_persona"]
    }
    assert sorted(classifier.pairs) == sorted(expected)
    assert sum(classifier.calls) == len(expected)
    assert max(classifier.calls) <= batch_size


def test_nli_labels_are_found_case_insensitively_or_refused(tok):
    classifier = marker_nli(tok, {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"})
    expert = NliFaithfulnessExpert("faithfulness_nli", 0.5, classifier, tok)
    assert expert.label == 0
    assert expert.score([persona_conversation("p", 0, *NLI_CANDIDATES[0])]) == pytest.approx([0.95], abs=1e-5)
    with pytest.raises(JudgeError, match=r"no 'contradiction' label.*LABEL_0.*LABEL_1"):
        NliFaithfulnessExpert("faithfulness_nli", 0.5, marker_nli(tok, {0: "LABEL_0", 1: "LABEL_1"}), tok)


def test_nli_expert_is_registered_and_needs_its_model(tok):
    loads = []

    def classifier(path):
        loads.append(path)
        return marker_nli(tok), tok

    critic = CriticConfig(experts=["faithfulness_nli"], nli_model="some/nli", faithfulness_nli_threshold=0.3)
    [expert] = build_experts(critic, lambda: pytest.fail("no judge needed"), classifier)
    assert (expert.name, expert.kind, expert.threshold, loads) == ("faithfulness_nli", "filter", 0.3, ["some/nli"])
    with pytest.raises(ExpertCheckError, match="critic.nli_model"):
        build_experts(CriticConfig(experts=["faithfulness_nli"]), lambda: None, classifier)


# -- the start-up check ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def no_yes_tok():
    """A judge tokenizer that can write "No", "1" and "2" as one token, but "Yes" only in pieces."""
    from spc_train.tiny import train_tokenizer

    tokenizer = train_tokenizer(["No, no. 1 or 2? No 1, no 2. The weather was nice all day long."] * 20, 300)
    assert len(tokenizer.encode("Yes", add_special_tokens=False)) > 1
    assert len(tokenizer.encode(" Yes", add_special_tokens=False)) > 1
    return tokenizer


def classifier_folder(path, id2label):
    from transformers import LlamaConfig

    LlamaConfig(
        num_labels=len(id2label), id2label=id2label, label2id={v: k for k, v in id2label.items()}
    ).save_pretrained(path)
    return str(path)


def test_check_experts_accepts_a_judge_that_can_answer(tok, tmp_path):
    nli = classifier_folder(tmp_path / "nli", {0: "Entailment", 1: "Neutral", 2: "Contradiction"})
    toxic = classifier_folder(tmp_path / "tox", {0: "non-toxic", 1: "toxic"})
    check_experts(CriticConfig(), tok)  # the default experts
    critic = CriticConfig(experts=["faithfulness_nli", "toxicity", "depth"], nli_model=nli, toxicity_model=toxic)
    check_experts(critic, tok)
    assert judge_options(critic) == {"depth": ("1", "2")}
    # Classifiers only: no judge tokenizer needed (`Loop.prepare` then loads none).
    critic = CriticConfig(experts=["faithfulness_nli", "toxicity"], nli_model=nli, toxicity_model=toxic)
    assert judge_options(critic) == {}
    check_experts(critic, None)


def test_check_experts_names_the_option_the_judge_cannot_write(no_yes_tok):
    with pytest.raises(ExpertCheckError, match=r"'faithfulness'.*'Yes'"):
        check_experts(CriticConfig(), no_yes_tok)
    check_experts(CriticConfig(experts=["depth", "likable"]), no_yes_tok)  # "1" / "2" are fine


def test_check_experts_refuses_unknown_experts_and_classifiers_without_their_label(tok, tmp_path):
    with pytest.raises(ExpertCheckError, match="'humour'"):
        check_experts(CriticConfig(experts=["faithfulness", "humour"]), tok)
    with pytest.raises(ExpertCheckError, match="set critic.nli_model"):
        check_experts(CriticConfig(experts=["faithfulness_nli"]), tok)
    labels = classifier_folder(tmp_path / "labels", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ExpertCheckError, match=r"'faithfulness_nli'.*'contradiction'.*LABEL_0"):
        check_experts(CriticConfig(experts=["faithfulness_nli"], nli_model=labels), tok)
    with pytest.raises(ExpertCheckError, match=r"'toxicity'.*'toxic'.*LABEL_1"):
        check_experts(CriticConfig(experts=["toxicity"], toxicity_model=labels), tok)
    from spc_train.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="faithfulness_nli classifier"):
        check_experts(CriticConfig(experts=["faithfulness_nli"], nli_model=str(tmp_path / "missing")), tok)


def recipe_for(model_dir: str, measurements: tuple[str, ...] = ("statistics",), **critic) -> Recipe:
    from spc_train.tiny import default_seed_path

    return Recipe(
        seed=SeedConfig(path=str(default_seed_path())),
        model=GeneratorConfig(name_or_path=model_dir),
        judge=JudgeConfig(),
        personas=PersonasConfig(),
        generation=GenerationArguments(),
        critic=CriticConfig(**critic),
        training={},
        loop=LoopConfig(),
        evaluation=EvaluationConfig(measurements=list(measurements)),
    )


def test_prepare_fails_before_any_work_when_the_judge_cannot_write_yes(no_yes_tok, tmp_path):
    from spc_train.loop import Loop

    judge_dir = tmp_path / "judge"
    no_yes_tok.save_pretrained(judge_dir)  # the generator, and so the judge (paper: the same LLM)
    run = tmp_path / "run"
    with pytest.raises(ExpertCheckError, match=r"'Yes'") as error:
        Loop(recipe_for(str(judge_dir)), run).prepare()
    assert isinstance(error.value, RecipeError)  # the CLI reports it in one line, exit status 2
    assert str(judge_dir) in str(error.value)
    assert not run.exists()  # no recipe.yaml, no manifest, no stage folder

    with pytest.raises(ExpertCheckError, match=r"'toxicity'.*'Yes'"):  # no classifier: toxicity asks the judge
        Loop(recipe_for(str(judge_dir), experts=["depth", "toxicity"]), run).prepare()
    assert not run.exists()
    # The evaluation's judge measurements are checked too: extraction asks Yes/No.
    with pytest.raises(RecipeError, match=r"'Yes'.*evaluation.measurements"):
        Loop(recipe_for(str(judge_dir), ("detection", "extraction"), experts=["depth"]), run).prepare()
    assert not run.exists()
    Loop(recipe_for(str(judge_dir), experts=["depth", "likable"]), run).prepare()  # "1" and "2" are single tokens
    assert (run / "recipe.yaml").is_file()


# -- the toxicity expert on alt-profanity-check (critic.toxicity_model: profanity-check) ----------------------------
needs_profanity_check = pytest.mark.skipif(
    importlib.util.find_spec("profanity_check") is None,
    reason="alt-profanity-check is not installed: pip install alt-profanity-check==1.9.1",
)


def profanity_check_expert():
    critic = CriticConfig(experts=["toxicity"], toxicity_model="profanity-check")
    (expert,) = build_experts(critic, lambda: pytest.fail("asked the judge"), lambda path: pytest.fail(path))
    return expert


@needs_profanity_check
def test_profanity_check_needs_no_judge_and_its_identity_is_the_package_and_its_model_files():
    from spc_train.model_roles import ROLES
    from spc_train.models import identity

    critic = CriticConfig(experts=["toxicity", "depth"], toxicity_model="profanity-check")
    assert judge_options(critic) == {"depth": ("1", "2")}
    check_experts(CriticConfig(experts=["toxicity"], toxicity_model="profanity-check"), None)  # no judge tokenizer
    found = identity("profanity-check")
    assert found["id"] == "profanity-check" and found["package"] == "alt-profanity-check"
    assert found["version"] == "1.9.1" and re.fullmatch(r"[0-9a-f]{20}", found["sha256"])
    recipe = recipe_for("unused", experts=["toxicity"], toxicity_model="profanity-check")
    assert ROLES["toxicity"].identity(recipe) == found  # what stage fingerprints and the manifest record


def test_profanity_check_missing_is_refused_before_any_work_with_how_to_install_it(no_yes_tok, tmp_path, monkeypatch):
    from spc_train import models
    from spc_train.loop import Loop

    monkeypatch.setattr(models, "_profanity_check_data", lambda: None)
    install = re.escape("pip install alt-profanity-check==1.9.1")
    with pytest.raises(models.ModelNotFoundError, match=f"toxicity backend.*{install}$"):
        check_experts(CriticConfig(experts=["toxicity"], toxicity_model="profanity-check"), None)
    with pytest.raises(models.ModelNotFoundError, match=install):
        build_experts(CriticConfig(experts=["toxicity"], toxicity_model="profanity-check"), None, None)
    judge_dir = tmp_path / "judge"
    no_yes_tok.save_pretrained(judge_dir)
    run = tmp_path / "run"
    with pytest.raises(models.ModelNotFoundError, match=install) as error:  # the evaluation's toxicity rate too
        Loop(
            recipe_for(str(judge_dir), ("toxicity",), experts=["depth"], toxicity_model="profanity-check"), run
        ).prepare()
    assert "\n" not in str(error.value) and not run.exists()
    assert models.identity("profanity-check")["version"] is None  # no failure on a non-path


@needs_profanity_check
def test_profanity_check_separates_the_health_fixtures_toxic_conversations_from_clean_ones():
    from spc_train.health.figures import roc_auc
    from spc_train.health.probes import toxicity_fixture

    fixture = toxicity_fixture()
    expert = profanity_check_expert()
    scores = expert.score([{"pair_id": r["id"], "turns": r["turns"]} for r in fixture])
    toxic = [s for s, r in zip(scores, fixture) if r["toxic"]]
    clean = [s for s, r in zip(scores, fixture) if not r["toxic"]]
    assert roc_auc(toxic, clean) == 1.0  # measured: toxic 0.77-1.0, clean 0.04-0.45
    assert min(toxic) > expert.threshold > max(clean)
    for score, reason, record in zip(scores, expert.reasons, fixture):
        assert reason["probability"] == score and record["turns"][reason["turn"]]["text"] == reason["utterance"]


@needs_profanity_check
def test_profanity_check_names_the_worst_utterance_and_reads_unparsed_text_whole():
    expert = profanity_check_expert()
    friendly = conversation("A", 0, "Hi! How was your weekend?", "Great, I went hiking with my dog.")
    abusive = conversation("A", 1, "Do you like my singing?", "No, shut up you stupid idiot.", "Oh. Okay.")
    unparsed = {"turns": [], "text": "you are a pathetic moron"}
    friendly_score, abusive_score, unparsed_score = expert.score([friendly, abusive, unparsed])
    assert friendly_score < expert.threshold < min(abusive_score, unparsed_score)
    assert expert.reasons[1] == {
        "turn": 1,
        "speaker": 2,
        "utterance": "No, shut up you stupid idiot.",
        "probability": abusive_score,
    }
    assert expert.reasons[2]["turn"] is None and expert.reasons[2]["utterance"] == unparsed["text"]
    assert expert.score([]) == [] and expert.reasons == []


def test_thresholds_include_faithfulness_nli(tmp_path):
    from spc_train.critic.selection import filter_thresholds

    recipe = recipe_for("unused", experts=["faithfulness_nli", "toxicity", "depth"], faithfulness_nli_threshold=0.2)
    assert filter_thresholds(recipe.critic) == {"faithfulness_nli": 0.2, "toxicity": 0.5}


# -- critique + selection end to end ----------------------------------------------------------------------------------
def e2e_rule(text: str) -> dict[str, float]:
    if FAITHFULNESS_CUE in text:
        assert text.count("<|im_start|>assistant\n") == len(EXAMPLES) + 1, "the examples were not shown"
        return {"Yes": 30.0} if UNFAITHFUL in last_user_turn(text) else {"No": 30.0}
    body = text.split("Conversation 1:\n", 1)[1]
    first, second = body.split("Conversation 2:\n", 1)
    if (BETTER in first) == (BETTER in second):
        return {"1": 0.0, "2": 0.0}
    return {"1": 30.0} if BETTER in first else {"2": 30.0}


def e2e_candidates() -> list[dict]:
    steak = "I grilled a steak last night."
    rows = [
        # A: 0 is the policies' favourite but contradicts its profile (the judge says so): 2 wins over 1.
        ("A", 0, ["hi", f"a {BETTER} {UNFAITHFUL} came by"]),
        ("A", 1, ["hi", "hello"]),
        ("A", 2, ["hi", f"a {BETTER} horse came by"]),
        # B: 0 is toxic, 1 has an utterance that contradicts an attribute (NLI): 3 wins over 2.
        ("B", 0, ["hi", f"you are an idiot, {BETTER} one"]),
        ("B", 1, ["hi", steak, f"so {BETTER}"]),
        ("B", 2, ["hi", "hello"]),
        ("B", 3, ["hi", f"a {BETTER} day"]),
        # C: nothing survives.
        ("C", 0, ["hi", f"a {UNFAITHFUL}"]),
        ("C", 1, ["hi", "you are an idiot"]),
        ("C", 2, []),
    ]
    return [
        persona_conversation(pair, candidate, *lines, parsed=bool(lines)) | {"text": "\n".join(lines) or "User 1: um"}
        for pair, candidate, lines in rows
    ]


def test_critique_then_select_filters_and_picks_exactly_the_expected_candidates(tok, tmp_path):
    from datasets import Dataset, load_from_disk

    judge = rule_judge(tok, e2e_rule)
    classifiers = {"nli": (marker_nli(tok), tok), "tox": (marker_classifier(tok, {0: "non-toxic", 1: "toxic"}), tok)}
    critic = CriticConfig(
        experts=["faithfulness", "faithfulness_nli", "toxicity", "depth", "coherency", "likable"],
        nli_model="nli",
        toxicity_model="tox",
    )
    check_experts(critic, tok, load_config=lambda path, role: classifiers[path][0].config)
    experts = build_experts(critic, lambda: judge, classifiers.__getitem__)
    candidates = e2e_candidates()
    rows = critique(candidates, experts)
    # Faithfulness asks about each parsed candidate; each policy about each ordered pair of a pair's parsed candidates.
    asked = sum(c["parsed"] for c in candidates) + len(critic.experts[3:]) * (3 * 2 + 4 * 3 + 2 * 1)
    assert len(judge.model.seen) == asked

    by_key = {(r["pair_id"], r["candidate"]): r for r in rows}
    assert by_key[("A", 0)]["scores"]["faithfulness"] > 0.99
    assert by_key[("B", 0)]["scores"]["toxicity"] == pytest.approx(0.9, abs=1e-5)
    assert by_key[("B", 0)]["reasons"]["toxicity"]["utterance"] == f"you are an idiot, {BETTER} one"
    assert by_key[("B", 1)]["scores"]["faithfulness_nli"] == pytest.approx(0.95, abs=1e-5)
    assert by_key[("B", 1)]["reasons"]["faithfulness_nli"] | {"probability": None} == {
        "turn": 1,
        "speaker": 2,
        "attribute": "I am a vegetarian.",
        "utterance": "I grilled a steak last night.",
        "probability": None,
    }
    assert set(by_key[("A", 1)]["reasons"]) == {"faithfulness_nli", "toxicity"}  # the judge's experts give none

    # Stored, reloaded, and selected from the stored rows alone; the judge must not be asked again.
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "critiques"))
    stored = load_from_disk(str(tmp_path / "critiques")).to_list()
    judge.model.rule = lambda text: pytest.fail("re-selection asked the judge")
    thresholds = {"faithfulness": 0.5, "faithfulness_nli": 0.5, "toxicity": 0.5}
    policies = ["depth", "coherency", "likable"]

    selected, stats = select(stored, thresholds, policies)
    assert {r["pair_id"]: r["candidate"] for r in selected} == {"A": 2, "B": 3}
    assert stats["pairs_without_survivor"] == ["C"]
    assert [r["votes"] for r in selected] == [3, 3]
    assert stats["pass_rate"] == pytest.approx(0.4)  # A1, A2, B2, B3
    assert selected[1]["reasons"]["faithfulness_nli"]["probability"] == pytest.approx(NO_CONTRADICTION, abs=1e-5)

    # A lenient faithfulness threshold lets A0 and C0 through: A0 is now the policies' pick, C gets a winner.
    lenient, lenient_stats = select(stored, {**thresholds, "faithfulness": 1.01}, policies)
    assert {r["pair_id"]: r["candidate"] for r in lenient} == {"A": 0, "B": 3, "C": 0}
    assert lenient_stats["pairs_without_survivor"] == []
    # A strict NLI threshold fails every candidate whose worst pair is above it: nothing below 0.01.
    strict, strict_stats = select(stored, {**thresholds, "faithfulness_nli": 0.01}, policies)
    assert strict == [] and strict_stats["pairs_without_survivor"] == ["A", "B", "C"]
    assert len(judge.model.seen) == asked
