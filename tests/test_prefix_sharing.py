"""Prefix sharing (docs/prefix_sharing.md): the judge reads what prompts share once, the generator prefills each prompt
once for its n candidates, and neither changes an answer beyond float rounding."""

import pytest
import torch

from spc_train.critic.faithfulness import faithfulness_examples, faithfulness_question
from spc_train.critic.fed import OPTIONS as ONE_TWO
from spc_train.critic.fed import POLICIES, pairwise_question
from spc_train.judge import DataParallelJudge, Judge, PrefixStore, common_prefix, nesting_waves, shared_prefixes

pytestmark = pytest.mark.usefixtures("one_thread")

YES_NO = ["Yes", "No"]


def candidate(pair_id: str, index: int, *lines: str) -> dict:
    return {
        "pair_id": pair_id,
        "candidate": index,
        "parsed": True,
        "user1_persona": ["I like cats.", "I live in a big city."],
        "user2_persona": ["I have a dog.", "I play the guitar."],
        "turns": [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(lines)],
    }


CANDIDATES = [
    candidate("a", 0, "hi, how are you today?", "I am fine, I just walked my dog.", "I love my cats."),
    candidate("a", 1, "hello! I play the guitar.", "Nice, I live in the city.", "Do you have pets?"),
    candidate("a", 2, "good morning", "morning! my dog woke me up", "cats never do that"),
]


def fed_questions() -> list[str]:
    """Every policy's question for every ordered pair, as the five FED experts ask them (here in one call)."""
    return [
        pairwise_question(policy, a, b) for policy in POLICIES for a in CANDIDATES for b in CANDIDATES if a is not b
    ]


