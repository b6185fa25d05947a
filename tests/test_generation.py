"""The generator: the paper's prompt, few-shot examples, batch planning, sampling, shards and resume.

Sampling runs a tiny random Llama with a tokenizer trained in-test; nothing is downloaded.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_llama_config

from spc_train.data.prompts import INSTRUCTION, REQUEST, generator_prompt, render
from spc_train.generation import engine
from spc_train.generation.candidates import (
    fit_prompt,
    generate_shards,
    parse_candidate,
    pick_examples,
)
from spc_train.generation.continuous import sample_conversations_continuous
from spc_train.generation.engine import Sample, plan_batches, sample_conversations, stop_token_ids
from spc_train.generation.sampling import GumbelMaxSampler, hash32, row_key
from spc_train.runs import read_shards

# PAPER.md §1.4 (Table 6 of the paper), word for word.
PAPER_INSTRUCTION = (
    "Here, we list the profiles of two users, user 1 and user 2, followed by an interesting and natural conversation "
    "between user 1 and user 2, which implicitly reflects their user profiles."
)
PAPER_REQUEST = (
    "Give me more examples like this. The conversation must be more than 5 turns and less than 8 turns. The "
    "conversation must be natural, and not direct copies of their profiles."
)


def record(pair_id: str, user1: list[str], user2: list[str], *lines: str) -> dict:
    return {
        "pair_id": pair_id,
        "user1_persona": user1,
        "user2_persona": user2,
        "turns": [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(lines)],
    }


PAIRS = [
    record(f"pair-{i}", [f"I have {i} cats.", "I like to swim."], [f"I live in city {i}.", "I play the guitar."])
    for i in range(5)
]
POOL = [
    record("pair-0", ["I have 0 cats."], ["I live in city 0."], "hi, do you have cats?", "no, I live in a city."),
    record("seed-a", ["I love hiking."], ["I am a nurse."], "hello, do you hike?", "yes, every weekend.", "nice!"),
    record("seed-b", ["I bake bread."], ["I have a dog."], "I baked bread today.", "my dog would love it."),
    record("seed-c", ["I am a teacher."], ["I play chess."], "what do you teach?", "math. do you play chess?"),
    record("pair-1", ["I have 1 cats."], ["I live in city 1."], "I have a cat.", "I live in the city."),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    from spc_train.tiny import train_tokenizer

    texts = [INSTRUCTION, REQUEST] + [generator_prompt(r, [POOL[1], POOL[2]]) for r in PAIRS + POOL]
    return train_tokenizer(texts * 3, vocab_size=600)


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(tok)


def tiny_llama(tok, seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config(tok, eos_token_id=tok.eos_token_id, bos_token_id=None)
    return LlamaForCausalLM(config).eval()


def as_tuples(results: list[list[Sample]]) -> list[list[tuple]]:
    return [[(s.text, s.num_tokens, s.finish_reason) for s in samples] for samples in results]


# -- the prompt ---------------------------------------------------------------------------------------------------
def test_generator_prompt_follows_the_paper_template():
    assert INSTRUCTION == PAPER_INSTRUCTION
    assert REQUEST == PAPER_REQUEST
    target = record("t", ["I like cats.", "I swim."], ["I have a dog."])
    example = record("e", ["I bake."], ["I run.", "I sing."], "hi", "hello")
    other = record("o", ["I read."], ["I write."], "books?", "pens!")

    assert generator_prompt(target, [example, other]) == (
        f"{PAPER_INSTRUCTION}\n\n"
        "User 1 Profile: I bake.\nUser 2 Profile: I run. I sing.\nConversation:\nUser 1: hi\nUser 2: hello\n\n"
        "User 1 Profile: I read.\nUser 2 Profile: I write.\nConversation:\nUser 1: books?\nUser 2: pens!\n\n"
        f"{PAPER_REQUEST}\n"
        "User 1 Profile: I like cats. I swim.\nUser 2 Profile: I have a dog."
    )
    # Zero-shot: the same frame without examples; the target's own turns never appear.
    zero_shot = generator_prompt({**target, "turns": [{"speaker": 1, "text": "SECRET"}]}, [])
    assert zero_shot == (
        f"{PAPER_INSTRUCTION}\n\n{PAPER_REQUEST}\nUser 1 Profile: I like cats. I swim.\nUser 2 Profile: I have a dog."
    )
    assert "Conversation:" not in zero_shot


def test_render_uses_the_chat_template_or_a_completion_cue(tok):
    prompt = generator_prompt(PAIRS[0], [])
    assert render(tok, prompt) == f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert render(SimpleNamespace(chat_template=None), prompt) == prompt + "\nConversation:\n"


def test_fit_prompt_drops_examples_from_the_end_until_the_prompt_fits(tok):
    pair, examples = PAIRS[2], POOL[1:4]

    def length(k):
        return len(tok(render(tok, generator_prompt(pair, examples[:k])), add_special_tokens=False)["input_ids"])

    lengths = [length(k) for k in range(4)]
    assert lengths == sorted(set(lengths))  # strictly longer with every example

    for budget, expected in [
        (None, 3),
        (lengths[3], 3),
        (lengths[3] - 1, 2),
        (lengths[2], 2),
        (lengths[1] + 1, 1),
        (lengths[1] - 1, 0),
        (lengths[0], 0),
        (1, 0),  # too small even for the target alone: the target-only prompt all the same
    ]:
        text, used = fit_prompt(tok, pair, examples, budget)
        assert used == expected, budget
        assert text == render(tok, generator_prompt(pair, examples[:expected]))
    assert fit_prompt(tok, pair, [], 1) == (render(tok, generator_prompt(pair, [])), 0)


def test_pick_examples_excludes_the_pairs_own_conversations_and_is_deterministic():
    pair = PAIRS[0]
    for seed in range(30):
        picked = pick_examples(POOL, pair, 2, seed=seed, iteration=1)
        assert len(picked) == 2
        assert all(example["pair_id"] != "pair-0" for example in picked)
        random.seed(seed)  # the global random state plays no part
        assert pick_examples(POOL, pair, 2, seed=seed, iteration=1) == picked
    # Only the pair's id matters, not its other fields nor what was picked for other pairs before.
    again = pick_examples(POOL, {"pair_id": "pair-0"}, 2, seed=7, iteration=1)
    pick_examples(POOL, PAIRS[3], 2, seed=7, iteration=1)
    assert pick_examples(POOL, pair, 2, seed=7, iteration=1) == again

    # The draw depends on each of seed, iteration and pair id (pairs 2-4 have no conversation in the pool).
    def draws(pairs, seeds, iterations):
        return {
            tuple(r["pair_id"] for r in pick_examples(POOL, p, 2, seed=s, iteration=i))
            for p in pairs
            for s in seeds
            for i in iterations
        }

    assert len(draws(PAIRS[2:5], [0], [0])) > 1
    assert len(draws(PAIRS[2:3], range(10), [0])) > 1
    assert len(draws(PAIRS[2:3], [0], range(10))) > 1
    # Asking for more than there are gives all the others (in some order); none gives none.
    everything = pick_examples(POOL, pair, 10, seed=0, iteration=0)
    assert sorted(r["pair_id"] for r in everything) == ["pair-1", "seed-a", "seed-b", "seed-c"]
    assert pick_examples(POOL, pair, 0, seed=0, iteration=0) == []


# -- planning and sampling --------------------------------------------------------------------------------------------
def test_plan_batches_exact():
    # Longest first: 50 | 30, 30 | 10, 5 under 200 tokens (padded width + 10 new tokens) x 2 samples x batch size.
    assert plan_batches([10, 50, 30, 30, 5], max_new_tokens=10, n=2, batch_tokens=200) == [[1], [2, 3], [0, 4]]
    # A prompt over the budget on its own still gets a batch of its own.
    assert plan_batches([500, 20, 20], max_new_tokens=10, n=2, batch_tokens=200) == [[0], [1, 2]]
    assert plan_batches([], max_new_tokens=10, n=2, batch_tokens=200) == []


@pytest.mark.parametrize("seed", range(5))
def test_plan_batches_properties(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 60))]
    max_new, n, budget = rng.randint(1, 50), rng.randint(1, 4), rng.randint(100, 3000)
    batches = plan_batches(lengths, max_new, n, budget)

    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every prompt exactly once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        width = max(lengths[i] for i in batch) + max_new
        assert len(batch) == 1 or width * n * len(batch) <= budget
    # Greedy: the next prompt would not have fitted into the previous batch.
    for batch, following in zip(batches, batches[1:]):
        width = max(lengths[i] for i in batch + following[:1]) + max_new
        assert width * n * (len(batch) + 1) > budget


def test_stop_token_ids(model, tok):
    assert stop_token_ids(model, tok) == [tok.eos_token_id]
    model.generation_config.eos_token_id = [tok.eos_token_id, 7]
    try:
        assert stop_token_ids(model, tok) == sorted({tok.eos_token_id, 7})
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id


def prompts_and_keys(tok, count=3):
    prompts = [render(tok, generator_prompt(PAIRS[i], POOL[1 : 1 + i % 3])) for i in range(count)]
    return prompts, [p["pair_id"] for p in PAIRS[:count]]


def sample(model, tok, prompts, keys, *, n=2, max_new_tokens=5, batch_tokens=100_000, seed=0, **kwargs):
    kwargs = {"do_sample": True, "top_k": 50, "max_new_tokens": max_new_tokens, **kwargs}
    return sample_conversations(
        model, tok, prompts, keys, n=n, generation_kwargs=kwargs, batch_tokens=batch_tokens, seed=seed
    )


def test_sample_conversations_shape_length_and_determinism(model, tok):
    prompts, keys = prompts_and_keys(tok)
    assert len({len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"]}) == 3
    no_stop = {"suppress_tokens": [tok.eos_token_id]}
    results = sample(model, tok, prompts, keys, n=3, **no_stop)

    assert [len(samples) for samples in results] == [3, 3, 3]
    for samples in results:
        for s in samples:
            assert s.num_tokens == 5 and s.finish_reason == "length"
            assert s.text == s.text.strip()
    assert len({s.text for samples in results for s in samples}) == 9  # a random model does not repeat itself

    assert as_tuples(sample(model, tok, prompts, keys, n=3, **no_stop)) == as_tuples(results)
    assert as_tuples(sample(model, tok, prompts, keys, n=3, seed=1, **no_stop)) != as_tuples(results)
    # Each candidate's noise is keyed by (seed, prompt key, candidate): the input order does not matter.
    shuffled = sample(model, tok, prompts[::-1], keys[::-1], n=3, **no_stop)
    assert as_tuples(shuffled[::-1]) == as_tuples(results)


def test_a_candidate_does_not_depend_on_its_batch(model, tok):
    prompts, keys = prompts_and_keys(tok)
    together = sample(model, tok, prompts, keys, batch_tokens=1_000_000)  # one left-padded batch of three prompts
    for i in range(3):  # each prompt alone: another batch, another padding width
        assert as_tuples(sample(model, tok, [prompts[i]], [keys[i]])) == as_tuples([together[i]])


def test_gumbel_max_draws_from_the_filtered_softmax():
    """Many rows (keys) over the same logits: frequencies follow softmax(logits / T) over the top-k, nothing else."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 5.0])  # token 4 is outside the top-k once -inf'd below
    logits[4] = float("-inf")
    rows = 20_000
    keys = [row_key(0, "pair", row) for row in range(rows)]
    sampler = GumbelMaxSampler(keys, prompt_width=7, top_k=3)
    out = sampler(torch.zeros(rows, 9, dtype=torch.long), logits.repeat(rows, 1))
    assert torch.isfinite(out).sum(-1).eq(1).all()  # exactly one token kept per row
    picked = out.argmax(-1)
    frequencies = torch.bincount(picked, minlength=5).double() / rows
    expected = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), -1).double()
    assert torch.allclose(frequencies[:3], expected, atol=0.015), frequencies
    assert frequencies[3:].sum() == 0  # outside the top 3
    # The noise is a function of (row key, step, token): a row draws the same alone as among others.
    alone = GumbelMaxSampler(keys[5:6], prompt_width=7, top_k=3)(torch.zeros(1, 9, dtype=torch.long), logits[None])
    assert alone.argmax(-1).item() == picked[5].item()
    later = sampler(torch.zeros(rows, 10, dtype=torch.long), logits.repeat(rows, 1)).argmax(-1)
    assert (later != picked).any()  # another step, other noise


