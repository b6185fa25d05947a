"""Personas room: expansion (clusters, queries, dedup), profiles (redundancy, NLI consistency), pairing."""

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from spc_train.configs import ModelSpec
from spc_train.nli import ClassifierNli, NliError, Seq2SeqNli, load_nli
from spc_train.personas import (
    AttributeIndex,
    PersonaExpansionConfig,
    ProfileConstructionError,
    build_profiles,
    clean_attribute,
    clean_query,
    cluster_attributes,
    expand_personas,
    pair_users,
    persona_set_statistics,
    seed_attributes,
    shared_clusters,
)
from spc_train.personas.profiles import NEGATION_TEMPLATE, inconsistent_with, llm_negate

SPC_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "spc-fork" / "spc_train.jsonl.gz"
ZOO = ["I ride a yak.", "I keep a zebra.", "I like tea.", "I read books.", "I swim daily.", "I play chess.", "I bake."]
SEED = ["I have two dogs.", "I love my dog.", "My dog is a poodle.", "I work as a nurse.", "My job is teaching math."]


# -- fixtures -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed():
    """The real all-MiniLM-L6-v2 (offline copy), as the `embed` callable the loop wires."""
    from spc_train.models import load_embedder

    model = load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    return lambda texts: model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def hashed_embed(texts: list[str]) -> np.ndarray:
    """Random unit vectors keyed on the text: fast, deterministic, and never near-duplicates of each other."""
    rows = np.asarray([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(64) for t in texts])
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class ZeroNli:
    """An NLI backend that never sees entailment (for tests about redundancy or determinism only)."""

    def entailment(self, premises, hypotheses):
        return [0.0] * len(premises)


def marker_rule(premise: str, hypothesis: str) -> bool:
    """The controlled contradiction: a zebra keeper entails NOT(yak rider). Asymmetric, so each direction shows."""
    return "zebra" in premise and "NOT" in hypothesis and "yak" in hypothesis


def not_negate(attributes: list[str]) -> list[str]:
    return [f"NOT {a}" for a in attributes]