@pytest.fixture(scope="module")
def tiny_judge_parts(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_models / "generator"
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def judges(parts, **kwargs) -> tuple[Judge, Judge]:
    model, tokenizer = parts
    return Judge(model, tokenizer, share_prefixes=False, **kwargs), Judge(model, tokenizer, **kwargs)


def assert_same_answers(plain: Judge, shared: Judge, expected, got) -> None:
    assert len(expected) == len(got)
    for want, have in zip(expected, got):
        assert have == pytest.approx(want, abs=1e-5)
    assert shared.last_option_mass == pytest.approx(plain.last_option_mass, abs=1e-5)
    assert shared.last_top_tokens == plain.last_top_tokens


def test_common_prefix_and_the_store_finds_the_longest_match():
    assert common_prefix((1, 2, 3), (1, 2, 4, 5)) == 2
    assert common_prefix((1, 2), (1, 2, 3)) == 2
    assert common_prefix((7,), (1,)) == 0
    states = lambda n: [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]  # noqa: E731
    store = PrefixStore(budget=10)
    store.add((1, 2, 3), states(3))
    store.add((1, 5, 6, 7), states(4))
    assert store.match((1, 2, 3, 9)) == ((1, 2, 3), 3)
    assert store.match((1, 5, 6, 0)) == ((1, 5, 6, 7), 3)
    assert store.match((4,)) == (None, 0)
    assert [k.shape[1] for k, _ in store.states((1, 5, 6, 7), 2)] == [2]
    store.add((9, 9, 9, 9), states(4))  # 11 tokens > 10: the least recently used entry goes
    assert (1, 2, 3) not in store.entries and len(store) == 2 and store.tokens == 8


def test_shared_prefixes_come_in_nesting_waves():
    prompts = [(1, 2, 3, 4, 5), (1, 2, 3, 4, 6), (1, 2, 3, 7), (8, 9)]
    prefixes = shared_prefixes(prompts, minimum=2)
    assert prefixes == [(1, 2, 3), (1, 2, 3, 4)]
    assert nesting_waves(prefixes) == [[(1, 2, 3)], [(1, 2, 3, 4)]]
    assert shared_prefixes(prompts, minimum=4) == [(1, 2, 3, 4)]
    # a prompt that is a prefix of another keeps its own last token to read
    assert shared_prefixes([(1, 2, 3), (1, 2, 3, 4)], minimum=1) == [(1, 2), (1, 2, 3)]


def test_fed_questions_with_sharing_equal_the_unshared_ones(tiny_judge_parts):
    plain, shared = judges(tiny_judge_parts)
    questions = fed_questions()
    expected = plain.option_probabilities(questions, ONE_TWO)
    got = shared.option_probabilities(questions, ONE_TWO)
    assert_same_answers(plain, shared, expected, got)
    assert shared.tokens_prompted == plain.tokens_prompted == plain.tokens_encoded
    assert shared.tokens_encoded < plain.tokens_encoded / 2  # five policies, one encoding of each ordered pair


def test_faithfulness_examples_are_encoded_once_and_answers_stay(tiny_judge_parts):
    plain, shared = judges(tiny_judge_parts)
    examples = faithfulness_examples(4)
    questions = [faithfulness_question(c) for c in CANDIDATES]
    expected = plain.option_probabilities(questions, YES_NO, examples)
    got = shared.option_probabilities(questions, YES_NO, examples)
    assert_same_answers(plain, shared, expected, got)
    shots = len(shared.encode("", examples)) - len(shared.encode("", ()))
    assert shared.tokens_encoded <= plain.tokens_encoded - (len(questions) - 1) * shots


def test_later_calls_reuse_the_stored_prefixes(tiny_judge_parts):
    plain, shared = judges(tiny_judge_parts)
    questions = fed_questions()
    first = shared.option_probabilities(questions, ONE_TWO)
    encoded = shared.tokens_encoded
    again = shared.option_probabilities(questions, ONE_TWO)
    assert shared.tokens_encoded - encoded == len(questions)  # only each prompt's last token
    for before, after in zip(first, again):
        assert after == pytest.approx(before, abs=1e-5)


def test_a_policy_asked_after_another_encodes_only_its_own_words(tiny_judge_parts):
    plain, shared = judges(tiny_judge_parts)
    questions = fed_questions()
    depth = [q for q in questions if POLICIES["depth"] in q]
    shared.option_probabilities(depth, ONE_TWO)
    before = shared.tokens_encoded
    likable = [q for q in questions if POLICIES["likable"] in q]
    got = shared.option_probabilities(likable, ONE_TWO)
    # each likable prompt starts from its depth twin: the same pair, parting at the policy's words
    own_words = 0
    for asked, twin in zip(likable, depth):
        ids = shared.encode(asked)
        assert common_prefix(ids, shared.encode(twin)) > len(ids) / 2
        own_words += len(ids) - common_prefix(ids, shared.encode(twin))
    assert shared.tokens_encoded - before <= own_words
    assert_same_answers(plain, shared, plain.option_probabilities(likable, ONE_TWO), got)


def test_truncated_prompts_and_small_stores_still_give_the_same_answers(tiny_judge_parts):
    questions = fed_questions()[:12] + [faithfulness_question(c) for c in CANDIDATES]
    for kwargs in ({"context": 120}, {"prefix_cache_tokens": 0}, {"prefix_cache_tokens": 300, "batch_tokens": 400}):
        plain, shared = judges(tiny_judge_parts, **kwargs)
        expected = plain.option_probabilities(questions, ONE_TWO)
        got = shared.option_probabilities(questions, ONE_TWO)
        assert_same_answers(plain, shared, expected, got)
        assert shared.truncated == plain.truncated
        assert (plain.truncated > 0) == ("context" in kwargs)
        assert shared.tokens_encoded < plain.tokens_encoded


def test_data_parallel_judge_shares_too(tiny_judge_parts):
    model, tokenizer = tiny_judge_parts
    plain = Judge(model, tokenizer, share_prefixes=False)
    parallel = DataParallelJudge(model, tokenizer)
    questions = fed_questions()[:10]
    expected = plain.option_probabilities(questions, ONE_TWO)
    got = parallel.option_probabilities(questions, ONE_TWO)
    assert_same_answers(plain, parallel, expected, got)
    assert parallel.tokens_encoded < plain.tokens_encoded


def test_prefill_once_gives_the_candidates_of_num_return_sequences(tiny_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spc_train.generation.engine import sample_conversations

    model = AutoModelForCausalLM.from_pretrained(tiny_models / "generator").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "generator")
    prompts = ["User 1: hello there, how are you?\nUser 2:", "User 1: I like cats and dogs.\nUser 2: Me too!\nUser 1:"]
    settings = {"do_sample": True, "top_k": 40, "temperature": 0.7, "max_new_tokens": 24, "repetition_penalty": 1.1}
    settings["suppress_tokens"] = [tokenizer.eos_token_id]  # full length: every step compared
    runs = {
        share: sample_conversations(
            model,
            tokenizer,
            prompts,
            ["a", "b"],
            n=3,
            generation_kwargs=settings,
            batch_tokens=1 << 16,
            seed=7,
            share_prefill=share,
        )
        for share in (False, True)
    }
    as_text = {
        share: [[(s.text, s.num_tokens, s.finish_reason) for s in group] for group in groups]
        for share, groups in runs.items()
    }
    assert as_text[True] == as_text[False]
    assert all(s.num_tokens == 24 for group in runs[True] for s in group)


def test_each_prompt_alone_into_a_static_cache_equals_the_padded_batch(tiny_models):
    """The engine's two prefills (each prompt alone into a StaticCache; the left-padded batch into a DynamicCache)
    hold the same keys and values at every real prompt position, and their first sampled logits agree."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, StaticCache

    from spc_train.generation.engine import prefill_once

    model = AutoModelForCausalLM.from_pretrained(tiny_models / "generator").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "generator", padding_side="left")
    prompts = ["User 1: hi\nUser 2:", "User 1: I like cats and dogs, and you?\nUser 2: Me too!\nUser 1:"]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        static = prefill_once(model, encoded, n=2, max_new_tokens=5)
        padded = prefill_once(model, encoded, n=2)
        assert isinstance(static["cache"], StaticCache) and isinstance(padded["cache"], DynamicCache)
        real = static["attention_mask"][:, :-1].bool()  # the cached positions that are prompt tokens
        width = real.shape[1]
        for ours, theirs in zip(static["cache"].layers, padded["cache"].layers):
            assert ours.keys.shape[2] == width + 1 + 5  # the whole prompt and max_new_tokens, allocated once
            for part in ("keys", "values"):
                a, b = getattr(ours, part)[:, :, :width], getattr(theirs, part)
                assert torch.allclose(a.transpose(1, 2)[real], b.transpose(1, 2)[real], atol=1e-5)
        logits = [
            model(
                input_ids=inputs["input_ids"][:, -1:],
                attention_mask=inputs["attention_mask"],
                cache=inputs["cache"],
                position_ids=inputs["attention_mask"].sum(-1, keepdim=True) - 1,
            ).logits
            for inputs in (static, padded)
        ]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)