def test_hash32_matches_the_reference_integer_mixer():
    def reference(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 0xFFFFFFFF, 0x80000000, 987654321]
    assert hash32(torch.tensor(values)).tolist() == [reference(v) for v in values]


class StopAfter:
    """A logits processor that makes sample j of every prompt end with `stop_id` after j + 1 tokens."""

    def __init__(self, n, stop_id):
        self.n, self.stop_id, self.prompt_width = n, stop_id, None

    def __call__(self, input_ids, scores):
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_width
        for row in range(scores.shape[0]):
            if step == row % self.n + 1:
                scores[row] = -float("inf")
                scores[row, self.stop_id] = 0.0
        return scores


def test_samples_end_at_the_first_stop_token(model, tok):
    from transformers import LogitsProcessorList

    prompts, keys = prompts_and_keys(tok)
    processor = StopAfter(n=3, stop_id=tok.eos_token_id)
    results = sample(model, tok, prompts, keys, n=3, logits_processor=LogitsProcessorList([processor]))
    for samples in results:
        assert [(s.num_tokens, s.finish_reason) for s in samples] == [(1, "stop"), (2, "stop"), (3, "stop")]
        for s in samples:
            assert "<|im_end|>" not in s.text and "<|endoftext|>" not in s.text


class FakeTokenizer:
    """Just enough of a tokenizer for `sample_conversations` when `_generate` is faked: one token per character."""

    padding_side, eos_token_id, pad_token_id, unk_token_id = "right", None, 0, None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(range(len(text))) for text in texts]}

    def convert_tokens_to_ids(self, token):
        return None


