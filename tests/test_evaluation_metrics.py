import math

import numpy as np
import pytest

from spc_train.evaluation.embedding_metrics import (
    cached_embed,
    embedding_diversity,
    embedding_statistics,
    mean_pairwise_cosine_distance,
    persona_embedding_coverage,
    record_embedding_coverage,
    shuffled_personas,
    speaker_embedding_coverage,
)
from spc_train.evaluation.next_utterance import (
    PERSONA_MODES,
    TfidfRanker,
    build_context,
    evaluate_ir,
    hit_at_1,
    ir_hit_at_1,
    next_utterance_examples,
)


def _record(pair_id, persona1, persona2, texts):
    """Turns alternate speakers 1, 2, 1, ..."""
    turns = [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(texts)]
    return {"pair_id": pair_id, "user1_persona": persona1, "user2_persona": persona2, "turns": turns}


TRAIN = [
    _record("t1", ["I surf."], ["I bake."], ["Do you like surfing waves?", "Yes, surfing waves is great."]),
    _record("t2", ["I knit."], ["I fish."], ["My cat sleeps a lot.", "Dogs bark at night."]),
    _record("t3", ["I sing."], ["I run."], ["Pizza or pasta tonight?", "Pasta with tomato sauce."]),
]


def _conversations(n, length=6):
    return [
        _record(
            f"c{i}",
            [f"I like topic{i}."],
            [f"I own pet{i}."],
            [f"conversation {i} line {j} word{i}x{j}" for j in range(length)],
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- IR next-utterance baseline


def test_ranker_puts_lexical_match_first():
    ranker = TfidfRanker().fit_records(TRAIN)
    context = "Do you like surfing waves?"
    candidates = ["Surfing waves is my favourite thing.", "Pasta with tomato sauce.", "Dogs bark at night."]
    scores = ranker.score(context, candidates)
    assert ranker.rank(context, candidates)[0] == 0
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0
    assert hit_at_1(scores, 0) == 1.0


def test_ranker_misses_when_distractor_is_the_lexical_match():
    ranker = TfidfRanker().fit_records(TRAIN)
    context = "Pizza or pasta tonight?"
    true_answer = "I would rather cook at home."
    candidates = [true_answer, "Pasta tonight sounds good, pizza too."]
    assert ranker.rank(context, candidates)[0] == 1
    assert hit_at_1(ranker.score(context, candidates), 0) == 0.0


def test_words_unseen_in_training_carry_no_weight():
    ranker = TfidfRanker().fit_records(TRAIN)
    # "zebra" is not in the training vocabulary: the shared word gives nothing, every candidate scores 0.
    scores = ranker.score("zebra", ["zebra", "quokka"])
    assert scores.tolist() == [0.0, 0.0]
    assert hit_at_1(scores, 0) == pytest.approx(0.5)


def test_hit_at_1_ties_count_fractionally():
    assert hit_at_1(np.array([0.3, 0.3, 0.3, 0.1])) == pytest.approx(1 / 3)
    assert hit_at_1(np.array([0.2, 0.3])) == 0.0
    assert hit_at_1(np.array([0.4, 0.3])) == 1.0


def test_ranker_requires_fit():
    with pytest.raises(RuntimeError):
        TfidfRanker().score("a", ["b"])


def test_build_context_persona_modes():
    record = _record("p", ["I am A1.", "I am A2."], ["I am B1."], ["hello there", "hi", "how are you"])
    # Turn 1 is spoken by user 2: "self" is user 2's persona, "their" is user 1's.
    assert build_context(record, 1, "none") == "hello there"
    assert build_context(record, 1, "self") == "I am B1. hello there"
    assert build_context(record, 1, "their") == "I am A1. I am A2. hello there"
    assert build_context(record, 1, "both") == "I am B1. I am A1. I am A2. hello there"
    # Turn 2 is spoken by user 1.
    assert build_context(record, 2, "self") == "I am A1. I am A2. hi"
    assert build_context(record, 2, "their") == "I am B1. hi"
    with pytest.raises(ValueError):
        build_context(record, 1, "mine")
    with pytest.raises(ValueError):
        build_context(record, 0, "none")


def test_examples_candidates_come_from_other_conversations():
    records = _conversations(8)
    examples = next_utterance_examples(records, persona="self", candidates=5, seed=3)
    assert len(examples) == 8 * 5  # turns 1..5 of each conversation
    for example in examples:
        index = int(example.pair_id[1:])
        assert example.candidates[0] == records[index]["turns"][example.turn]["text"]
        assert len(example.candidates) == 5 and len(set(example.candidates)) == 5
        assert all(f"conversation {index} " not in c for c in example.candidates[1:])
        assert example.context == build_context(records[index], example.turn, "self")


def test_examples_never_use_a_duplicate_of_the_answer_as_distractor():
    records = [_record(f"d{i}", [], [], ["Hi!", "Hi!", f"unique {i}", f"other {i}"]) for i in range(6)]
    for example in next_utterance_examples(records, candidates=4, seed=0):
        answer = example.candidates[0].lower()
        assert all(c.lower() != answer for c in example.candidates[1:])


def test_examples_raise_when_too_few_utterances():
    with pytest.raises(ValueError):
        next_utterance_examples(_conversations(2, length=3), candidates=20)


def test_hit_at_1_deterministic_for_seed_and_in_range():
    train, test = _conversations(10), _conversations(12, length=8)
    results = {
        (mode, seed): ir_hit_at_1(train, test, persona=mode, candidates=10, seed=seed)
        for mode in PERSONA_MODES
        for seed in (0, 1)
    }
    for (mode, seed), value in results.items():
        assert 0.0 <= value <= 1.0
        assert ir_hit_at_1(train, test, persona=mode, candidates=10, seed=seed) == value
    a = next_utterance_examples(test, candidates=10, seed=0)
    b = next_utterance_examples(test, candidates=10, seed=1)
    assert [e.candidates for e in a] == [e.candidates for e in next_utterance_examples(test, candidates=10, seed=0)]
    assert [e.candidates for e in a] != [e.candidates for e in b]


def test_evaluate_ir_counts_examples_and_max_examples():
    ranker = TfidfRanker().fit_records(_conversations(10))
    full = evaluate_ir(ranker, _conversations(12), candidates=10)
    capped = evaluate_ir(ranker, _conversations(12), candidates=10, max_examples=7)
    assert full["examples"] == 12 * 5 and capped["examples"] == 7
    assert 0.0 <= full["hit_at_1"] <= 1.0
    # Each conversation repeats its own topic word: the answer always shares it with the context, distractors never.
    topical = [_record(f"k{i}", [], [], [f"topic{i} chat x{w}" for w in "abcdef"]) for i in range(12)]
    assert ir_hit_at_1(topical, topical, candidates=10) == 1.0
    # Without any training vocabulary overlap every candidate scores 0: hit@1 is chance, 1/10.
    assert ir_hit_at_1(TRAIN, topical, candidates=10) == pytest.approx(0.1)


# ---------------------------------------------------------------- embedding metrics (fake embedder)


def _fake_embed(vocabulary):
    """One-hot embedding per known text (texts mapped to the same index embed identically)."""

    def embed(texts):
        dim = max(vocabulary.values()) + 1
        out = np.zeros((len(texts), dim))
        for row, text in enumerate(texts):
            out[row, vocabulary[text]] = 1.0
        return out

    return embed


def _hash_embed(texts):
    """Deterministic pseudo-random unit vectors: different texts are (almost) orthogonal-ish, equal texts equal."""
    out = []
    for text in texts:
        rng = np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(text)))
        vector = rng.normal(size=64)
        out.append(vector / np.linalg.norm(vector))
    return np.asarray(out)


