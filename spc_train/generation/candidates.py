"""The `generate` stage: n candidate conversations per user pair, written shard by shard.

Shards (groups of pairs) are the unit of resume and of data parallelism: under `accelerate launch` process p takes
shards p, p + world, ...; a shard file is written atomically when done, so a killed run redoes only missing shards.
Few-shot examples are drawn per pair from a generator seeded by (seed, iteration, pair id), so a pair's prompt does not
depend on which process or shard handles it. Sampling is `engine.py` (`generate`, the default) or `continuous.py`
(transformers' continuous batching), by `generation.backend`.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..data.conversation import parse_conversation
from ..data.prompts import generator_prompt, render
from ..runs import pending_shards, shard_path, write_shard
from .continuous import sample_conversations_continuous
from .engine import sample_conversations

logger = logging.getLogger(__name__)


def pick_examples(pool: list[dict], pair: dict, k: int, seed: int, iteration: int) -> list[dict]:
    """k pool conversations for this pair, never the pair's own conversation."""
    if k <= 0:
        return []
    rng = random.Random(f"{seed}-{iteration}-{pair['pair_id']}")
    others = [i for i, record in enumerate(pool) if record["pair_id"] != pair["pair_id"]]
    return [pool[i] for i in rng.sample(others, min(k, len(others)))]


def fit_prompt(tokenizer, pair: dict, examples: list[dict], budget: int | None) -> tuple[str, int]:
    """The rendered prompt with as many examples as fit the budget; examples go first, never the target pair."""
    while True:
        text = render(tokenizer, generator_prompt(pair, examples))
        if budget is None or not examples or len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= budget:
            return text, len(examples)
        examples = examples[:-1]


def parse_candidate(text: str, min_turns: int) -> dict:
    parsed = parse_conversation(text)
    speakers = {turn["speaker"] for turn in parsed.turns}
    ok = len(parsed.turns) >= min_turns and speakers == {1, 2}
    return {"turns": parsed.turns, "parsed": ok, "skipped_lines": len(parsed.skipped)}


def generate_shards(
    model,
    tokenizer,
    pairs: list[dict],
    pool: list[dict],
    shards_dir: Path,
    *,
    args,
    seed: int,
    iteration: int,
    few_shot_examples: int,
    process_index: int = 0,
    num_processes: int = 1,
) -> dict:
    """Generate this process's missing shards into `shards_dir`; returns statistics of the work done."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-len(pairs) // args.shard_size))
    todo = pending_shards(shards_dir, num_shards, process_index, num_processes)
    context = getattr(model.config, "max_position_embeddings", None)
    budget = args.max_prompt_tokens or (context - args.max_new_tokens if context else None)
    generation_kwargs = {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
    }
    stats = {"shards_generated": len(todo), "examples_dropped": 0, "new_tokens": 0, "candidates_generated": 0}
    total_pairs = sum(len(pairs[i * args.shard_size : (i + 1) * args.shard_size]) for i in todo)
    start = time.perf_counter()
    with tqdm(total=total_pairs, desc=f"iter-{iteration:02d} generate", unit="pair", disable=total_pairs == 0) as bar:
        for shard in todo:
            shard_pairs = pairs[shard * args.shard_size : (shard + 1) * args.shard_size]
            prompts, shots = [], []
            for pair in shard_pairs:
                examples = pick_examples(pool, pair, few_shot_examples, seed, iteration)
                text, used = fit_prompt(tokenizer, pair, examples, budget)
                stats["examples_dropped"] += len(examples) - used
                prompts.append(text)
                shots.append(used)
            keys = [pair["pair_id"] for pair in shard_pairs]
            sample = sample_conversations_continuous if args.backend == "continuous" else sample_conversations
            samples = sample(
                model,
                tokenizer,
                prompts,
                keys,
                n=args.num_candidates,
                generation_kwargs=generation_kwargs,
                batch_tokens=args.batch_tokens,
                seed=seed + iteration,
                progress=bar,
            )
            rows = []
            for pair, used, pair_samples in zip(shard_pairs, shots, samples):
                for index, sample in enumerate(pair_samples):
                    rows.append(
                        {
                            "pair_id": pair["pair_id"],
                            "user1_persona": pair["user1_persona"],
                            "user2_persona": pair["user2_persona"],
                            "candidate": index,
                            "text": sample.text,
                            **parse_candidate(sample.text, args.min_turns),
                            "num_tokens": sample.num_tokens,
                            "finish_reason": sample.finish_reason,
                            "few_shot_examples": used,
                            "iteration": iteration,
                            "source": f"generated:iter-{iteration:02d}",
                        }
                    )
                    stats["new_tokens"] += sample.num_tokens
                    stats["candidates_generated"] += 1
            write_shard(shard_path(shards_dir, shard), rows)
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(candidates=stats["candidates_generated"], tok_s=f"{stats['new_tokens'] / elapsed:.0f}")
    if stats["examples_dropped"]:
        logger.warning("Dropped %d few-shot examples to fit prompts in %s tokens.", stats["examples_dropped"], budget)
    return {**stats, "num_shards": num_shards}


def save_generation_config(model, tokenizer, args, folder: Path) -> None:
    """The sampling settings of this stage as a `GenerationConfig`, stopping at the chat end-of-turn token(s).

    Saved beside the candidates, so `GenerationConfig.from_pretrained(folder)` reproduces how they were sampled.
    """
    from transformers import GenerationConfig

    from .engine import stop_token_ids

    GenerationConfig(
        do_sample=True,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        num_return_sequences=args.num_candidates,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(folder)
