"""The critic room's stages (PAPER.md §2): every candidate scored by the experts, then one winner per pair selected.

`critique` never reads a threshold, so new thresholds re-run only `select`, from the stored scores.
"""

from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

from ..runs import read_shards, save_rows
from ..stage import Input, Stage, StageContext
from .registry import judge_options
from .selection import filter_thresholds, grounding_rule

logger = logging.getLogger(__name__)


def critique_roles(selected) -> tuple[str, ...]:
    critic = selected.critic
    roles = ["judge"] if judge_options(critic) else []
    roles += ["toxicity"] if "toxicity" in critic.experts and critic.toxicity_model else []
    roles += ["critic nli"] if "faithfulness_nli" in critic.experts else []
    roles += ["critic embedder"] if "persona_grounding" in critic.experts else []
    return tuple(roles)


def critique(ctx: StageContext):
    """Every process scores its shards of user pairs (data parallel); the main process merges them."""
    from .critiques import critique_shards
    from .registry import build_experts

    critic = ctx.config.critic
    shards_dir = ctx.scratch("shards")
    state = ctx.process
    stats = critique_shards(
        ctx.rows("candidates", ctx.iteration),
        partial(build_experts, critic, ctx.models.judge, ctx.models.classifier),
        shards_dir,
        shard_size=critic.shard_size,
        process_index=state.process_index,
        num_processes=state.num_processes,
        min_option_mass=critic.min_option_mass,
    )

    def write(out: Path) -> dict:
        from .critiques import option_mass_stats

        rows = read_shards(shards_dir, stats["num_shards"])
        if rows is None:
            raise RuntimeError(f"A shard is missing from {shards_dir} after critique; re-run to resume.")
        save_rows(rows, out)
        shutil.rmtree(shards_dir)
        judge = ctx.models.loaded.get("judge")
        return {
            "rows": len(rows),
            "experts": critic.experts,
            "processes": state.num_processes,
            **stats,
            "option_mass": option_mass_stats(rows),  # over every shard, resumed ones and other processes' too
            "judge_prompts_truncated": judge.truncated if judge else 0,
            "judge_examples_dropped": judge.examples_dropped if judge else 0,
        }

    return write


# Under this share of pairs with a selected conversation, the selection is worth a warning.
TINY_SELECTION = 0.25


def empty_selection_cause(stats: dict) -> str:
    """Which filter rejected how many candidates, from a selection's statistics."""
    total = stats["candidates"]
    if not total:
        return "there were no candidates"
    parts = [f"{1 - stats['parse_rate']:.0%} of {total} candidates did not parse"] if stats["parse_rate"] < 1 else []
    parts += [  # of the parsed candidates (NaN: none parsed, so no filter saw any)
        f"`{name}` rejected {1 - rate:.0%} of the parsed"
        for name, rate in stats["filter_pass_rates"].items()
        if rate < 1
    ]
    return "; ".join(parts) or "no candidate passed"


def choose(ctx: StageContext):
    """Hard filters, then the majority vote of the policies (and the grounding's), one winner per pair."""
    from .fed import POLICIES
    from .selection import select

    critic, k = ctx.config.critic, ctx.iteration

    def write(out: Path) -> dict:
        selected, stats = select(
            ctx.rows("critiques", k),
            filter_thresholds(critic),
            [name for name in critic.experts if name in POLICIES],
            grounding=grounding_rule(critic),
        )
        save_rows(selected, out)
        if not selected:
            logger.warning("Iteration %d selected no conversation: %s.", k, empty_selection_cause(stats))
        elif len(selected) < TINY_SELECTION * stats["pairs"]:
            logger.warning(
                "Iteration %d selected a conversation for only %d of %d pairs (%s), so the generator trains on "
                "%s: sample more candidates (generation.num_candidates), lower the critic thresholds, or train on "
                "seed conversations too (loop.replay_seed).",
                k,
                len(selected),
                stats["pairs"],
                empty_selection_cause(stats),
                "1 selected row" if len(selected) == 1 else f"{len(selected)} selected rows",
            )
        return {"rows": len(selected), **stats}

    return write


def stop_if_nothing_selected(recipe, folder: Path) -> None:
    """An empty selection leaves nothing to train on: the loop stops there, in one line."""
    from ..runs import StageInputError, read_stage

    record = read_stage(folder)
    if record and record["rows"] == 0 and recipe.loop.train:
        raise StageInputError(
            f"Iteration {int(folder.parent.name.removeprefix('iter-'))} selected no conversation "
            f"({empty_selection_cause(record)}), so there is nothing to train on: lower that threshold or sample more "
            "candidates, then re-run the same command."
        )


def _said_critique(summary: dict) -> str:
    return f"{summary['rows']} candidates scored by {len(summary['experts'])} experts"


def _said_select(summary: dict) -> str:
    return f"a conversation for {summary['rows']} of {summary['pairs']} pairs"


CRITIQUE = Stage(
    name="critiques",
    command="critique",
    reads=tuple(
        f"critic.{name}"
        for name in (
            "experts",
            "toxicity_model",
            "faithfulness_examples",
            "faithfulness_phrasing",
            "shard_size",
            "min_option_mass",
        )
    ),
    work=critique,
    inputs=lambda selected, k: [Input("candidates", k)],
    roles=critique_roles,
    per_iteration=True,
    describe=_said_critique,
)
SELECT = Stage(
    name="selected",
    command="select",
    reads=tuple(
        f"critic.{name}"
        for name in (
            "experts",
            "faithfulness_threshold",
            "faithfulness_nli_threshold",
            "toxicity_threshold",
            "persona_grounding_threshold",
            "persona_grounding_role",
        )
    ),
    work=choose,
    inputs=lambda selected, k: [Input("critiques", k)],
    per_iteration=True,
    gate=stop_if_nothing_selected,
    describe=_said_select,
)
