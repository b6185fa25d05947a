"""The referee's stages: the held-out pairs (setup), each iteration's conversations for them, and the referee's
comparison of iteration k's with iteration 0's (k >= 1). The evaluation stages merge their numbers into
`metrics.json` and the report (`held_out_*`, `referee_*`); docs/referee.md."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from ..runs import StageInputError, read_shards, read_stage, save_rows
from ..stage import Input, Stage, StageContext

logger = logging.getLogger(__name__)


def refereed(selected) -> bool:
    return bool(selected.referee.held_out_pairs)


def held_out(ctx: StageContext):
    """The held-out seed conversations, and the measures of these human conversations (the reference column)."""
    from .held_out import hold_out
    from .held_out_measures import conversation_measures

    config = ctx.config
    count = config.referee.held_out_pairs
    rows = hold_out(
        ctx.rows("seed"),
        ctx.rows("pairs"),
        count,
        min_turns=config.generation.min_turns,
        rng_seed=f"{config.loop.seed}-held-out",
    )
    if not rows:
        raise StageInputError(
            "No seed conversation shares no user with the run's pairs, so none can be held out for the referee: "
            "use fewer pairs (personas.num_pairs), a larger seed, or referee.held_out_pairs: 0."
        )
    if len(rows) < count:
        logger.warning(
            "Only %d seed conversations share no user with the run's pairs or each other: the referee uses them, of "
            "the %d held-out pairs asked (referee.held_out_pairs). Fewer pairs (personas.num_pairs) or a larger seed "
            "give more.",
            len(rows),
            count,
        )
    measures = conversation_measures(rows)

    def write(out: Path) -> dict:
        save_rows(rows, out)
        return {"rows": len(rows), "measures": measures}

    return write


def _generation_inputs(selected, k: int) -> list[Input]:
    """As the loop's generation at iteration k (`generation.stages`): the pool P_k and the previous adapter."""
    pool = [Input("selected", j) for j in range(k)] if selected.loop.grow_pool else []
    adapter = [Input("adapter", k - 1)] if k and selected.loop.train else []
    return [Input("held-out"), Input("seed"), *pool, *adapter]


def held_out_generations(ctx: StageContext):
    """One conversation per held-out pair from iteration k's generator, prompted as the loop prompts it. Sampling
    noise is keyed by the pair (as for candidates) and few-shot examples are drawn as at iteration 0, so iteration k
    and iteration 0 differ only in their generator (and the pool, when it grows)."""
    from ..data.users import outside
    from ..generation.candidates import generate_shards
    from .held_out_measures import generation_measures

    args, k = ctx.config.generation, ctx.iteration
    adapter = next((str(ctx.input(i.name, i.iteration)) for i in ctx.inputs if i.name == "adapter"), None)
    shots = 0 if adapter and args.zero_shot_with_adapter else args.few_shot_examples
    pairs = ctx.rows("held-out")
    pool = outside(
        [row for i in ctx.inputs if i.name in ("seed", "selected") for row in ctx.rows(i.name, i.iteration)], pairs
    )
    model, tokenizer = ctx.models.generator(adapter)
    shards_dir, state = ctx.scratch("shards"), ctx.process
    stats = generate_shards(
        model,
        tokenizer,
        pairs,
        pool,
        shards_dir,
        args=dataclasses.replace(args, num_candidates=1),
        seed=ctx.config.loop.seed,
        iteration=k,
        few_shot_examples=shots,
        process_index=state.process_index,
        num_processes=state.num_processes,
        examples_from=0,
    )

    def write(out: Path) -> dict:
        rows = read_shards(shards_dir, stats["num_shards"])
        if rows is None:
            raise RuntimeError(f"A shard is missing from {shards_dir} after generation; re-run to resume.")
        save_rows(rows, out)
        shutil.rmtree(shards_dir)
        return {"rows": len(rows), "adapter": adapter, "measures": generation_measures(rows)}

    return write