def test_mean_pairwise_cosine_distance_matches_brute_force():
    vectors = np.random.default_rng(0).normal(size=(7, 5))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = np.mean([1 - unit[i] @ unit[j] for i in range(7) for j in range(i + 1, 7)])
    assert mean_pairwise_cosine_distance(vectors) == pytest.approx(brute)
    assert math.isnan(mean_pairwise_cosine_distance(vectors[:1]))


def test_embedding_diversity_zero_for_identical_and_grows_for_different():
    same = [_record(f"s{i}", [], [], ["hello", "how are you"]) for i in range(4)]
    assert embedding_diversity(same, _hash_embed) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(embedding_diversity(same[:1], _hash_embed))
    two_same_two_different = same[:2] + _conversations(2)
    all_different = _conversations(4)
    d_mixed = embedding_diversity(two_same_two_different, _hash_embed)
    d_all = embedding_diversity(all_different, _hash_embed)
    assert 0.0 < d_mixed < d_all
    # Orthogonal one-hot conversations: every pair has distance exactly 1.
    vocabulary = {"a": 0, "b": 1, "c": 2}
    orthogonal = [_record(t, [], [], [t]) for t in "abc"]
    assert embedding_diversity(orthogonal, _fake_embed(vocabulary)) == pytest.approx(1.0)
    assert embedding_diversity(orthogonal, _fake_embed(vocabulary), unit="utterance") == pytest.approx(1.0)
    # Utterance-level: "a", "a", "b" -> pairs (a,a)=0, (a,b)=1, (a,b)=1 -> 2/3.
    repeated = [_record("r", [], [], ["a", "a"]), _record("q", [], [], ["b"])]
    assert embedding_diversity(repeated, _fake_embed(vocabulary), unit="utterance") == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        embedding_diversity(repeated, _fake_embed(vocabulary), unit="word")


