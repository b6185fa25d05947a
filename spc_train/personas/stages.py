"""The personas room's stages (PAPER.md §1): persona expansion, user profiles, user pairs."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

from ..configs import ModelSpec, PersonaExpansionConfig
from ..runs import save_rows
from ..stage import Input, Stage, StageContext

logger = logging.getLogger(__name__)

EXPANSION_FIELDS = tuple(f"personas.{f.name}" for f in dataclasses.fields(PersonaExpansionConfig))


def expand(ctx: StageContext):
    """Persona expansion (PAPER.md §1.1): seed attributes, clusters, queries, new attributes."""
    from . import expand_personas, seed_attributes

    personas = ctx.config.personas
    expansion = PersonaExpansionConfig(
        **{f.name: getattr(personas, f.name) for f in dataclasses.fields(PersonaExpansionConfig)}
    )

    def write(out: Path) -> dict:
        attributes = seed_attributes(ctx.rows("seed"))
        result = expand_personas(
            attributes,
            embed=ctx.models.embed(),
            complete=ctx.models.complete(),
            config=expansion,
            seed=ctx.config.loop.seed,
        )
        rows = [{**row, "embedding": vector.tolist()} for row, vector in zip(result.attributes, result.embeddings)]
        save_rows(rows, out)
        (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in result.queries))
        generated = sum(row["source"] == "generated" for row in result.attributes)
        if generated == 0 and expansion.target_new_attributes > 0:
            logger.warning(
                "Persona expansion made no new attribute (wanted %d; rejected: %s): the profiles use the seed's "
                "attributes only. A stronger or instruction-tuned generator writes usable first-person attributes; "
                "or set personas.target_new_attributes: 0 to skip expansion.",
                expansion.target_new_attributes,
                result.rejections.get("attributes") or "none",
            )
        return {
            "rows": len(rows),
            "new_attributes": generated,
            "queries": len(result.queries),
            "statistics": result.statistics,
            "rejections": result.rejections,
        }

    return write


def build(ctx: StageContext):
    """User profiles (PAPER.md §1.2): k attributes each, non-redundant, NLI-consistent."""
    import numpy as np

    from ..nli import load_nli
    from . import build_profiles, llm_negate

    personas = ctx.config.personas

    def write(out: Path) -> dict:
        rows = ctx.rows("personas")
        profiles, rejections = build_profiles(
            [row["attribute"] for row in rows],
            np.asarray([row["embedding"] for row in rows], dtype=np.float32),
            nli=load_nli(ModelSpec(name_or_path=personas.nli_model)),
            negate=llm_negate(ctx.models.complete()),
            count=personas.num_profiles,
            size=personas.profile_size,
            seed=ctx.config.loop.seed,
            redundancy_threshold=personas.redundancy_threshold,
            entailment_threshold=personas.entailment_threshold,
            max_attempts=personas.max_attempts,
        )
        save_rows([{"profile_id": f"profile-{i:05d}", "persona": p} for i, p in enumerate(profiles)], out)
        (out / "rejections.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rejections))
        reasons: dict[str, int] = {}
        for rejection in rejections:
            reasons[rejection["reason"]] = reasons.get(rejection["reason"], 0) + 1
        return {"rows": len(profiles), "rejections": reasons}

    return write


def pair(ctx: StageContext):
    """User pairs: seed pairs (a deterministic sample), pairs of new profiles sharing > min_shared persona clusters
    (PAPER.md §1.3), or both, as `personas.source` says."""
    from . import pair_users

    personas, seed = ctx.config.personas, ctx.config.loop.seed

    def write(out: Path) -> dict:
        pairs = []
        if personas.source in ("seed", "both"):
            records = ctx.rows("seed")
            count = min(personas.num_pairs or len(records), len(records))
            chosen = sorted(random.Random(seed).sample(range(len(records)), count))
            pairs += [
                {
                    "pair_id": records[i]["pair_id"],
                    "user1_persona": records[i]["user1_persona"],
                    "user2_persona": records[i]["user2_persona"],
                    "shared_clusters": -1,
                    "source": "seed",
                }
                for i in chosen
            ]
        if personas.source in ("generated", "both"):
            cluster_of = {row["attribute"]: row["cluster"] for row in ctx.rows("personas")}
            profiles = [row["persona"] for row in ctx.rows("profiles")]
            pairs += pair_users(
                profiles,
                cluster_of,
                min_shared=personas.min_shared,
                partners_per_user=personas.partners_per_user,
                max_pairs=personas.num_pairs,
                seed=seed,
            )
        save_rows(pairs, out)
        by_source = {name: sum(p["source"] == name for p in pairs) for name in ("seed", "generated")}
        return {"rows": len(pairs), "by_source": by_source}

    return write


def _pair_inputs(selected, iteration) -> list[Input]:
    generated = [Input("personas"), Input("profiles")] if selected.personas.source != "seed" else []
    return [Input("seed"), *generated]


def _said_personas(summary: dict) -> str:
    new = summary["new_attributes"]
    return f"{summary['rows'] - new} seed + {new} new attributes, {summary['queries']} queries"


def _said_profiles(summary: dict) -> str:
    return f"{summary['rows']} profiles"


def _said_pairs(summary: dict) -> str:
    return f"{summary['rows']} pairs ({', '.join(f'{n} {source}' for source, n in summary['by_source'].items())})"


PERSONAS = Stage(
    name="personas",
    command="expand-personas",
    reads=EXPANSION_FIELDS + ("loop.seed",),
    work=expand,
    inputs=lambda selected, iteration: [Input("seed")],
    roles=("completion", "embedder"),
    describe=_said_personas,
)
PROFILES = Stage(
    name="profiles",
    command="build-profiles",
    reads=tuple(
        f"personas.{name}"
        for name in ("num_profiles", "profile_size", "redundancy_threshold", "entailment_threshold", "max_attempts")
    )
    + ("loop.seed",),
    work=build,
    inputs=lambda selected, iteration: [Input("personas")],
    roles=("completion", "nli"),
    describe=_said_profiles,
)
PAIRS = Stage(
    name="pairs",
    command="pair-users",
    reads=tuple(f"personas.{name}" for name in ("source", "num_pairs", "min_shared", "partners_per_user"))
    + ("loop.seed",),
    work=pair,
    inputs=_pair_inputs,
    describe=_said_pairs,
)