def referee(ctx: StageContext):
    """Iteration k's held-out conversations against iteration 0's, judged by the referee (`referee.mode`: both in one
    prompt in both orders, or each alone); and how many of iteration k's are near duplicates of iteration 0's."""
    from .held_out_measures import near_duplicate_flags
    from .referee import compare, compare_pointwise, shown, summarize

    config, k = ctx.config, ctx.iteration
    pairs = ctx.rows("held-out")
    new = {row["pair_id"]: row for row in ctx.rows("held-out-generations", k)}
    old = {row["pair_id"]: row for row in ctx.rows("held-out-generations", 0)}
    pairs = [pair for pair in pairs if pair["pair_id"] in new and pair["pair_id"] in old]
    criteria, judge = list(config.referee.criteria), ctx.models.referee()
    texts = [[shown(table[p["pair_id"]]) for p in pairs] for table in (new, old)]
    if config.referee.mode == "pointwise":
        rows = compare_pointwise(judge, pairs, *texts, criteria, config.referee.margin)
    else:
        rows = compare(judge, pairs, *texts, criteria)
    metrics = summarize(rows, criteria, config.loop.seed)
    flags = near_duplicate_flags(*texts)
    metrics["held_out_near_duplicate_of_iteration_0"] = sum(flags) / len(flags) if flags else float("nan")

    def write(out: Path) -> dict:
        save_rows(rows, out)
        return {"rows": len(rows), "metrics": metrics}

    return write


def evaluation_inputs(selected, k: int | None) -> list[Input]:
    """What an evaluation stage reads of the referee's stages: the seed column the held-out human conversations,
    iteration k its held-out conversations and (k >= 1) the referee's comparison."""
    if not refereed(selected):
        return []
    if k is None:
        return [Input("held-out")]
    return [Input("held-out-generations", k), *([Input("referee", k)] if k else [])]


def held_out_metrics(ctx: StageContext) -> dict[str, float]:
    """`held_out_<measure>` of the held-out conversations and the referee's `referee_*` numbers, from the inputs of
    `evaluation_inputs`."""
    metrics: dict[str, float] = {}
    for wanted in ctx.inputs:
        if wanted.name in ("held-out", "held-out-generations", "referee"):
            summary = read_stage(ctx.input(wanted.name, wanted.iteration)) or {}
            metrics |= summary.get("metrics", {})
            metrics |= {f"held_out_{key}": value for key, value in summary.get("measures", {}).items()}
    return metrics


def _said_held_out(summary: dict) -> str:
    return f"{summary['rows']} held-out pairs"


def _said_generations(summary: dict) -> str:
    measures = summary["measures"]
    return f"{summary['rows']} conversations, {measures['parse_rate']:.0%} parsed"


def _said_referee(summary: dict) -> str:
    m = summary["metrics"]
    return (
        f"iteration k vs 0 on {m['referee_pairs']} pairs: win {m['referee_win']:.0%}, tie {m['referee_tie']:.0%}, "
        f"loss {m['referee_loss']:.0%}"
    )


HELD_OUT = Stage(
    name="held-out",
    command="held-out",
    reads=("referee.held_out_pairs", "loop.seed", "generation.min_turns"),
    work=held_out,
    inputs=lambda selected, k: [Input("seed"), Input("pairs")],
    describe=_said_held_out,
)
HELD_OUT_GENERATIONS = Stage(
    name="held-out-generations",
    command="held-out-generations",
    reads=("generation", "loop.seed", "loop.grow_pool", "loop.train", "referee.held_out_pairs"),
    work=held_out_generations,
    inputs=_generation_inputs,
    roles=("generator",),
    per_iteration=True,
    describe=_said_generations,
)
REFEREE = Stage(
    name="referee",
    command="referee",
    reads=("referee.held_out_pairs", "referee.criteria", "referee.mode", "referee.margin", "loop.seed"),
    work=referee,
    inputs=lambda selected, k: [
        Input("held-out"),
        Input("held-out-generations", k),
        Input("held-out-generations", 0),
    ],
    roles=("referee",),
    per_iteration=True,
    describe=_said_referee,
)
