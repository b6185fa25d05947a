"""The generation room's stage: n candidate conversations per user pair, from the few-shot pool and the adapter."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from ..runs import read_shards, save_rows
from ..stage import Input, Stage, StageContext

logger = logging.getLogger(__name__)

# Under this share of parsed candidates, the generator mostly does not write the format: worth a warning.
LOW_PARSE_RATE = 0.5


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def _inputs(selected, iteration: int) -> list[Input]:
    """The pairs; the few-shot pool P_k (the seed, plus earlier selections if it grows); the previous adapter; the
    referee's held-out pairs, whose users the pool leaves out."""
    pool = [Input("selected", k) for k in range(iteration)] if selected.loop.grow_pool else []
    adapter = [Input("adapter", iteration - 1)] if iteration and selected.loop.train else []
    held_out = [Input("held-out")] if selected.referee.held_out_pairs else []
    return [Input("pairs"), Input("seed"), *pool, *adapter, *held_out]


def generate(ctx: StageContext):
    """Every process generates its shards (data parallel); the main process merges them in order."""
    from ..data.users import outside
    from .candidates import generate_shards, save_generation_config

    args, k = ctx.config.generation, ctx.iteration
    adapter = next((str(ctx.input(i.name, i.iteration)) for i in ctx.inputs if i.name == "adapter"), None)
    shots = 0 if adapter and args.zero_shot_with_adapter else args.few_shot_examples
    shards_dir = ctx.scratch("shards")
    pairs = ctx.rows("pairs")
    pool = [row for i in ctx.inputs if i.name in ("seed", "selected") for row in ctx.rows(i.name, i.iteration)]
    pool = outside(pool, ctx.rows("held-out") if ctx.declares("held-out") else [])
    model, tokenizer = ctx.models.generator(adapter)
    state = ctx.process
    stats = generate_shards(
        model,
        tokenizer,
        pairs,
        pool,
        shards_dir,
        args=args,
        seed=ctx.config.loop.seed,
        iteration=k,
        few_shot_examples=shots,
        process_index=state.process_index,
        num_processes=state.num_processes,
    )

    def write(out: Path) -> dict:
        rows = read_shards(shards_dir, stats["num_shards"])
        if rows is None:
            raise RuntimeError(f"A shard is missing from {shards_dir} after generation; re-run to resume.")
        save_rows(rows, out)
        save_generation_config(model, tokenizer, args, out)
        shutil.rmtree(shards_dir)
        parse_rate = _mean(float(r["parsed"]) for r in rows)
        if parse_rate < LOW_PARSE_RATE:
            logger.warning(
                "Iteration %d: only %.0f%% of %d candidates parsed as conversations of both users (see "
                "`reject_reason` in %s): a stronger or instruction-tuned generator, more few-shot examples "
                "(generation.few_shot_examples) or a larger generation.max_new_tokens may help.",
                k,
                100 * parse_rate,
                len(rows),
                ctx.folder.relative_to(ctx.run.root),
            )
        return {
            "rows": len(rows),
            "adapter": adapter,
            "few_shot_examples": shots,
            "processes": state.num_processes,
            "parse_rate": parse_rate,
            "stopped_rate": _mean(float(r["finish_reason"] == "stop") for r in rows),
            # a conversation the model wrote and ended itself: what stops at iteration 0 is mostly not one
            "complete_rate": _mean(float(r["parsed"] and r["finish_reason"] == "stop") for r in rows),
            **stats,
            "pairs": len(pairs),
        }

    return write


def _said(summary: dict) -> str:
    return (
        f"{summary['rows']} candidates for {summary['pairs']} pairs, {summary['parse_rate']:.0%} parsed, "
        f"{summary['stopped_rate']:.0%} stopped by the model"
        + (f", {summary['complete_rate']:.0%} both" if "complete_rate" in summary else "")
    )


GENERATE = Stage(
    name="candidates",
    command="generate",
    reads=("generation", "loop.seed", "loop.grow_pool", "loop.train", "referee.held_out_pairs"),
    work=generate,
    inputs=_inputs,
    roles=("generator",),
    per_iteration=True,
    describe=_said,
)
