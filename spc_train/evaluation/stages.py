"""The evaluation room's stages (PAPER.md §3): the seed and each iteration measured alike, then the run's report."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from ..configs import ModelSpec
from ..runs import RunDir, read_stage, save_rows
from ..stage import Input, Stage, StageContext
from .referee_stages import evaluation_inputs, held_out_metrics

logger = logging.getLogger(__name__)

JUDGED = {"detection", "extraction", "llm_judge"}
# A fall in the parse or stopped rate after an adapter is worth a warning when it is this many standard errors (a
# two-proportion z-test): 20 points at 48 candidates, 10 at 200; a smaller fall can be the sampling's noise.
FORMAT_DROP_Z = 2.0
FORMAT_RATES = (
    ("parse_rate", "parsed"),
    ("stopped_rate", "stopped by the model"),
    ("complete_rate", "parsed and stopped"),  # a whole conversation
)


def evaluation_roles(selected) -> tuple[str, ...]:
    asked, critic = set(selected.evaluation.measurements), selected.critic
    roles = ["judge"] if asked & JUDGED or ("toxicity" in asked and not critic.toxicity_model) else []
    roles += ["embedder"] if "embedding" in asked else []
    roles += ["toxicity"] if "toxicity" in asked and critic.toxicity_model else []
    roles += ["completion", "nli", "critic nli"] if "extraction" in asked else []  # negation, then its NLI check
    return tuple(roles)


def evaluators(ctx: StageContext):
    """Loaders of the measurements' models: each loads on first use (the judge divides its passes among processes)."""
    from functools import cache

    from ..critic.registry import EXPERTS
    from ..personas.profiles import llm_negate
    from .evaluate import Evaluators, nli_contradicting

    config, models = ctx.config, ctx.models
    nli_path = config.personas.nli_model or config.critic.nli_model

    def judge():
        return models.judge(data_parallel=True)

    def toxicity(records: list[dict]) -> list[float]:
        expert = EXPERTS["toxicity"]("toxicity", config.critic, judge, models.classifier)
        return expert.score([{**record, "parsed": True} for record in records])

    def contradicting():
        from ..nli import load_nli

        nli = load_nli(ModelSpec(name_or_path=nli_path)) if nli_path else None
        return nli_contradicting(nli) if hasattr(nli, "contradiction") else None

    return Evaluators(
        judge=judge,
        embed=cache(models.embed),
        toxicity=toxicity,
        negate=lambda: llm_negate(models.complete()),
        contradicting=contradicting,
    )


def _write_metrics(metrics: dict, ctx: StageContext):
    def write(out: Path) -> dict:
        save_rows([metrics], out)
        return {"metrics": metrics, "processes": ctx.process.num_processes}

    return write


def evaluate_seed(ctx: StageContext):
    """The seed conversations of the run's pairs, measured like an iteration: the report's first column."""
    from .evaluate import evaluate_dataset

    pair_ids = {pair["pair_id"] for pair in ctx.rows("pairs")}
    seed = [record for record in ctx.rows("seed") if record["pair_id"] in pair_ids]
    config = ctx.config
    metrics = evaluate_dataset(
        seed,
        config=config.evaluation,
        evaluators=evaluators(ctx),
        toxicity_threshold=config.critic.toxicity_threshold,
        seed=config.loop.seed,
        min_option_mass=config.critic.min_option_mass,
    )
    return _write_metrics(metrics | held_out_metrics(ctx), ctx)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def expert_metrics(critic, critiques: list[dict], selected: list[dict], seed: int) -> dict[str, float]:
    """Filters: mean over all candidates. Policies: a mean pairwise win rate over all candidates is 0.5 by
    construction, so the selected candidates' win rate. Persona grounding is absolute: its mean over all candidates,
    with a bootstrap interval, shows the generator move apart from the selection."""
    from ..critic.selection import GROUNDING, filter_thresholds
    from .metrics import bootstrap_mean_interval

    metrics: dict[str, float] = {}
    for name in critic.experts:
        if name in filter_thresholds(critic):
            metrics[f"{name}_mean"] = _mean(row["scores"].get(name) for row in critiques)
        elif name == GROUNDING:
            values = bootstrap_mean_interval([row["scores"].get(name) for row in critiques], seed=seed)
            metrics |= {f"{name}_candidates_{key}": v for key, v in zip(("mean", "low", "high"), values)}
            metrics[f"{name}_selected_mean"] = _mean(row["scores"].get(name) for row in selected)
        else:
            metrics[f"{name}_selected_win_rate"] = _mean(row["scores"].get(name) for row in selected)
    return metrics


