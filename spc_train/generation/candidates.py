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

from ..configs import TRUNCATED_CANDIDATES
from ..console import progress
from ..data.conversation import parse_conversation, too_short
from ..data.prompts import generator_prompt, render
from ..runs import pending_shards, shard_path, write_shard
from .continuous import sample_conversations_continuous
from .engine import sample_conversations
from .rejections import reject_reason

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


def parse_candidate(
    text: str,
    min_turns: int,
    *,
    finish_reason: str = "stop",
    truncated: str = "drop_last_turn",
    ends_line: bool = False,
) -> dict:
    """The candidate's turns, whether it may be selected (`parsed`) and, when not, why (`reject_reason`).

    In order: what the model wrote is checked by `rejections.reject_reason` (commentary, profile blocks, other
    speakers, loops); a candidate cut by `max_new_tokens` (`finish_reason` not "stop") then loses its unfinished last
    turn (`drop_last_turn`: the turn on the text's last line, which the model was still writing, unless the cut fell
    right after a line break, `ends_line`), is refused (`reject`), or is kept as it is (`keep`); what is left must
    have `min_turns` turns from both users.
    """
    if truncated not in TRUNCATED_CANDIDATES:
        raise ValueError(f"truncated must be one of {', '.join(TRUNCATED_CANDIDATES)}, got {truncated!r}.")
    parsed = parse_conversation(text)
    turns = parsed.turns
    cut = finish_reason != "stop"
    lines = [line for line in text.splitlines() if line.strip()] if isinstance(text, str) else []
    unfinished = cut and not ends_line and bool(lines) and bool(parse_conversation(lines[-1]).turns)
    dropped = unfinished and truncated == "drop_last_turn"
    if dropped:
        turns = turns[:-1]
    reason = reject_reason(parsed)  # what the model wrote, before any unfinished turn is dropped: a loop is a loop
    if not reason and cut and truncated == "reject":
        reason = "truncated: stopped at max_new_tokens"
    reason = reason or too_short(turns, min_turns) or ""
    return {
        "turns": turns,
        "parsed": not reason,
        "reject_reason": reason,
        "skipped_lines": len(parsed.skipped),
        "truncated": cut,
        "dropped_unfinished_turn": dropped,
    }


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
    examples_from: int | None = None,
) -> dict:
    """Generate this process's missing shards into `shards_dir`; returns statistics of the work done.

    `examples_from`: draw each pair's few-shot examples as that iteration does (the referee's held-out generations
    draw as iteration 0, so that two iterations' prompts differ in nothing but the weights)."""
    shards_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, -(-len(pairs) // args.shard_size))
    todo = pending_shards(shards_dir, num_shards, process_index, num_processes)
    context = getattr(model.config, "max_position_embeddings", None)
    budget = args.max_prompt_tokens or (context - args.max_new_tokens if context else None)
    generation_kwargs = sampling_settings(args)
    stats = {"shards_generated": len(todo), "examples_dropped": 0, "new_tokens": 0, "candidates_generated": 0}
    total_pairs = sum(len(pairs[i * args.shard_size : (i + 1) * args.shard_size]) for i in todo)
    start = time.perf_counter()
    with progress(
        total=total_pairs, desc=f"iter-{iteration:02d} generate", unit="pair", disable=total_pairs == 0
    ) as bar:
        for shard in todo:
            shard_pairs = pairs[shard * args.shard_size : (shard + 1) * args.shard_size]
            prompts, shots = [], []
            for pair in shard_pairs:
                drawn_as = iteration if examples_from is None else examples_from
                examples = pick_examples(pool, pair, few_shot_examples, seed, drawn_as)
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
                            **parse_candidate(
                                sample.text,
                                args.min_turns,
                                finish_reason=sample.finish_reason,
                                truncated=args.truncated,
                                ends_line=sample.ends_line,
                            ),
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


def sampling_settings(args) -> dict:
    """What the recipe sets of the sampling, all of it: the engine applies exactly these (never the model's own
    `generation_config` values for them), and `save_generation_config` records exactly these."""
    return {
        "do_sample": True,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "repetition_penalty": float(args.repetition_penalty),
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
        "max_new_tokens": args.max_new_tokens,
    }


def save_generation_config(model, tokenizer, args, folder: Path) -> None:
    """The sampling settings of this stage as a `GenerationConfig`, stopping at the chat end-of-turn token(s).

    Saved beside the candidates, so `GenerationConfig.from_pretrained(folder)` reproduces how they were sampled: the
    recipe's values (`sampling_settings`), whatever the model's own generation config says.
    """
    from transformers import GenerationConfig

    from .engine import stop_token_ids

    GenerationConfig(
        **sampling_settings(args),
        num_return_sequences=args.num_candidates,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(folder)