def test_out_of_memory_halves_the_batch_and_loses_nothing(monkeypatch):
    calls = []

    def fake_generate(model, tokenizer, prompts, n, generation_kwargs, stop_ids, row_keys):
        calls.append((list(prompts), row_keys))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [[Sample(f"{p}#{j}", j, "length") for j in range(n)] for p in prompts]

    monkeypatch.setattr(engine, "_generate", fake_generate)
    tokenizer = FakeTokenizer()
    prompts = ["ccc", "a", "eeeee", "bb", "dddd"]
    keys = [f"key-{p}" for p in prompts]
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
    progress = SimpleNamespace(done=[])
    progress.update = progress.done.append

    results = sample_conversations(
        model,
        tokenizer,
        prompts,
        keys,
        n=2,
        generation_kwargs={"max_new_tokens": 1},
        batch_tokens=10_000,
        seed=5,
        progress=progress,
    )
    assert [[s.text for s in samples] for samples in results] == [[f"{p}#0", f"{p}#1"] for p in prompts]
    # Longest first: all 5 fail, then 2 (fit) + 3 (fail), then 1 + 2.
    assert [batch for batch, _ in calls] == [
        ["eeeee", "dddd", "ccc", "bb", "a"],
        ["eeeee", "dddd"],
        ["ccc", "bb", "a"],
        ["ccc"],
        ["bb", "a"],
    ]
    # Every retried half keeps its candidates' own keys.
    for batch, row_keys in calls:
        assert row_keys == [row_key(5, f"key-{p}", j) for p in batch for j in range(2)]
    assert progress.done == [2, 1, 2]
    assert tokenizer.padding_side == "left"

    def always_oom(*args):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(engine, "_generate", always_oom)
    with pytest.raises(torch.OutOfMemoryError):
        sample_conversations(model, tokenizer, ["x"], ["k"], n=1, generation_kwargs={}, batch_tokens=10_000, seed=0)


def test_out_of_memory_with_a_real_model(model, tok, monkeypatch):
    prompts, keys = prompts_and_keys(tok)
    real = engine._generate
    sizes = []

    def small_memory(model, tokenizer, batch, *args):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.OutOfMemoryError("simulated")
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(engine, "_generate", small_memory)
    halved = sample(model, tok, prompts, keys)
    assert sizes == [3, 1, 2, 1, 1]
    monkeypatch.setattr(engine, "_generate", real)
    # Down to one prompt per batch, each prompt gets exactly what it gets when it runs alone.
    assert as_tuples(halved) == as_tuples(sample(model, tok, prompts, keys, batch_tokens=1))


# -- shards and resume ------------------------------------------------------------------------------------------------
def generation_args(**overrides) -> SimpleNamespace:
    args = {
        "shard_size": 2,
        "max_prompt_tokens": None,
        "max_new_tokens": 6,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
        "num_candidates": 2,
        "batch_tokens": 100_000,
        "min_turns": 2,
        "truncated": "drop_last_turn",
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "backend": "generate",
    }
    return SimpleNamespace(**{**args, **overrides})


def run_shards(model, tok, folder, **kwargs):
    options = {"args": generation_args(), "seed": 3, "iteration": 1, "few_shot_examples": 2, **kwargs}
    return generate_shards(model, tok, PAIRS, POOL, folder, **options)


