"""Seed replay (`loop.replay_seed`): real conversations join an iteration's SFT rows, cut to what the generator may
write, never one of the run's pairs; the selection's rows stay as they were."""

from conftest import copy_run

from spc_train.cli import main
from spc_train.configs import GeneratorConfig, parse_recipe
from spc_train.data.conversation import format_conversation, parse_conversation
from spc_train.models import load_tokenizer
from spc_train.runs import read_stage
from spc_train.training.data import fit_turns, replay_records


def load(folder):
    from datasets import load_from_disk

    return load_from_disk(str(folder)).to_list()


def turns(n):
    return [{"speaker": 1 + i % 2, "text": f"turn {i} says a few words about cats and swimming"} for i in range(n)]


def token_count(tokenizer, turns_):
    return len(tokenizer(format_conversation(turns_), add_special_tokens=False)["input_ids"])


def test_fit_turns_keeps_the_longest_opening_that_leaves_room_for_the_end_of_turn_token(tiny_models):
    tokenizer = load_tokenizer(GeneratorConfig(name_or_path=str(tiny_models / "generator")))
    conversation = turns(12)
    whole = token_count(tokenizer, conversation)
    assert fit_turns(tokenizer, conversation, whole + 1) == conversation
    cut = fit_turns(tokenizer, conversation, whole)  # no room for the end-of-turn token: the last turn goes
    assert cut == conversation[:-1]
    budget = whole // 2
    cut = fit_turns(tokenizer, conversation, budget)
    assert 0 < len(cut) < 12 and cut == conversation[: len(cut)]
    assert token_count(tokenizer, cut) < budget <= token_count(tokenizer, conversation[: len(cut) + 1])
    assert fit_turns(tokenizer, conversation, 3) == [] and fit_turns(tokenizer, [], 100) == []


def test_replay_draws_seed_conversations_outside_the_pairs_reproducibly(tiny_models):
    tokenizer = load_tokenizer(GeneratorConfig(name_or_path=str(tiny_models / "generator")))
    seed = [{"pair_id": f"s{i}", "turns": turns(4 + i % 9), "source": "sample.csv"} for i in range(30)]
    seed.append({"pair_id": "one-speaker", "turns": [{"speaker": 1, "text": "hi"}] * 6, "source": "sample.csv"})
    pairs = [{"pair_id": f"s{i}"} for i in range(0, 30, 2)]
    budget = token_count(tokenizer, turns(6))  # 5 turns fit, with the end-of-turn token
    kwargs = dict(tokenizer=tokenizer, max_new_tokens=budget, min_turns=2, rng_seed="7-0-replay")
    drawn = replay_records(seed, pairs, 8, **kwargs)
    assert len(drawn) == 8 and drawn == replay_records(seed, pairs, 8, **kwargs)
    assert drawn != replay_records(seed, pairs, 8, **{**kwargs, "rng_seed": "7-1-replay"})
    assert all(int(r["pair_id"][1:]) % 2 == 1 for r in drawn)  # never a pair's own conversation
    assert all(r["source"] == "replay:sample.csv" for r in drawn)
    assert all(len(r["turns"]) == min(5, 4 + int(r["pair_id"][1:]) % 9) for r in drawn)  # cut to the budget
    # more than there is: every one outside the pairs with two speakers and min_turns turns, once each
    everything = replay_records(seed, pairs, 100, **kwargs)
    assert sorted(r["pair_id"] for r in everything) == sorted(f"s{i}" for i in range(1, 30, 2))
    assert replay_records(seed, pairs, 100, **{**kwargs, "min_turns": 6}) == []