def test_persona_coverage_hand_example():
    # 2-D embeddings: cos(attr_x, utt_x) = 1, cos(attr_x, near_x) = 0.6, cos(attr_x, utt_y) = 0.
    table = {
        "I hike.": [1.0, 0.0],
        "I cook.": [0.0, 1.0],
        "I swim.": [-1.0, 0.0],
        "went hiking": [1.0, 0.0],
        "sort of cooking": [0.8, 0.6],
        "nice": [0.0, -1.0],
    }

    def embed(texts):
        return np.asarray([table[t] for t in texts])

    record = _record(
        "h",
        ["I hike.", "I cook.", "I swim."],  # speaker 1 says "went hiking", "nice"
        ["I cook."],  # speaker 2 says "sort of cooking": cos 0.6
        ["went hiking", "sort of cooking", "nice"],
    )
    # Speaker 1: hike covered (1.0); cook max cos 0 ("went hiking"), -1 ("nice"); swim max cos 0 -> 1/3.
    assert speaker_embedding_coverage(["I hike.", "I cook.", "I swim."], ["went hiking", "nice"], embed) == 1 / 3
    # Speaker 2: cook vs "sort of cooking" cos 0.6 -> covered at 0.5, not at 0.7.
    assert record_embedding_coverage(record, embed, threshold=0.5) == pytest.approx((1 / 3 + 1) / 2)
    assert record_embedding_coverage(record, embed, threshold=0.7) == pytest.approx((1 / 3 + 0) / 2)
    # Strictly greater than the threshold: a cosine equal to it does not count.
    assert speaker_embedding_coverage(["I cook."], ["sort of cooking"], embed, threshold=0.6 + 1e-9) == 0.0
    # No utterances -> 0; no persona -> NaN (ignored in the averages).
    assert speaker_embedding_coverage(["I hike."], [], embed) == 0.0
    assert math.isnan(speaker_embedding_coverage([], ["nice"], embed))
    no_persona = _record("n", [], [], ["nice"])
    assert persona_embedding_coverage([record, no_persona], embed, threshold=0.5) == pytest.approx(2 / 3)
    assert math.isnan(persona_embedding_coverage([no_persona], embed))


def test_cached_embed_embeds_each_text_once():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return _hash_embed(texts)

    cached = cached_embed(embed)
    first = cached(["a", "b", "a"])
    second = cached(["b", "c"])
    assert calls == [["a", "b"], ["c"]]
    np.testing.assert_allclose(first[1], second[0])


def test_shuffled_personas_and_statistics():
    records = _conversations(5)
    shuffled = shuffled_personas(records, seed=0)
    assert all(s["user1_persona"] != r["user1_persona"] for s, r in zip(shuffled, records, strict=True))
    assert sorted(s["user1_persona"][0] for s in shuffled) == sorted(r["user1_persona"][0] for r in records)
    assert [s["turns"] for s in shuffled] == [r["turns"] for r in records]
    stats = embedding_statistics(records, _hash_embed)
    assert set(stats) == {
        "embedding_diversity_conversation",
        "embedding_diversity_utterance",
        "persona_embedding_coverage",
        "persona_embedding_coverage_shuffled",
    }
    assert all(0.0 <= value <= 2.0 for value in stats.values())