def test_generate_shards_writes_every_shard_and_resumes_only_the_missing_one(model, tok, tmp_path):
    folder = tmp_path / "candidates"
    stats = run_shards(model, tok, folder)
    assert stats["shards_generated"] == 3 and stats["num_shards"] == 3
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]

    rows = read_shards(folder, 3)
    assert [(r["pair_id"], r["candidate"]) for r in rows] == [(p["pair_id"], c) for p in PAIRS for c in range(2)]
    for r in rows:
        assert r["iteration"] == 1 and r["few_shot_examples"] == 2
        assert r["user1_persona"] == PAIRS[int(r["pair_id"][-1])]["user1_persona"]
        assert 0 <= r["num_tokens"] <= 6
        assert r["finish_reason"] == ("length" if r["num_tokens"] == 6 else "stop")
        assert isinstance(r["text"], str)
        assert r["truncated"] == (r["finish_reason"] != "stop")
        fields = ("turns", "parsed", "reject_reason", "skipped_lines", "truncated", "dropped_unfinished_turn")
        assert {k: r[k] for k in fields} == parse_candidate(r["text"], 2, finish_reason=r["finish_reason"])
    assert stats["new_tokens"] == sum(r["num_tokens"] for r in rows)
    assert stats["examples_dropped"] == 0

    untouched = {name: (folder / name).stat().st_mtime_ns for name in ("shard-00000.jsonl", "shard-00002.jsonl")}
    (folder / "shard-00001.jsonl").unlink()
    assert read_shards(folder, 3) is None

    again = run_shards(model, tok, folder)
    assert again["shards_generated"] == 1 and again["num_shards"] == 3
    assert again["new_tokens"] == sum(r["num_tokens"] for r in rows[4:8])
    assert read_shards(folder, 3) == rows
    assert {name: (folder / name).stat().st_mtime_ns for name in untouched} == untouched
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left behind

    # Another process owns shard 1 of 3 when two share the work, and writes the same rows.
    other = tmp_path / "process-1"
    split = run_shards(model, tok, other, process_index=1, num_processes=2)
    assert split["shards_generated"] == 1
    assert sorted(p.name for p in other.iterdir()) == ["shard-00001.jsonl"]
    assert read_shards(other, 2) is None
    assert (other / "shard-00001.jsonl").read_text() == (folder / "shard-00001.jsonl").read_text()

    # Nothing is missing: nothing to do.
    assert run_shards(model, tok, folder)["shards_generated"] == 0


def test_generate_shards_drops_examples_to_fit_the_prompt_budget(model, tok, tmp_path):
    args = generation_args(max_prompt_tokens=1, shard_size=10)
    stats = generate_shards(model, tok, PAIRS[:2], POOL, tmp_path, args=args, seed=0, iteration=0, few_shot_examples=2)
    assert stats["examples_dropped"] == 4
    rows = read_shards(tmp_path, 1)
    assert [r["few_shot_examples"] for r in rows] == [0, 0, 0, 0]
    assert [r["source"] for r in rows] == ["generated:iter-00"] * 4


# -- the continuous-batching backend ----------------------------------------------------------------------------------
def sample_continuous(model, tok, prompts, keys, *, n=2, max_new_tokens=5, seed=0, **kwargs):
    kwargs = {"do_sample": True, "top_k": 50, "max_new_tokens": max_new_tokens, **kwargs}
    return sample_conversations_continuous(
        model, tok, prompts, keys, n=n, generation_kwargs=kwargs, batch_tokens=1024, seed=seed
    )


def test_continuous_backend_decodes_like_generate_in_the_prompts_order(model, tok):
    """Greedy, both backends must produce the same text per prompt: same order, same decoding, same stops."""
    prompts = ["User 1: hi, do you have cats?", "User 1: I baked bread today.", "User 1: what do you teach?"]
    keys = ["a", "b", "c"]
    greedy = {"do_sample": False, "max_new_tokens": 6}
    continuous = sample_continuous(model, tok, prompts, keys, n=1, **greedy)
    assert as_tuples(continuous) == as_tuples(sample(model, tok, prompts, keys, n=1, **greedy))
    assert len({samples[0].text for samples in continuous}) > 1  # the prompts continue differently: order shows

    # End of turn: make the token greedy decoding emits third for prompt 0 a stop token; it ends there.
    ids = tok(prompts[0], add_special_tokens=False)["input_ids"]
    third = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=3)[0, len(ids) + 2].item()
    model.generation_config.eos_token_id = [tok.eos_token_id, third]
    try:
        stopped = sample_continuous(model, tok, prompts[:1], keys[:1], n=1, **greedy)[0][0]
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    assert (stopped.num_tokens, stopped.finish_reason) == (2, "stop")
    assert continuous[0][0].text.startswith(stopped.text)


def test_continuous_backend_samples_n_candidates_seeded_per_call(model, tok):
    prompts, keys = prompts_and_keys(tok)
    results = sample_continuous(model, tok, prompts, keys, n=3)
    assert [len(samples) for samples in results] == [3, 3, 3]
    for samples in results:
        for s in samples:
            assert s.finish_reason == ("length" if s.num_tokens == 5 else "stop") and s.num_tokens <= 5
    assert len({s.text for samples in results for s in samples}) > 3  # sampled, not one text per prompt
    assert as_tuples(sample_continuous(model, tok, prompts, keys, n=3)) == as_tuples(results)
    assert as_tuples(sample_continuous(model, tok, prompts, keys, n=3, seed=1)) != as_tuples(results)


def test_continuous_backend_runs_the_adapter(tok):
    from peft import LoraConfig, get_peft_model

    base = tiny_llama(tok)
    prompts, keys = prompts_and_keys(tok)
    greedy = {"do_sample": False, "max_new_tokens": 6}
    before = as_tuples(sample_continuous(base, tok, prompts, keys, n=1, **greedy))
    torch.manual_seed(0)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    after = as_tuples(sample_continuous(adapted, tok, prompts, keys, n=1, **greedy))
    assert after != before  # the LoRA layers are in the forward pass
    assert after == as_tuples(sample(adapted, tok, prompts, keys, n=1, **greedy))