def _marker_logits(tokenizer, input_ids, split: str, width: int, yes: int, no: int) -> torch.Tensor:
    logits = torch.full((len(input_ids), width), -5.0)
    for row, text in enumerate(tokenizer.batch_decode(input_ids, skip_special_tokens=False)):
        premise, _, hypothesis = text.replace(tokenizer.pad_token, "").partition(split)
        logits[row, yes if marker_rule(premise, hypothesis) else no] = 5.0
    return logits


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer (spc_train.tiny's, with a pair template) trained in well under a second."""
    from spc_train.tiny import train_tokenizer

    corpus = ZOO + SEED + [f"premise: {a} hypothesis: NOT {b}" for a in ZOO for b in SEED] + ["0 1 2 3"]
    tokenizer = train_tokenizer(corpus, vocab_size=400)
    tokenizer.padding_side = "right"
    return tokenizer


@pytest.fixture(scope="module")
def nli_dir(tokenizer, tmp_path_factory) -> Path:
    """A tiny 3-label NLI classifier (spc_train.tiny's label order), saved like any Hub model."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    labels = ["entailment", "neutral", "contradiction"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        num_labels=3,
        id2label=dict(enumerate(labels)),
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("nli")
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_nli(tokenizer, nli_dir):
    """The tiny NLI classifier (real pair encoding and forward pass) with logits set by `marker_rule`."""
    from transformers import LlamaForSequenceClassification

    class MarkerClassifier(LlamaForSequenceClassification):
        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            output = super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
            output.logits = _marker_logits(tokenizer, input_ids, tokenizer.sep_token, 3, yes=0, no=1)
            return output

    return ClassifierNli(MarkerClassifier.from_pretrained(nli_dir).eval(), tokenizer)


def tiny_t5(tokenizer, cls=None):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return (cls or T5ForConditionalGeneration)(config).eval()


@pytest.fixture(scope="module")
def seq2seq_nli(tokenizer):
    """A tiny T5 read through `Seq2SeqNli`; its first-step logits for "1"/"0" are set by `marker_rule`."""
    from transformers import T5ForConditionalGeneration

    yes, no = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")

    class MarkerT5(T5ForConditionalGeneration):
        def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, **kwargs):
            assert decoder_input_ids.tolist() == [[self.config.decoder_start_token_id]] * len(input_ids)
            output = super().forward(
                input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids, **kwargs
            )
            marker = _marker_logits(tokenizer, input_ids, " hypothesis: ", output.logits.shape[-1], yes, no)
            output.logits = marker[:, None, :]
            return output

    return Seq2SeqNli(tiny_t5(tokenizer, MarkerT5), tokenizer, batch_size=3)


# -- seed set, clusters, statistics ---------------------------------------------------------------------------------
def test_seed_attributes_first_appearance_order():
    records = [
        {"user1_persona": ["I like tea. ", "I swim."], "user2_persona": ["I like tea.", ""]},
        {"user1_persona": ["I read."], "user2_persona": ["I swim.", "I bake."]},
    ]
    assert seed_attributes(records) == ["I like tea.", "I swim.", "I read.", "I bake."]


@pytest.mark.skipif(not SPC_TRAIN.exists(), reason="shared SPC train data not present")
def test_seed_attributes_of_spc_train_are_the_papers_4723():
    from spc_train.data import read_seed

    assert len(seed_attributes(read_seed(str(SPC_TRAIN)).records)) == 4723


def test_clusters_and_table1_statistics_on_known_vectors():
    vectors = np.array([[1, 0.05, 0], [1, -0.05, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = cluster_attributes(vectors, distance_threshold=0.1)
    assert labels.tolist() == [0, 0, 1, 2]  # numbered by first appearance
    texts = ["I'm here.", "I am here.", "My dog barks loudly.", "I swim."]
    stats = persona_set_statistics(texts, vectors, labels)
    assert stats["attributes"] == 4 and stats["clusters"] == 3
    assert stats["inter_cluster_distance"] == pytest.approx(1.0, abs=1e-6)  # three orthogonal centroids
    assert stats["mean_length_words"] == pytest.approx((2 + 3 + 4 + 2) / 4)
    assert stats["mean_length_tokens"] == pytest.approx((4 + 4 + 5 + 3) / 4)  # I 'm here . / ... / I swim .
    assert cluster_attributes(vectors[:1], 0.1).tolist() == [0]


def test_real_embedder_clusters_dogs_apart_from_jobs(embed):
    seed = [
        "I have two dogs.",
        "I love my dog.",
        "My dog is a poodle.",
        "I work as a nurse.",
        "My job is teaching math.",
    ]
    labels = cluster_attributes(embed(seed), PersonaExpansionConfig().distance_threshold)
    assert labels.tolist() == [0, 0, 0, 1, 1]


# -- clean-up and dedup ---------------------------------------------------------------------------------------------
def test_clean_query_and_attribute():
    assert clean_query("1. What do you do for a living\nmore text") == "What do you do for a living?"
    assert clean_query("  \n- Do you have pets?? ") == "Do you have pets?"
    assert clean_query(" \n ... ") is None
    assert clean_attribute('"My favorite food is sushi"\nExplanation') == ("My favorite food is sushi.", None)
    assert clean_attribute("I'm a nurse!!") == ("I'm a nurse.", None)
    assert clean_attribute("Sure! I am a nurse.") == (None, "not_first_person")
    assert clean_attribute("In my job I fly.") == (None, "not_first_person")
    assert clean_attribute("I grew.") == (None, "too_short")
    assert clean_attribute("I " + "really " * 40 + "like it.") == (None, "too_long")
    assert clean_attribute("   ") == (None, "empty")


def test_dedup_rejects_a_paraphrase_and_keeps_a_new_fact(embed):
    seed = ["I have two dogs.", "My favorite color is blue."]
    index = AttributeIndex(seed, embed(seed), threshold=0.9)
    paraphrase, new_fact = embed(["I own two dogs.", "I work night shifts as a nurse."])
    assert index.check("I own two dogs.", paraphrase) == "near_duplicate"
    assert index.check("i have TWO dogs", paraphrase) == "duplicate"
    assert index.check("I work night shifts as a nurse.", new_fact) is None
    index.add("I work night shifts as a nurse.", new_fact)
    assert index.check("I work night shifts as a nurse!", new_fact) == "duplicate"
    assert index.size == 3


# -- query induction, query bootstrapping, persona bootstrapping ----------------------------------------------------
PERSONA_ANSWERS = {  # query -> answer at step 1, step 2
    "Do you have pets?": ["I own two dogs.", "I have a cat named Tom."],
    "What do you do for a living?": ["I work as a firefighter in Boston", "I work as a firefighter in Boston city."],
    "What is your favorite food?": ["My favorite food is sushi!\nIt is great.", "Sure! I am a firefighter."],
    "Where did you grow up?": ["I grew.", "My favorite food is SUSHI."],
}


class CannedLLM:
    """A deterministic `complete`: answers keyed on the prompt's kind and content; records every prompt."""

    def __init__(self):
        self.prompts: list[str] = []
        self.bootstrap_answers = iter(
            ["What is your favorite food?", "   ", "do you have PETS", "Where did you grow up"]
        )
        self.asked: dict[str, int] = {}

    def __call__(self, prompts: list[str]) -> list[str]:
        self.prompts += prompts
        return [self.answer(p) for p in prompts]

    def answer(self, prompt: str) -> str:
        if prompt.startswith("What is the most specific question"):
            return "Do you have pets?\nAnd more." if "dog" in prompt else "1. What do you do for a living"
        if prompt.endswith("Add more persona questions similar to the above examples."):
            return next(self.bootstrap_answers)
        query = next(q for q in PERSONA_ANSWERS if q in prompt)
        self.asked[query] = self.asked.get(query, 0) + 1
        return PERSONA_ANSWERS[query][self.asked[query] - 1]


def test_expansion_with_canned_llm(embed):
    llm = CannedLLM()
    config = PersonaExpansionConfig(
        query_bootstrap_steps=4, max_bootstrap_steps=2, target_new_attributes=100, batch_size=2
    )
    result = expand_personas(SEED, embed=embed, complete=llm, config=config, seed=0)

    induction = [p for p in llm.prompts if p.startswith("What is the most specific")]
    assert len(induction) == 2  # one per cluster: dogs, jobs
    assert sum(a in induction[0] for a in SEED[:3]) == 3 and sum(a in induction[1] for a in SEED[3:]) == 2
    assert [(q["query"], q["source"], q["cluster"]) for q in result.queries] == [
        ("Do you have pets?", "induced", 0),
        ("What do you do for a living?", "induced", 1),
        ("What is your favorite food?", "bootstrapped", None),
        ("Where did you grow up?", "bootstrapped", None),
    ]
    assert result.rejections["queries"] == {"empty": 1, "duplicate": 1}

    persona_prompts = [p for p in llm.prompts if p.startswith("Imagine you are a person")]
    assert len(persona_prompts) == 8  # 2 steps x 4 queries
    assert "Do you have pets? Answer with only one short sentence that starts with 'I' or 'My'." in persona_prompts[0]
    generated = [(r["attribute"], r["query"]) for r in result.attributes if r["source"] == "generated"]
    assert generated == [
        ("I work as a firefighter in Boston.", "What do you do for a living?"),
        ("My favorite food is sushi.", "What is your favorite food?"),
        ("I have a cat named Tom.", "Do you have pets?"),
    ]
    assert result.rejections["attributes"] == {
        "near_duplicate": 2,  # "I own two dogs." (seed), "... Boston city." (new)
        "too_short": 1,
        "not_first_person": 1,
        "duplicate": 1,
    }
    assert [r["source"] for r in result.attributes] == ["seed"] * 5 + ["generated"] * 3
    assert result.embeddings.shape == (8, 384) and len(result.labels) == 8
    assert result.statistics["seed"]["attributes"] == 5 and result.statistics["expanded"]["attributes"] == 8
    assert result.statistics["generated"]["attributes"] == 3
    assert result.cluster_of()["I have two dogs."] == result.cluster_of()["My dog is a poodle."]


def test_expansion_stops_at_the_target(embed):
    llm = CannedLLM()
    config = PersonaExpansionConfig(
        query_bootstrap_steps=4, max_bootstrap_steps=5, target_new_attributes=2, batch_size=2
    )
    result = expand_personas(SEED, embed=embed, complete=llm, config=config)
    assert [r["attribute"] for r in result.attributes[5:]] == [
        "I work as a firefighter in Boston.",
        "My favorite food is sushi.",
    ]
    assert len([p for p in llm.prompts if p.startswith("Imagine")]) == 4  # stopped within step 1


def hashed_llm(prompt_log: list[str]):
    """A `complete` whose answer is a function of the prompt, so changed sampling shows up in the output."""

    def complete(prompts: list[str]) -> list[str]:
        prompt_log.extend(prompts)
        words = ["kites", "jazz", "tea", "chess", "rust", "opera", "moss", "tigers", "sailing", "clay", "bees"]
        answers = []
        for p in prompts:
            h = zlib.crc32(p.encode())
            if p.startswith("Imagine"):
                answers.append(f"I like {words[h % 11]} and {words[h // 11 % 11]} number {h % 97}.")
            else:
                answers.append(f"What do you think of {words[h % 11]} number {h % 89}?")
        return answers

    return complete


def test_expansion_is_deterministic_for_a_seed():
    seeds = [f"I like thing number {i}." for i in range(12)]
    config = PersonaExpansionConfig(distance_threshold=0.5, query_bootstrap_steps=6, max_bootstrap_steps=3)

    def run(seed):
        log: list[str] = []
        result = expand_personas(seeds, embed=hashed_embed, complete=hashed_llm(log), config=config, seed=seed)
        return result.attributes, result.queries, result.statistics, log

    first, again, other = run(3), run(3), run(4)
    assert first == again
    assert first[0] != other[0] and first[3] != other[3]


def test_expansion_input_errors():
    with pytest.raises(ValueError, match="No seed persona attributes"):
        expand_personas(["", "  "], embed=hashed_embed, complete=hashed_llm([]))
    with pytest.raises(ValueError, match="2 seed embeddings for 3"):
        expand_personas(["a", "b", "c"], embed=hashed_embed, complete=hashed_llm([]), seed_embeddings=np.eye(2))
    with pytest.raises(ValueError, match="dedup_threshold"):
        PersonaExpansionConfig(dedup_threshold=1.5)


# -- NLI backends ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["classifier_nli", "seq2seq_nli"])
def test_nli_backends_read_the_controlled_answer(backend, request):
    nli = request.getfixturevalue(backend)
    premises = ["I keep a zebra.", "I ride a yak.", "I keep a zebra.", "I keep a zebra."]
    hypotheses = ["NOT I ride a yak.", "NOT I keep a zebra.", "I ride a yak.", "NOT I like tea."]
    scores = nli.entailment(premises, hypotheses)
    assert [s > 0.99 for s in scores] == [True, False, False, False]
    assert all(0 <= s <= 1 for s in scores)


def test_seq2seq_nli_matches_generate_first_step(tokenizer):
    """Batched, padded scoring equals P("1") vs P("0") from `generate`'s own first-step logits, pair by pair."""
    model = tiny_t5(tokenizer)
    yes, no = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    premises = ["I swim.", "I keep a zebra in my big garden behind the old house.", "I like tea."]
    hypotheses = ["I do not swim.", "I have a pet.", "NOT I like tea and coffee in the morning."]
    scores = Seq2SeqNli(model, tokenizer, batch_size=2).entailment(premises, hypotheses)
    for premise, hypothesis, score in zip(premises, hypotheses, scores):
        encoded = tokenizer(f"premise: {premise} hypothesis: {hypothesis}", return_tensors="pt")
        out = model.generate(
            **encoded, max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        expected = torch.softmax(out.logits[0][0, [yes, no]], dim=-1)[0].item()
        assert score == pytest.approx(expected, abs=1e-5)


def test_load_nli_picks_the_backend_and_checks_labels(tokenizer, nli_dir, tmp_path):
    from transformers import LlamaConfig

    classifier = load_nli(ModelSpec(name_or_path=str(nli_dir)))
    assert isinstance(classifier, ClassifierNli) and classifier.entailment_id == 0 and classifier.contradiction_id == 2
    premises, hypotheses = ["I like tea.", "I swim every day before work."], ["I like tea.", "I do not swim."]
    scores = classifier.entailment(premises, hypotheses)  # one padded batch ...
    for premise, hypothesis, score in zip(premises, hypotheses, scores):  # ... equals each pair alone
        encoded = classifier.tokenizer(premise, hypothesis, return_tensors="pt")
        with torch.no_grad():
            alone = torch.softmax(classifier.model(**encoded).logits, dim=-1)[0, 0].item()
        assert score == pytest.approx(alone, abs=1e-5)

    tiny_t5(tokenizer).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    assert isinstance(load_nli(ModelSpec(name_or_path=str(tmp_path / "t5"))), Seq2SeqNli)

    # Config and tokenizer only, no weights: the label check must fail before any weights are read.
    LlamaConfig(vocab_size=len(tokenizer), id2label={0: "LABEL_0", 1: "LABEL_1"}).save_pretrained(tmp_path / "bad")
    tokenizer.save_pretrained(tmp_path / "bad")
    with pytest.raises(NliError, match="no entailment or contradiction label"):
        load_nli(ModelSpec(name_or_path=str(tmp_path / "bad")))
    LlamaConfig(id2label={0: "ENTAILMENT", 1: "not_entailment"}).save_pretrained(tmp_path / "binary")
    tokenizer.save_pretrained(tmp_path / "binary")
    with pytest.raises(NliError, match="no contradiction label"):
        load_nli(ModelSpec(name_or_path=str(tmp_path / "binary")))


# -- profiles -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["classifier_nli", "seq2seq_nli"])
def test_consistency_check_sees_both_directions(backend, request):
    nli = request.getfixturevalue(backend)
    negation = {a: f"NOT {a}" for a in ZOO}.__getitem__
    forward = inconsistent_with("I keep a zebra.", ["I like tea.", "I ride a yak."], nli, negation, 0.5)
    assert forward["clashed_with"] == "I ride a yak." and forward["direction"] == "candidate => not(member)"
    backward = inconsistent_with("I ride a yak.", ["I keep a zebra."], nli, negation, 0.5)
    assert backward["clashed_with"] == "I keep a zebra." and backward["direction"] == "member => not(candidate)"
    assert inconsistent_with("I like tea.", ["I keep a zebra.", "I ride a yak."], nli, negation, 0.5) is None


@pytest.mark.parametrize("backend", ["classifier_nli", "seq2seq_nli"])
def test_profiles_never_hold_a_contradictory_pair(backend, request):
    nli = request.getfixturevalue(backend)
    profiles, rejections = build_profiles(ZOO, np.eye(len(ZOO)), nli=nli, negate=not_negate, count=8, size=5, seed=1)
    assert len(profiles) == 8 and len({frozenset(p) for p in profiles}) == 8
    assert all(len(p) == 5 and not {"I ride a yak.", "I keep a zebra."} <= set(p) for p in profiles)
    inconsistent = [r for r in rejections if r["reason"] == "inconsistent"]
    assert inconsistent and all({r["candidate"], r["clashed_with"]} == set(ZOO[:2]) for r in inconsistent)

    # Of the C(5,4) = 5 profiles of 4 from ZOO[:5], 3 hold both the yak and the zebra: a 3rd cannot be built.
    with pytest.raises(ProfileConstructionError, match="Built 2 of 3 profiles: max_attempts=60") as error:
        build_profiles(ZOO[:5], np.eye(5), nli=nli, negate=not_negate, count=3, size=4, seed=0, max_attempts=60)
    assert len(error.value.profiles) == 2 and "duplicate_profile" in str(error.value)


def test_profiles_reject_redundant_attributes(embed):
    attributes = ["I have two dogs.", "I own two dogs.", "I like tea.", "I read books.", "I swim daily.", "I sing."]
    attributes += ["I drive a truck.", "I grow tomatoes."]
    profiles, rejections = build_profiles(
        attributes, embed(attributes), nli=ZeroNli(), negate=not_negate, count=5, size=5, seed=0
    )
    assert len(profiles) == 5 and all(not {"I have two dogs.", "I own two dogs."} <= set(p) for p in profiles)
    redundant = [r for r in rejections if r["reason"] == "redundant"]
    assert redundant and all(r["score"] > 0.9 for r in redundant)
    assert all({r["candidate"], r["clashed_with"]} == set(attributes[:2]) for r in redundant)


class RecordingNli(ZeroNli):
    def __init__(self):
        self.hypotheses: list[str] = []

    def entailment(self, premises, hypotheses):
        self.hypotheses += hypotheses
        return super().entailment(premises, hypotheses)


@pytest.mark.parametrize("count", [1, 6])  # lazy negation (a few attributes needed) and all up front
def test_llm_negations_are_written_once_and_reach_nli(count):
    attributes = [f"I like thing number {i}." for i in range(12)]
    asked: list[str] = []

    def complete(prompts):
        asked.extend(prompts)
        return ["\n It is false that " + p.split("Statement: ")[1].split("\n")[0] + "\nbecause" for p in prompts]

    nli = RecordingNli()
    build_profiles(
        attributes,
        hashed_embed(attributes),
        nli=nli,
        negate=llm_negate(complete),
        count=count,
        size=3,
        negation_batch_size=2,
    )
    statements = [p.split("Statement: ")[1].split("\n")[0] for p in asked]
    assert len(statements) == len(set(statements)) and asked[0].startswith(NEGATION_TEMPLATE.split("{")[0])
    assert (len(statements) < len(attributes)) == (count == 1)
    assert nli.hypotheses and all(h.startswith("It is false that I like thing number") for h in nli.hypotheses)


def test_profiles_are_deterministic_for_a_seed():
    attributes = [f"I like thing number {i}." for i in range(30)]
    vectors = hashed_embed(attributes)

    def build(seed):
        return build_profiles(attributes, vectors, nli=ZeroNli(), negate=not_negate, count=6, seed=seed)[0]

    assert build(5) == build(5) and build(5) != build(6)


def test_profile_input_errors():
    with pytest.raises(ProfileConstructionError, match="non-empty attribute set"):
        build_profiles([], np.zeros((0, 3)), nli=ZeroNli(), negate=not_negate, count=1)
    with pytest.raises(ProfileConstructionError, match="need at least 8 attributes; got 7"):
        build_profiles(ZOO, np.eye(7), nli=ZeroNli(), negate=not_negate, count=1, size=8)
    with pytest.raises(ProfileConstructionError, match="allow only 21"):
        build_profiles(ZOO, np.eye(7), nli=ZeroNli(), negate=not_negate, count=22, size=5)
    with pytest.raises(ValueError, match="6 embeddings for 7 attributes"):
        build_profiles(ZOO, np.eye(6), nli=ZeroNli(), negate=not_negate, count=1)


# -- pairing --------------------------------------------------------------------------------------------------------
CLUSTER_OF = {"a1": 0, "a2": 0, "b1": 1, "b2": 1, "c1": 2, "d1": 3, "e1": 4}
PROFILES = [
    ["a1", "b1", "c1"],  # 0
    ["a2", "b2", "c1"],  # 1: with 0 -> a1-a2, b1-b2, c1-c1 = 3
    ["a1", "a2", "d1"],  # 2: with 0 -> a1-a1, a1-a2 = 2 (not > 2); with 1 -> 2; with 3 -> 2 x 2 = 4
    ["a1", "a2", "b1"],  # 3: with 0 -> 2 + 1 = 3; with 1 -> 2 + 1 = 3
    ["d1", "e1", "c1"],  # 4: at most 1 with anyone
    ["c1", "b1", "a1"],  # 5: profile 0 again (shares 3 with 1 and 3 with 3, and is excluded against 0)
]


def test_shared_clusters_hand_computed():
    assert shared_clusters(PROFILES[0], PROFILES[1], CLUSTER_OF) == 3
    assert shared_clusters(PROFILES[0], PROFILES[2], CLUSTER_OF) == 2
    assert shared_clusters(PROFILES[2], PROFILES[3], CLUSTER_OF) == 4
    assert shared_clusters(PROFILES[3], PROFILES[4], CLUSTER_OF) == 0
    with pytest.raises(KeyError, match="'zz' of profile B has no cluster"):
        shared_clusters(["a1"], ["zz"], CLUSTER_OF)


def _pairs(records):
    return [(r["pair_id"], r["shared_clusters"]) for r in records]


def test_pairing_rule_and_limits():
    records = pair_users(PROFILES, CLUSTER_OF)
    assert _pairs(records) == [
        ("pair-0-1", 3),
        ("pair-0-3", 3),
        ("pair-1-3", 3),
        ("pair-1-5", 3),
        ("pair-2-3", 4),
        ("pair-3-5", 3),
    ]
    assert records[0] == {
        "pair_id": "pair-0-1",
        "user1_persona": PROFILES[0],
        "user2_persona": PROFILES[1],
        "shared_clusters": 3,
        "source": "generated",
    }
    looser = _pairs(pair_users(PROFILES, CLUSTER_OF, min_shared=1))
    assert ("pair-0-2", 2) in looser and ("pair-1-2", 2) in looser and len(looser) == 9
    assert _pairs(pair_users(PROFILES, CLUSTER_OF, min_shared=3)) == [("pair-2-3", 4)]

    for seed in range(5):
        capped = pair_users(PROFILES, CLUSTER_OF, partners_per_user=1, seed=seed)
        users = [int(u) for r in capped for u in r["pair_id"].split("-")[1:]]
        assert len(users) == len(set(users)) and 1 <= len(capped) <= 2  # users 0, 1, 2, 3, 5: at most 2 disjoint pairs
        assert set(_pairs(capped)) <= set(_pairs(records))
        assert len(pair_users(PROFILES, CLUSTER_OF, max_pairs=2, seed=seed)) == 2
    assert pair_users(PROFILES, CLUSTER_OF, max_pairs=0) == []
    with pytest.raises(ValueError, match="partners_per_user"):
        pair_users(PROFILES, CLUSTER_OF, partners_per_user=0)


def test_pairing_is_deterministic_for_a_seed():
    outcomes = [tuple(_pairs(pair_users(PROFILES, CLUSTER_OF, partners_per_user=1, seed=s))) for s in range(8)]
    again = [tuple(_pairs(pair_users(PROFILES, CLUSTER_OF, partners_per_user=1, seed=s))) for s in range(8)]
    assert outcomes == again and len(set(outcomes)) > 1