def evaluate(ctx: StageContext):
    """The iteration's selection measured against the seed, plus the critic's and the training's numbers."""
    from .evaluate import evaluate_dataset

    config, k = ctx.config, ctx.iteration
    trained = any(i.name == "adapter" for i in ctx.inputs)
    adapter = read_stage(ctx.input("adapter", k)) if trained else None
    critiques, selected = ctx.rows("critiques", k), ctx.rows("selected", k)
    selection = read_stage(ctx.input("selected", k))
    stored = [row["scores"].get("toxicity") for row in selected]
    generation = read_stage(ctx.input("candidates", k)) or {}
    pair_ids = {pair["pair_id"] for pair in ctx.rows("pairs")}
    metrics = evaluate_dataset(
        selected,
        config=config.evaluation,
        evaluators=evaluators(ctx),
        # the seed column's conversations: never a replayed one, which the generator was trained on
        reference=[record for record in ctx.rows("seed") if record["pair_id"] in pair_ids],
        toxicity_scores=stored if "toxicity" in config.critic.experts else None,
        toxicity_threshold=config.critic.toxicity_threshold,
        seed=config.loop.seed,
        min_option_mass=config.critic.min_option_mass,
    )
    metrics.update(
        candidates=len(critiques),
        parse_rate=selection["parse_rate"],
        stopped_rate=generation.get("stopped_rate", math.nan),
        complete_rate=generation.get("complete_rate", math.nan),
        pass_rate=selection["pass_rate"],
        sft_loss=adapter["train_loss"] if adapter else math.nan,
    )
    metrics |= expert_metrics(config.critic, critiques, selected, config.loop.seed)
    metrics |= held_out_metrics(ctx)
    if any(i.name == "candidates" and i.iteration == k - 1 for i in ctx.inputs):
        warn_if_format_fell(k, read_stage(ctx.input("candidates", k - 1)) or {}, metrics)
    return _write_metrics(metrics, ctx)


def fell_significantly(before: float, after: float, n_before: int, n_after: int) -> bool:
    """Whether a rate fell by FORMAT_DROP_Z standard errors or more (pooled two-proportion z-test)."""
    if not (n_before and n_after) or math.isnan(before) or math.isnan(after):
        return False
    pooled = (before * n_before + after * n_after) / (n_before + n_after)
    error = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_after))
    return error > 0 and (before - after) / error >= FORMAT_DROP_Z


def warn_if_format_fell(k: int, before: dict, after: dict) -> None:
    """One line when the generator of iteration k, trained on iteration k-1's selection, writes the format worse:
    fewer candidates parsed, or fewer ended by the model (so more are cut at max_new_tokens), by more than noise."""
    n_before, n_after = before.get("rows", 0), after.get("candidates", 0)
    fell = {
        label: (before[key], after[key])
        for key, label in FORMAT_RATES
        if fell_significantly(before.get(key, math.nan), after.get(key, math.nan), n_before, n_after)
    }
    if fell:
        logger.warning(
            "Iteration %d's generator writes the format worse than iteration %d's (%s, of %d and %d candidates). "
            "Seed conversations replayed in training (loop.replay_seed), fewer training epochs "
            "(training.num_train_epochs), more pairs or candidates to select from (personas.num_pairs, "
            "generation.num_candidates), or loop.train: false (the few-shot pool alone) may help; docs/real-models.md "
            "shows such cases.",
            k,
            k - 1,
            ", ".join(f"{label} {a:.0%} -> {b:.0%}" for label, (a, b) in fell.items()),
            n_before,
            n_after,
        )


def report(ctx: StageContext):
    """report.md, metrics.json and plots of the iterations whose evaluation is current."""
    from ..critic.selection import filter_thresholds
    from .summary import write_run_report

    # Alone, what the recipe makes as it stands (a stale iteration is named as such); in the loop, what it read.
    run = RunDir(ctx.run.root, current=ctx.current or ctx.input_fingerprints)
    return lambda out: write_run_report(run, out, filter_thresholds(ctx.config.critic))


READS = (
    "evaluation",
    "critic.toxicity_model",
    "critic.toxicity_threshold",
    "critic.min_option_mass",
    "loop.seed",
    "referee.held_out_pairs",
)


def _said(summary: dict) -> str:
    return f"{len(summary['metrics'])} metrics"


EVALUATE_SEED = Stage(
    name="eval",
    command="evaluate-seed",
    reads=READS,
    work=evaluate_seed,
    inputs=lambda selected, k: [Input("seed"), Input("pairs"), *evaluation_inputs(selected, None)],
    roles=evaluation_roles,
    describe=_said,
)
EVALUATE = Stage(
    name="eval",
    command="evaluate",
    reads=READS + ("critic.experts", "loop.train"),
    work=evaluate,
    inputs=lambda selected, k: [
        Input("seed"),
        Input("pairs"),
        *evaluation_inputs(selected, k),
        Input("candidates", k),
        Input("critiques", k),
        Input("selected", k),
        *([Input("adapter", k, optional=True)] if selected.loop.train else []),
        *([Input("candidates", k - 1, optional=True)] if k and selected.loop.train else []),  # the format before
    ],
    roles=evaluation_roles,
    per_iteration=True,
    describe=_said,
)


def _report_inputs(selected, k) -> list[Input]:
    every = [
        (name, j) for j in range(selected.loop.iterations) for name in ("critiques", "selected", "adapter", "eval")
    ]
    optional = [Input("probes", optional=True), *(Input(name, j, optional=True) for name, j in every)]
    return [Input("seed"), Input("pairs"), Input("eval"), *optional]


REPORT = Stage(
    name="report",
    command="report",
    reads=("loop.iterations",)
    + tuple(f"critic.{name}" for name in ("experts", "faithfulness_threshold", "faithfulness_nli_threshold"))
    + ("critic.toxicity_threshold",),
    work=report,
    inputs=_report_inputs,
    describe=lambda summary: f"{len(summary['iterations'])} iterations in report/report.md",
)