class OutOfMemoryUntil:
    """A stand-in for a model's `generate_batch`: out of memory while the paged cache has more than `fits` blocks,
    raised (`how="raise"`) or reported on the requests as transformers' manager does (`how="report"`)."""

    device = torch.device("cpu")

    def __init__(self, tok, fits: int, how: str):
        self.tok, self.fits, self.how, self.blocks = tok, fits, how, []
        self.generation_config = SimpleNamespace(eos_token_id=tok.eos_token_id)

    def generate_batch(self, inputs, generation_config, continuous_batching_config, warmup):
        self.blocks.append(continuous_batching_config.num_blocks)
        full = continuous_batching_config.num_blocks > self.fits
        if full and self.how == "raise":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        error = "CUDA out of memory. Tried to allocate 2.00 GiB" if full else None
        n = generation_config.num_return_sequences
        return {
            f"req_{i}__{j}": SimpleNamespace(error=error, generated_tokens=[7 + i, self.tok.eos_token_id])
            for i in range(len(inputs))
            for j in range(n)
        }


@pytest.mark.parametrize("how", ["raise", "report"])
def test_continuous_backend_halves_its_cache_on_out_of_memory_and_loses_nothing(tok, how):
    model = OutOfMemoryUntil(tok, fits=2, how=how)
    kwargs = {"do_sample": True, "max_new_tokens": 4}
    results = sample_conversations_continuous(
        model, tok, ["a", "b", "c"], ["x", "y", "z"], n=2, generation_kwargs=kwargs, batch_tokens=2048, seed=0
    )
    assert model.blocks == [8, 4, 2]  # 2048 tokens = 8 blocks of 256, halved until it fits
    assert [[(s.num_tokens, s.finish_reason) for s in samples] for samples in results] == [[(1, "stop")] * 2] * 3
    assert [samples[0].text for samples in results] == [tok.decode([7 + i]).strip() for i in range(3)]

    never = OutOfMemoryUntil(tok, fits=0, how=how)  # not even one block: an error, nothing written
    with pytest.raises((torch.OutOfMemoryError, RuntimeError), match="out of memory|failed"):
        sample_conversations_continuous(
            never, tok, ["a"], ["x"], n=1, generation_kwargs=kwargs, batch_tokens=512, seed=0
        )
    assert never.blocks == [2, 1]


def test_generate_shards_with_the_continuous_backend_resumes_to_the_same_rows(model, tok, tmp_path):
    args = generation_args(backend="continuous", batch_tokens=1024)
    folder = tmp_path / "candidates"
    assert run_shards(model, tok, folder, args=args)["shards_generated"] == 3
    rows = read_shards(folder, 3)
    assert [(r["pair_id"], r["candidate"]) for r in rows] == [(p["pair_id"], c) for p in PAIRS for c in range(2)]
    (folder / "shard-00001.jsonl").unlink()
    assert run_shards(model, tok, folder, args=args)["shards_generated"] == 1
    assert read_shards(folder, 3) == rows  # the regenerated shard is the one an uninterrupted run wrote
    other = tmp_path / "process-1"
    run_shards(model, tok, other, args=args, process_index=1, num_processes=2)
    assert (other / "shard-00001.jsonl").read_text() == (folder / "shard-00001.jsonl").read_text()


# -- parsing candidates -----------------------------------------------------------------------------------------------
def test_parse_candidate():
    text = "User 1: hi\nUser 2: hello\nUser 1: how are you\nUser 2: fine"
    parsed = parse_candidate(text, min_turns=4)
    assert parsed == {
        "turns": [
            {"speaker": 1, "text": "hi"},
            {"speaker": 2, "text": "hello"},
            {"speaker": 1, "text": "how are you"},
            {"speaker": 2, "text": "fine"},
        ],
        "parsed": True,
        "reject_reason": "",
        "skipped_lines": 0,
        "truncated": False,
        "dropped_unfinished_turn": False,
    }
    too_short = parse_candidate(text, min_turns=5)
    assert too_short["parsed"] is False and too_short["reject_reason"] == "too_few_turns: 4 < 5"
    one_speaker = parse_candidate("User 1: hi\nUser 1: hello\nUser 1: anyone?\nUser 1: no?", min_turns=4)
    assert one_speaker["parsed"] is False and len(one_speaker["turns"]) == 4
    assert one_speaker["reject_reason"] == "one_speaker: only user 1"
    noisy = parse_candidate("Sure! Here it is:\nUser 1: hi\nUser 2: hey\n(they leave)", min_turns=2)
    assert noisy["parsed"] is True and noisy["skipped_lines"] == 2 and noisy["reject_reason"] == ""
    echoed = parse_candidate("Conversation:\nUser 1: hi\nUser 2: hey", min_turns=2)  # the prompt's own header
    assert echoed["parsed"] is True
    for garbage in ["", "\n\n", "User 3: who?", "::::", "\x00\ufffd", "User 1:"]:
        result = parse_candidate(garbage, min_turns=1)
        assert result["parsed"] is False and result["turns"] == [] and result["reject_reason"]
    with pytest.raises(ValueError, match="truncated must be one of"):
        parse_candidate(text, 4, truncated="drop")