def test_replay_leaves_out_every_conversation_sharing_a_user_with_the_run_or_the_held_out_pairs(tiny_models):
    tokenizer = load_tokenizer(GeneratorConfig(name_or_path=str(tiny_models / "generator")))

    def record(i, one, two):
        return {"pair_id": f"s{i}", "user1_persona": one, "user2_persona": two, "turns": turns(4), "source": "x"}

    run_user, held_user = ["I am a nurse.", "I love cats."], ["I play chess."]
    seed = [record(i, [f"user {i}."], [f"partner {i}."]) for i in range(10)]
    seed[2]["user2_persona"] = ["i love cats.", "i  am a nurse."]  # the run's user, re-spelled and re-ordered
    seed[5]["user1_persona"] = held_user
    pairs = [record(0, run_user, ["someone."])]
    held_out = [record(1, ["another."], held_user)]
    kwargs = dict(tokenizer=tokenizer, max_new_tokens=1000, min_turns=2, rng_seed="7-0-replay")
    drawn = {r["pair_id"] for r in replay_records(seed, pairs + held_out, 100, **kwargs)}
    assert drawn == {f"s{i}" for i in range(10)} - {"s0", "s1", "s2", "s5"}
    assert {"s2", "s5"} <= {r["pair_id"] for r in replay_records(seed, [{"pair_id": "s0"}], 100, **kwargs)}


def test_sft_data_stage_adds_the_replayed_rows_to_the_selection(demo_run, tmp_path):
    recipe, _ = demo_run
    copy = copy_run(demo_run, tmp_path)
    selected = load(copy / "iter-00" / "train")
    args = ["sft-data", "--run_dir", str(copy), "--iteration", "0", "--loop.replay_seed", "3"]
    assert main(args) == 0
    rows = load(copy / "iter-00" / "train")
    assert rows[: len(selected)] == selected
    replayed = rows[len(selected) :]
    assert len(replayed) == 3 and read_stage(copy / "iter-00" / "train")["replayed_rows"] == 3
    assert all(row["source"].startswith("replay:") for row in replayed)
    pair_ids = {row["pair_id"] for row in load(copy / "pairs")}
    assert not pair_ids & {row["pair_id"] for row in replayed}
    config = parse_recipe(recipe)
    tokenizer = load_tokenizer(config.model)
    cut = [parse_conversation(row["completion"][0]["content"]).turns for row in replayed]
    assert all(token_count(tokenizer, turns_) < 96 for turns_ in cut)  # the demo's generation.max_new_tokens
    seed = {row["pair_id"]: row for row in load(copy / "seed")}
    for row in replayed:  # the zero-shot prompt for that seed conversation's own users
        assert all(attribute in row["prompt"][0]["content"] for attribute in seed[row["pair_id"]]["user2_persona"])


def test_replay_max_tokens_cuts_the_replayed_conversations_shorter(demo_run, tmp_path):
    recipe, _ = demo_run
    copy = copy_run(demo_run, tmp_path)
    tokenizer = load_tokenizer(parse_recipe(recipe).model)
    args = ["sft-data", "--run_dir", str(copy), "--iteration", "0", "--loop.replay_seed", "4"]

    def replayed_lengths():
        rows = [row for row in load(copy / "iter-00" / "train") if row["source"].startswith("replay:")]
        return [token_count(tokenizer, parse_conversation(row["completion"][0]["content"]).turns) for row in rows]

    assert main(args) == 0
    assert max(replayed_lengths()) >= 48  # within the demo's max_new_tokens (96), past the budget below
    assert main([*args, "--loop.replay_max_tokens", "48"]) == 0  # a value the stage reads: it runs again
    assert replayed_lengths() and max(replayed_lengths()) < 48


def test_a_seed_too_small_for_the_replay_is_a_warning(demo_run, tmp_path, caplog):
    import logging

    copy = copy_run(demo_run, tmp_path)
    args = ["sft-data", "--run_dir", str(copy), "--iteration", "0", "--loop.replay_seed", "1000"]
    with caplog.at_level(logging.WARNING, logger="spc_train"):
        assert main(args) == 0
    found = read_stage(copy / "iter-00" / "train")["replayed_rows"]
    assert 0 < found < 1000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"seed replay found {found} of the 1000" in w and "A larger seed" in w for w in warnings), warnings
