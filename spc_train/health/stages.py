"""The judge-health stage: the recipe's judges probed once, on questions with known answers, before their numbers
are used (docs/judge_health.md). It runs again only when a judge (its identity) or the probe settings change."""

from __future__ import annotations

from pathlib import Path

from ..critic.stages import critique_roles
from ..evaluation.stages import evaluation_roles
from ..model_roles import ROLES
from ..runs import read_stage
from ..stage import Input, Stage, StageContext
from .blind import enforce
from .card import read_card, write_card
from .suite import run_probes


def _roles(selected) -> tuple[str, ...]:
    referee = ("referee",) if selected.referee.held_out_pairs else ()
    return tuple(sorted(set(critique_roles(selected)) | set(evaluation_roles(selected)) | set(referee)))


def probe(ctx: StageContext):
    models = ctx.models
    card = run_probes(
        ctx.config,
        models.judge,
        models.classifier,
        ctx.rows("seed"),
        identity=ROLES["judge"].identity(ctx.config) if "judge" in _roles(ctx.config) else None,
        referee=models.referee,
    )

    def write(out: Path) -> dict:
        write_card(card, out)
        return {"entries": len(card["entries"]), "verdicts": {e["name"]: e["verdict"] for e in card["entries"]}}

    return write


def refuse_blind(recipe, folder: Path) -> None:
    """After the probes (run now or earlier): name every judge at chance; with `loop.on_blind_judge: stop`, stop."""
    if read_stage(folder) is not None:
        enforce(read_card(folder), recipe.loop.on_blind_judge)


def _said(summary: dict) -> str:
    verdicts = list(summary["verdicts"].values())
    return ", ".join(f"{verdicts.count(v)} {v}" for v in ("informative", "weak", "at chance")) + " (probes/card.md)"


PROBES = Stage(
    name="probes",
    command="probe-judges",
    reads=(
        "critic.experts",
        "critic.toxicity_model",
        "critic.faithfulness_examples",
        "critic.faithfulness_phrasing",
        "critic.probe_conversations",
        "critic.probe_informative",
        "critic.probe_weak",
        "critic.min_option_mass",
        "evaluation.measurements",
        "evaluation.llm_judge_families",
        "referee.held_out_pairs",
        "referee.criteria",
        "referee.mode",
        # the selector probe selects as the recipe does
        "critic.faithfulness_threshold",
        "critic.faithfulness_nli_threshold",
        "critic.toxicity_threshold",
        "critic.persona_grounding_threshold",
        "critic.persona_grounding_role",
        "loop.seed",
    ),
    work=probe,
    inputs=lambda selected, k: [Input("seed")],
    roles=_roles,
    gate=refuse_blind,
    describe=_said,
)


def probe_recipe(recipe) -> dict:
    """`spc-train check --probe`: the card of a recipe's judges on its own seed file, before any run."""
    from ..data import read_seed
    from ..model_roles import Models

    seed = recipe.seed
    records = read_seed(
        seed.path, seed.format, split=seed.split, limit=seed.max_conversations, normalize_names=seed.normalize_names
    ).records
    models = Models(recipe)
    uses_judge = "judge" in _roles(recipe)
    card = run_probes(
        recipe,
        models.judge,
        models.classifier,
        records,
        identity=ROLES["judge"].identity(recipe) if uses_judge else None,
        referee=models.referee,
    )
    enforce(card, "warn")
    return card