# Excerpts of what SmolLM2-135M-Instruct wrote in the loop (shortened), each with why it is refused.
CONVERSATION = "User 1: Hi! Do you have any pets?\nUser 2: Yes, I have a dog named Max.\nUser 1: I love dogs!"
REFUSED = [
    (
        "Here's how you can make this conversation more natural:\n" + CONVERSATION,
        "meta_commentary: Here's how you can make this conversation more natural:",
    ),
    ("Here is a conversation between user 1 and user 2:\n" + CONVERSATION, "meta_commentary: Here is a conversation"),
    (CONVERSATION + "\nThis conversation shows that both users love animals.", "meta_commentary: This conversation"),
    (CONVERSATION + "\n\nNote: the users' profiles are reflected implicitly.", "meta_commentary: Note:"),
    (CONVERSATION + "\nI hope this helps! Let me know if you need more examples.", "meta_commentary: I hope this"),
    ("User 1 Profile: I like cats. I live in a big city.\n" + CONVERSATION, "profile_block: User 1 Profile:"),
    (CONVERSATION + "\nUser 2's persona: I have a dog.\nUser 2: He is a golden retriever.", "profile_block: User 2's"),
    (CONVERSATION + "\nUser 3: Can I join?", "third_speaker: User 3: Can I join?"),
    (CONVERSATION + "\nAssistant: Sure, here is another one.", "third_speaker: Assistant:"),
    ("Alice: Hi Bob!\n" + CONVERSATION, "third_speaker: Alice: Hi Bob!"),
    (
        "User 1: I love eating. I love eating. I love eating. I love eating.\nUser 2: Me too!\nUser 1: Yes.",
        "repetition: turn 0 says 'i love eating' 4 times",
    ),
    (CONVERSATION + "\nUser 2: Do you?\nUser 1: I love dogs!\nUser 2: Do you?", "repetition: turns 2-3"),
    (CONVERSATION + "\nUser 2: " + "and then we went to the park " * 4, "repetition: turn 3 says"),
    (CONVERSATION + "\nUser 1: I love dogs!", "repetition: turn 2 is said again at once"),
    (  # selected at iteration 0 of a SmolLM2 run, then looped on by its generator (greetings vary, the rest echoes)
        "User 1: Hi, I'm Sarah. I'm a 52-year-old woman. I live in a small town in the Midwest and love to travel.\n"
        "User 2: Hi, I'm Emily. I'm Emily. I'm 60 years old. I'm a librarian. I have visited Spain a time.\n"
        "User 1: Hey Sarah. I'm Emily. I'm Emily. I'm 60 years old. I'm a librarian. I love to travel.\n"
        "User 2: Hello Sarah. I'm Emily. I'm Emily. I'm 60 years old. I'm a librarian. I love to travel.\n"
        "User 1: Hey Sarah. I'm Emily. I'm Emily. I'm 60 years old. I'm a librarian. I love to travel.",
        "repetition: 2 of 5 turns say an earlier turn again (turn 3 echoes turn 2)",
    ),
]


@pytest.mark.parametrize(("text", "reason"), REFUSED, ids=[reason[:30] for _, reason in REFUSED])
def test_a_candidate_with_commentary_profiles_other_speakers_or_loops_is_refused_with_its_reason(text, reason):
    result = parse_candidate(text, min_turns=2)
    assert result["parsed"] is False
    assert result["reject_reason"].startswith(reason), result["reject_reason"]
    assert len(result["turns"]) >= 2  # it had a conversation: the rules refused it, not the parser


@pytest.mark.parametrize(
    "text",
    [
        "1. User 1: Hi!\n2. User 2: Hello!\n3. User 1: How are you?\n4. User 2: Great, thanks.",
        "**User 1:** Hi!\n**User 2:** Hello!\n**User 1:** How are you?\n**User 2:** Great, thanks.",
        "(User 1): Hi!\n(User 2): Hello!\n(User 1): How are you?\n(User 2): Great, thanks.",
        "Sure! Here it is:\nConversation:\nUser 1: Hi!\nUser 2: Hello!\nUser 1: How are you?\nUser 2: Great, thanks.",
        # SPC-like backchannels said again later are not a loop; neither is "Yes. Yes. Yes." nor a stage direction.
        "User 1: Oh, that's cool.\nUser 2: Yes. Yes. Yes.\n(Later that day)\nUser 1: Oh, that's cool.\n"
        "User 2: It is.\nUser 1: Oh, that's cool.\nUser 2: Scene: the park.",
        # One long turn said again later, as 16% of SPC conversations have: under the echo share.
        "User 1: I have two dogs and a cat, and we live near the beach.\nUser 2: That sounds lovely, I like the sea.\n"
        "User 1: Do you have pets?\nUser 2: No, my flat is too small for them.\n"
        "User 1: I have two dogs and a cat, and we live close to the beach.\nUser 2: Lucky you!",
    ],
)
def test_formats_and_repetitions_real_conversations_have_are_accepted(text):
    result = parse_candidate(text, min_turns=4)
    assert result["parsed"] is True and result["reject_reason"] == "", result["reject_reason"]


def test_the_loop_rules_refuse_almost_no_real_spc_conversation():
    """The repetition rules against the SPC conversations they must let through (rejections.py: 2 of the 1,966 test /
    valid conversations by the echo rule, 2 by the loop rules)."""
    from pathlib import Path

    from spc_train.data import read_seed
    from spc_train.generation.rejections import _repetition

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "spc"
    if not shared.is_dir():
        pytest.skip(f"the SPC data is not beside the checkout ({shared})")
    records = [r for path in sorted(shared.glob("*.csv")) for r in read_seed(str(path)).records]
    refused = [r for r in records if _repetition(r["turns"])]
    assert len(records) > 1900 and len(refused) <= 5, [_repetition(r["turns"]) for r in refused]


# -- truncated candidates ---------------------------------------------------------------------------------------------
CUT = "User 1: Hi! Do you like hiking?\nUser 2: I love it.\nUser 1: Me too, I go every\nUser 2: weekend and the v"


def test_a_truncated_candidate_loses_its_unfinished_turn_before_min_turns_applies():
    finished = parse_candidate(CUT, 3, finish_reason="stop")  # ended at the end-of-turn token: all four turns
    assert (len(finished["turns"]), finished["truncated"], finished["dropped_unfinished_turn"]) == (4, False, False)

    dropped = parse_candidate(CUT, 3, finish_reason="length")
    assert [t["text"] for t in dropped["turns"]] == ["Hi! Do you like hiking?", "I love it.", "Me too, I go every"]
    assert dropped["parsed"] is True and dropped["truncated"] is True and dropped["dropped_unfinished_turn"] is True
    short = parse_candidate(CUT, 4, finish_reason="length")  # 3 turns left: min_turns counts what is left
    assert short["parsed"] is False and short["reject_reason"] == "too_few_turns: 3 < 4"

    rejected = parse_candidate(CUT, 3, finish_reason="length", truncated="reject")
    assert rejected["parsed"] is False and rejected["reject_reason"].startswith("truncated")
    assert len(rejected["turns"]) == 4 and rejected["dropped_unfinished_turn"] is False
    kept = parse_candidate(CUT, 4, finish_reason="length", truncated="keep")
    assert kept["parsed"] is True and len(kept["turns"]) == 4 and kept["truncated"] is True

    # Cut on a line that is no turn (a prefix with nothing said yet): every turn was finished, none is dropped.
    on_prefix = parse_candidate(CUT.rsplit("\n", 1)[0] + "\nUser 2:", 3, finish_reason="length")
    assert len(on_prefix["turns"]) == 3 and on_prefix["dropped_unfinished_turn"] is False and on_prefix["parsed"]
    # A loop is refused for the loop, even when the looping turn is the unfinished one that is dropped.
    looping = parse_candidate(CUT + ". I love eating. I love eating. I love eating. I lo", 3, finish_reason="length")
    assert looping["parsed"] is False and looping["reject_reason"].startswith("repetition")
    alone = parse_candidate("User 1: Hi, I am", 1, finish_reason="length")
    assert alone["turns"] == [] and alone["reject_reason"] == "no_turns"


def test_a_cut_right_after_a_line_break_keeps_the_finished_last_turn(tok):
    from spc_train.generation.engine import decode_sample

    finished = "User 1: Hi! Do you like hiking?\nUser 2: I love it.\n"
    sample = decode_sample(tok, tok(finished, add_special_tokens=False)["input_ids"], stop_ids=[])
    assert sample.finish_reason == "length" and sample.ends_line and not sample.text.endswith("\n")
    kept = parse_candidate(sample.text, 2, finish_reason=sample.finish_reason, ends_line=sample.ends_line)
    assert [t["text"] for t in kept["turns"]] == ["Hi! Do you like hiking?", "I love it."]
    assert kept["dropped_unfinished_turn"] is False and kept["parsed"] is True
    mid_turn = decode_sample(tok, tok(finished + "User 1: Me t", add_special_tokens=False)["input_ids"], [])
    assert not mid_turn.ends_line
    cut = parse_candidate(mid_turn.text, 2, finish_reason=mid_turn.finish_reason, ends_line=mid_turn.ends_line)
    assert len(cut["turns"]) == 2 and cut["dropped_unfinished_turn"] is True


def test_generate_shards_applies_the_truncation_rule_and_passes_the_repetition_settings(tok, tmp_path, monkeypatch):
    from spc_train.generation import candidates

    asked = []

    def cut_samples(model, tokenizer, prompts, keys, *, n, generation_kwargs, **kwargs):
        asked.append(generation_kwargs)
        return [[Sample(CUT, 40, "length"), Sample(CUT, 30, "stop")] for _ in prompts]

    monkeypatch.setattr(candidates, "sample_conversations", cut_samples)
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=512))
    expected = {"drop_last_turn": (3, True, "", True), "reject": (4, False, "truncated", False)}
    expected["keep"] = (4, True, "", False)
    for rule, (turns, parsed, reason, dropped) in expected.items():
        args = generation_args(truncated=rule, min_turns=3, repetition_penalty=1.3, no_repeat_ngram_size=9)
        generate_shards(model, tok, PAIRS, POOL, tmp_path / rule, args=args, seed=0, iteration=0, few_shot_examples=0)
        rows = read_shards(tmp_path / rule, 3)
        for r in rows[0::2]:  # cut by max_new_tokens
            assert (len(r["turns"]), r["parsed"], r["dropped_unfinished_turn"], r["truncated"]) == (
                turns,
                parsed,
                dropped,
                True,
            )
            assert r["reject_reason"].startswith(reason)
        for r in rows[1::2]:  # ended at the end-of-turn token: the rule does not apply
            assert (len(r["turns"]), r["parsed"], r["truncated"], r["dropped_unfinished_turn"]) == (
                4,
                True,
                False,
                False,
            )
    assert {(kw["repetition_penalty"], kw["no_repeat_ngram_size"]) for kw in asked} == {(1.3, 9)}


# -- repetition settings, and the model's own generation config -------------------------------------------------------
class Favour:
    """A caller's logits processor that pushes every row towards a few tokens, so that a random model loops on them."""

    def __init__(self, ids: list[int]):
        self.ids = ids

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += 20.0
        return scores


def favoured_sampling(tok, **settings) -> dict:
    from transformers import LogitsProcessorList

    prompts, _ = prompts_and_keys(tok)
    in_prompts = {i for ids in tok(prompts, add_special_tokens=False)["input_ids"] for i in ids}
    ids = [i for i in range(len(tok)) if i not in in_prompts and i not in tok.all_special_ids][:3]
    processors = LogitsProcessorList([Favour(ids)])
    return {"logits_processor": processors, "suppress_tokens": [tok.eos_token_id], "max_new_tokens": 12, **settings}


def record_generated_ids(monkeypatch) -> list[list[int]]:
    seen: list[list[int]] = []
    real = engine.decode_sample

    def record(tokenizer, tokens, stop_ids):
        seen.append(list(tokens))
        return real(tokenizer, tokens, stop_ids)

    monkeypatch.setattr(engine, "decode_sample", record)
    return seen


def test_no_repeat_ngram_size_and_repetition_penalty_apply_before_the_seeded_draw(model, tok, monkeypatch):
    prompts, keys = prompts_and_keys(tok)
    seen = record_generated_ids(monkeypatch)

    def bigram_repeats(tokens):
        return len(tokens) - 1 - len(set(zip(tokens, tokens[1:])))

    sample(model, tok, prompts, keys, **favoured_sampling(tok))
    assert all(bigram_repeats(tokens) > 0 for tokens in seen)  # the favoured tokens loop
    favoured = {token for tokens in seen for token in tokens[:3]}
    assert all(sum(token in favoured for token in tokens) > 3 for tokens in seen)

    seen.clear()
    sample(model, tok, prompts, keys, **favoured_sampling(tok, no_repeat_ngram_size=2))
    assert len(seen) == 6 and all(bigram_repeats(tokens) == 0 for tokens in seen)

    seen.clear()  # a huge penalty: a favoured token, once said, loses its favour
    sample(model, tok, prompts, keys, **favoured_sampling(tok, repetition_penalty=1e4))
    assert len(seen) == 6 and all(sum(token in favoured for token in tokens) == 3 for tokens in seen)


def test_repetition_settings_keep_a_candidate_independent_of_its_batch(model, tok):
    """The penalties count the prompt and the candidate, never the left padding that depends on the batch."""
    prompts, keys = prompts_and_keys(tok)
    settings = {"repetition_penalty": 1.8, "no_repeat_ngram_size": 2, "max_new_tokens": 10}
    together = sample(model, tok, prompts, keys, batch_tokens=1_000_000, **settings)
    for i in range(3):
        assert as_tuples(sample(model, tok, [prompts[i]], [keys[i]], **settings)) == as_tuples([together[i]])
    assert as_tuples(together) != as_tuples(sample(model, tok, prompts, keys, max_new_tokens=10))


def test_the_models_generation_config_never_applies_and_the_recipes_settings_are_recorded(tok, tmp_path):
    from transformers import GenerationConfig

    from spc_train.configs import GenerationArguments
    from spc_train.generation.candidates import sampling_settings, save_generation_config

    plain, opinionated = tiny_llama(tok), tiny_llama(tok)  # the same weights
    opinionated.generation_config.update(
        repetition_penalty=1.5, no_repeat_ngram_size=2, temperature=0.05, top_k=2, top_p=0.5, min_new_tokens=4
    )
    args = GenerationArguments(max_new_tokens=8, num_candidates=2, temperature=1.0, top_k=50)  # no penalty
    prompts, keys = prompts_and_keys(tok)

    def run(model, **changes):
        kwargs = {**sampling_settings(args), **changes}
        return as_tuples(
            sample_conversations(
                model, tok, prompts, keys, n=2, generation_kwargs=kwargs, batch_tokens=100_000, seed=0
            )
        )

    assert run(opinionated) == run(plain)
    # Not vacuous: the model's penalty of 1.5 would show on this model, had it applied.
    assert run(plain, repetition_penalty=1.5) != run(plain)
    assert run(opinionated, repetition_penalty=1.5) == run(plain, repetition_penalty=1.5)

    save_generation_config(opinionated, tok, args, tmp_path / "default")
    saved = GenerationConfig.from_pretrained(tmp_path / "default")
    recorded = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size")
    assert {name: getattr(saved, name) for name in recorded} == {
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 50,
        "top_p": 1.0,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }
    assert (saved.max_new_tokens, saved.num_return_sequences, saved.eos_token_id) == (8, 2, [tok.eos_token_id])
    penalised = GenerationArguments(repetition_penalty=1.3, no_repeat_ngram_size=9, temperature=0.7, top_p=0.9)
    save_generation_config(opinionated, tok, penalised, tmp_path / "penalised")
    saved = GenerationConfig.from_pretrained(tmp_path / "penalised")
    assert (saved.repetition_penalty, saved.no_repeat_ngram_size, saved.temperature, saved.top_p) == (1.3, 9, 0.7, 0.9)
    assert sampling_settings(penalised)["repetition_penalty"] == 1.3


def test_the_continuous_backend_ignores_the_models_generation_config_and_refuses_penalties(tok):
    plain, opinionated = tiny_llama(tok), tiny_llama(tok)
    opinionated.generation_config.update(repetition_penalty=1.5, temperature=0.05, top_k=2)
    prompts, keys = prompts_and_keys(tok)
    settings = {"temperature": 1.0, "top_k": 50, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    assert as_tuples(sample_continuous(opinionated, tok, prompts, keys, **settings)) == as_tuples(
        sample_continuous(plain, tok, prompts, keys, **settings)
    )
    # transformers' continuous batching would drop them with a warning: refused instead
    for penalty in ({"repetition_penalty": 1.3}, {"no_repeat_ngram_size": 4}):
        with pytest.raises(ValueError, match="need generation.backend `generate`"):
            sample_continuous(plain, tok, prompts, keys, **penalty)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"truncated": "drop"}, "truncated must be one of drop_last_turn, reject, keep"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be above 0"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be at least 0"),
        ({"backend": "continuous", "repetition_penalty": 1.2}, "backend must be `generate` when repetition_penalty"),
        ({"backend": "continuous", "no_repeat_ngram_size": 8}, "backend must be `generate` when repetition_penalty"),
    ],
)
def test_generation_arguments_refuse_bad_truncation_and_repetition_settings(changes, message):
    from spc_train.configs import FieldValueError, GenerationArguments

    with pytest.raises(FieldValueError, match=message):
        GenerationArguments(**changes)
    defaults = GenerationArguments()
    assert (defaults.truncated, defaults.repetition_penalty, defaults.no_repeat_ngram_size) == (
        "drop_last_turn",
        1.0,
        0,
    )
