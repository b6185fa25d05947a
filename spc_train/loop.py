"""The iteration driver: wires the stages to the run directory, fingerprints them, skips what is done.

Each `stage_*` method can run alone (that is what `spc-train <stage>` calls): it reads its inputs from the run
directory, refuses to run if they are missing, and returns its output fingerprint. A stage whose fingerprint matches
its folder's `stage.json` is skipped; a changed config changes its fingerprint and, through the inputs, every
fingerprint downstream.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

from .configs import ModelSpec, Recipe, save_recipe
from .preflight import check_recipe
from .runs import (
    RunDir,
    StageInputError,
    fingerprint,
    load_rows,
    package_versions,
    read_shards,
    read_stage,
    save_rows,
    verify_stage,
)

logger = logging.getLogger(__name__)


def _source_identity(path: str | None) -> str | None:
    """Content hash of a local seed file or folder (a Hub id stands for itself)."""
    from .models import folder_hash

    if not path:
        return None
    local = Path(path).expanduser()
    if local.is_file():
        return hashlib.sha256(local.read_bytes()).hexdigest()[:20]
    if local.is_dir():
        return folder_hash(local)
    return path


def _write_metrics(measured: dict, out: Path) -> dict:
    """An evaluate stage's output: its one row of metrics, measured beforehand by every process."""
    from accelerate import PartialState

    save_rows([measured["metrics"]], out)
    return {"metrics": measured["metrics"], "processes": PartialState().num_processes}


def _empty_selection_cause(stats: dict) -> str:
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


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


class Loop:
    def __init__(self, recipe: Recipe, run_dir: str | Path, *, allow_stale: bool = False):
        self.recipe = recipe
        self.run = RunDir(run_dir)
        self.allow_stale = allow_stale
        self._identities: dict[str, Any] = {}
        self._plan: dict[str, dict] | None = None  # filled instead of running, while `plan()` walks the stages
        self._current: dict[str, dict] | None = None  # the plan a single stage command checks its inputs against

    def plan(self) -> dict[str, dict]:
        """Every stage the recipe runs, in loop order, as `{label: {"state", "fingerprint"}}`: `done` (its folder
        matches the recipe now), `stale` (made from another recipe or other inputs), `damaged` (a file changed) or
        `missing`. Runs and writes nothing; a stale stage makes every stage after it that reads it stale too."""
        self._plan = {}
        try:
            self._schedule()
            return self._plan
        finally:
            self._plan = None

    def refuse_stale_inputs(self) -> None:
        """For a stage run alone: its inputs must be current (`plan`), unless `allow_stale`."""
        self._current = None if self.allow_stale else self.plan()

    def current_fingerprints(self) -> dict[str, str]:
        """`{label: fingerprint}` of every stage of the recipe as it stands: what report, export and push trust."""
        return {label: entry["fingerprint"] for label, entry in self.plan().items()}

    # -- set-up ---------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the tiny models if the recipe asks for them, then `check_recipe`, then record the run."""
        from accelerate import PartialState

        state = PartialState()
        recipe = self.recipe
        if recipe.loop.tiny_models_dir:
            from .tiny import build_tiny_models, tiny_models_ready

            with state.main_process_first():  # one process builds them; the others then find them ready
                if not tiny_models_ready(recipe.loop.tiny_models_dir):
                    logger.info(
                        "Tiny models missing: building them in %s (about two minutes).", recipe.loop.tiny_models_dir
                    )
                    report = build_tiny_models(recipe.loop.tiny_models_dir)
                    logger.info("Tiny generator parse rate after warm-start: %.0f%%.", 100 * report["parse_rate"])
                    self._identities = {}  # a plan made before the build saw no weights to hash
        check_recipe(recipe, self.run.root)
        identities = self.identities()
        if state.is_main_process:
            self.run.root.mkdir(parents=True, exist_ok=True)
            save_recipe(recipe, self.run.root / "recipe.yaml")
            self.run.update_manifest(
                packages=package_versions(),
                seed=recipe.loop.seed,
                models=identities,
                recipe=recipe.path,
                processes=state.num_processes,
            )
        state.wait_for_everyone()

    def identities(self) -> dict[str, Any]:
        from .models import identity, spec_identity

        if not self._identities:
            self._identities = {
                "generator": spec_identity(self.recipe.model),
                "judge": spec_identity(self.recipe.judge_spec()),
                "toxicity": identity(self.recipe.critic.toxicity_model),
                "nli": identity(self.recipe.personas.nli_model),
            }
        return self._identities

    # -- plumbing -------------------------------------------------------------------------------------------------
    def _input(self, stage: str, iteration: int | None = None, command: str | None = None) -> tuple[Path, str]:
        folder = self.run.stage_dir(stage, iteration)
        label = folder.relative_to(self.run.root).as_posix()
        if self._plan is not None and label in self._plan:
            return folder, self._plan[label]["fingerprint"]
        record = read_stage(folder)
        if self._plan is not None:  # an input the recipe does not schedule
            return folder, record["fingerprint"] if record else "missing"
        where = f" --iteration {iteration}" if iteration is not None else ""
        if record is None:
            raise StageInputError(
                f"{folder} is missing or unfinished: run `spc-train {command or stage}{where}` (or `spc-train loop`)."
            )
        state = (self._current or {}).get(label, {}).get("state", "done")
        if state != "done":
            raise StageInputError(
                f"{label} is {state} for this recipe (see `spc-train status`): re-run `spc-train {command or stage}"
                f"{where}` first (or `spc-train loop`), or pass --allow_stale to use it as it is."
            )
        return folder, record["fingerprint"]

    def _optional_input(self, stage: str, iteration: int | None = None) -> str | None:
        """The fingerprint of an input a stage uses when it exists (the adapter an evaluation reports on)."""
        folder = self.run.stage_dir(stage, iteration)
        label = folder.relative_to(self.run.root).as_posix()
        if self._plan is not None and label in self._plan:
            return self._plan[label]["fingerprint"]
        record = read_stage(folder)
        return record["fingerprint"] if record else None

    def _stage(
        self, name: str, iteration: int | None, config: Any, inputs: list[str], models: dict, write, parallel=None
    ) -> str:
        """Skip if done; else `parallel(fp)` on every process (its share), then `write` on the main process only.

        Under `accelerate launch` every process computes the same fingerprints from the same run directory, so all
        agree on what to skip; only the main process writes shared files. With one process the barriers are no-ops.
        """
        from accelerate import PartialState

        state = PartialState()
        folder = self.run.stage_dir(name, iteration)
        fp = fingerprint(name, config, inputs, models, self.recipe.loop.seed)
        label = folder.relative_to(self.run.root).as_posix()
        if self._plan is not None:
            record = read_stage(folder)
            if record is None:
                state = "missing"
            elif record.get("fingerprint") != fp:
                state = "stale"
            else:
                state = "damaged" if verify_stage(folder) else "done"
            self._plan[label] = {"state": state, "fingerprint": fp}
            return fp
        if self.run.is_done(folder, fp):
            logger.info("skip %-22s (done, fingerprint %s)", label, fp)
            return fp
        logger.info("run  %-22s", label)
        started = time.perf_counter()
        if parallel is not None:
            parallel(fp)
        state.wait_for_everyone()
        if state.is_main_process:
            record = self.run.commit(folder, fp, write, stage=name, started=started)
            logger.info("done %-22s in %.1fs", label, record["seconds"])
        state.wait_for_everyone()
        return fp

    # -- stages ---------------------------------------------------------------------------------------------------
    def stage_seed(self) -> str:
        from .data import read_seed

        seed = self.recipe.seed
        if not seed.path:
            raise StageInputError("The recipe has no seed data: set `seed.path` (SPC CSV, JSONL, folder or Hub id).")

        def write(out: Path) -> dict:
            result = read_seed(
                seed.path,
                seed.format,
                strict=seed.strict,
                split=seed.split,
                limit=seed.max_conversations,
                normalize_names=seed.normalize_names,
            )
            logger.info("Seed %s: %s", seed.path, result.summary())
            save_rows(result.records, out)
            return {
                "rows_read": result.rows_read,
                "rows": len(result.records),
                "malformed": [dataclasses.asdict(m) for m in result.malformed],
                "notes": result.notes,
            }

        return self._stage("seed", None, self.recipe.section("seed"), [_source_identity(seed.path)], {}, write)

    def _complete(self):
        """The LLM as `complete(prompts) -> texts` for persona expansion and negation: the generation engine, one
        sample per prompt with the paper's sampling, each call seeded from its own counter (deterministic)."""
        from .data.prompts import render
        from .generation.engine import sample_conversations
        from .models import load_causal_lm, load_tokenizer

        loaded: dict[str, Any] = {}
        calls = [0]
        args, personas = self.recipe.generation, self.recipe.personas

        def complete(prompts: list[str]) -> list[str]:
            if not loaded:
                loaded["tokenizer"] = load_tokenizer(self.recipe.model)
                loaded["model"] = load_causal_lm(self.recipe.model)
            calls[0] += 1
            tokenizer = loaded["tokenizer"]
            samples = sample_conversations(
                loaded["model"],
                tokenizer,
                [render(tokenizer, p) for p in prompts],
                [f"complete-{calls[0]}-{i}" for i in range(len(prompts))],
                n=1,
                generation_kwargs={
                    "do_sample": True,
                    "temperature": args.temperature,
                    "top_k": args.top_k,
                    "top_p": args.top_p,
                    "max_new_tokens": personas.max_new_tokens,
                },
                batch_tokens=args.batch_tokens,
                seed=self.recipe.loop.seed,
            )
            return [group[0].text for group in samples]

        return complete

    def _embed(self):
        from .models import load_embedder

        embedder = load_embedder(self.recipe.personas.embedder)
        return lambda texts: embedder.encode(texts, normalize_embeddings=True, batch_size=128, convert_to_numpy=True)

    def stage_personas(self) -> str:
        """Persona expansion (PAPER.md §1.1): seed attributes, clusters, queries, new attributes."""
        from .configs import PersonaExpansionConfig
        from .models import identity, resolve_embedder
        from .personas import expand_personas, seed_attributes

        seed_dir, seed_fp = self._input("seed")
        personas = self.recipe.personas
        names = [f.name for f in dataclasses.fields(PersonaExpansionConfig)]
        expansion = PersonaExpansionConfig(**{name: getattr(personas, name) for name in names})
        config = {
            **dataclasses.asdict(expansion),
            "embedder": personas.embedder,
            "max_new_tokens": personas.max_new_tokens,
        }
        models = {
            "generator": self.identities()["generator"],
            "embedder": identity(resolve_embedder(personas.embedder)),
        }

        def write(out: Path) -> dict:
            attributes = seed_attributes(load_rows(seed_dir))
            result = expand_personas(
                attributes,
                embed=self._embed(),
                complete=self._complete(),
                config=expansion,
                seed=self.recipe.loop.seed,
            )
            rows = [{**row, "embedding": vector.tolist()} for row, vector in zip(result.attributes, result.embeddings)]
            save_rows(rows, out)
            (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in result.queries))
            generated = sum(row["source"] == "generated" for row in result.attributes)
            logger.info(
                "Personas: %d seed + %d new attributes, %d queries.", len(attributes), generated, len(result.queries)
            )
            return {
                "rows": len(rows),
                "new_attributes": generated,
                "queries": len(result.queries),
                "statistics": result.statistics,
                "rejections": result.rejections,
            }

        return self._stage("personas", None, config, [seed_fp], models, write)

    def stage_profiles(self) -> str:
        """User profiles (PAPER.md §1.2): k attributes each, non-redundant, NLI-consistent."""
        import numpy as np

        from .nli import load_nli
        from .personas import build_profiles, llm_negate

        personas_dir, personas_fp = self._input("personas", command="expand-personas")
        personas = self.recipe.personas
        keys = ("num_profiles", "profile_size", "redundancy_threshold", "entailment_threshold", "max_attempts")
        config = {key: getattr(personas, key) for key in keys} | {"nli_model": personas.nli_model}
        models = {"generator": self.identities()["generator"], "nli": self.identities().get("nli")}

        def write(out: Path) -> dict:
            rows = load_rows(personas_dir)
            nli = load_nli(ModelSpec(name_or_path=personas.nli_model))
            profiles, rejections = build_profiles(
                [row["attribute"] for row in rows],
                np.asarray([row["embedding"] for row in rows], dtype=np.float32),
                nli=nli,
                negate=llm_negate(self._complete()),
                count=personas.num_profiles,
                size=personas.profile_size,
                seed=self.recipe.loop.seed,
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

        return self._stage("profiles", None, config, [personas_fp], models, write)

    def stage_pairs(self) -> str:
        """User pairs: seed pairs (a deterministic sample), pairs of new profiles sharing > min_shared persona
        clusters (PAPER.md §1.3), or both, as `personas.source` says."""
        import random

        from .personas import pair_users

        personas = self.recipe.personas
        if personas.source not in ("seed", "generated", "both"):
            raise ValueError(f"personas.source must be seed, generated or both, not '{personas.source}'.")
        seed_dir, seed_fp = self._input("seed")
        inputs = [seed_fp]
        if personas.source != "seed":
            personas_dir, personas_fp = self._input("personas", command="expand-personas")
            profiles_dir, profiles_fp = self._input("profiles", command="build-profiles")
            inputs += [personas_fp, profiles_fp]
        keys = ("source", "num_pairs", "min_shared", "partners_per_user")
        config = {key: getattr(personas, key) for key in keys}

        def write(out: Path) -> dict:
            pairs = []
            if personas.source in ("seed", "both"):
                records = load_rows(seed_dir)
                count = min(personas.num_pairs or len(records), len(records))
                chosen = sorted(random.Random(self.recipe.loop.seed).sample(range(len(records)), count))
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
                cluster_of = {row["attribute"]: row["cluster"] for row in load_rows(personas_dir)}
                profiles = [row["persona"] for row in load_rows(profiles_dir)]
                pairs += pair_users(
                    profiles,
                    cluster_of,
                    min_shared=personas.min_shared,
                    partners_per_user=personas.partners_per_user,
                    max_pairs=personas.num_pairs,
                    seed=self.recipe.loop.seed,
                )
            save_rows(pairs, out)
            by_source = {name: sum(p["source"] == name for p in pairs) for name in ("seed", "generated")}
            return {"rows": len(pairs), "by_source": by_source}

        return self._stage("pairs", None, config, inputs, {}, write)

    def _pool(self, iteration: int) -> tuple[list[Path], list[str]]:
        """Few-shot pool P_k: the seed conversations, plus the selections of earlier iterations if the pool grows."""
        folders, fps = [], []
        folder, fp = self._input("seed")
        folders.append(folder)
        fps.append(fp)
        if self.recipe.loop.grow_pool:
            for k in range(iteration):
                folder, fp = self._input("selected", k, "select")
                folders.append(folder)
                fps.append(fp)
        return folders, fps

    def _adapter_for(self, iteration: int) -> tuple[str | None, str | None]:
        """The adapter the generator of `iteration` loads: the one trained at the previous iteration."""
        if iteration == 0 or not self.recipe.loop.train:
            return None, None
        folder, fp = self._input("adapter", iteration - 1, "train")
        return str(folder), fp

    def stage_generate(self, iteration: int) -> str:
        """Candidates. Every process generates its shards (data parallel); the main process merges them in order."""
        import shutil

        from accelerate import PartialState

        from .generation.candidates import generate_shards, save_generation_config
        from .models import load_causal_lm, load_tokenizer

        pairs_dir, pairs_fp = self._input("pairs", command="pair-users")
        pool_dirs, pool_fps = self._pool(iteration)
        adapter, adapter_fp = self._adapter_for(iteration)
        args = self.recipe.generation
        shots = 0 if adapter and args.zero_shot_with_adapter else args.few_shot_examples
        config = {**self.recipe.section("generation"), "few_shot_used": shots, "iteration": iteration}
        inputs = [pairs_fp, *pool_fps, adapter_fp]
        models = {"generator": self.identities()["generator"]}
        seed = self.recipe.loop.seed
        shards_dir = self.run.stage_dir("candidates", iteration).with_name(".candidates.shards")
        state = PartialState()
        stats: dict[str, Any] = {}
        loaded: dict[str, Any] = {}

        def generate(fp: str) -> None:
            if state.is_main_process:  # shards of an older fingerprint are not ours to resume from
                self.run.scratch(self.run.stage_dir("candidates", iteration), "shards", fp)
            state.wait_for_everyone()
            pairs = load_rows(pairs_dir)
            pool = [row for folder in pool_dirs for row in load_rows(folder)]
            loaded["tokenizer"] = load_tokenizer(self.recipe.model)
            loaded["model"] = load_causal_lm(self.recipe.model, adapter=adapter)
            stats.update(
                generate_shards(
                    loaded["model"],
                    loaded["tokenizer"],
                    pairs,
                    pool,
                    shards_dir,
                    args=args,
                    seed=seed,
                    iteration=iteration,
                    few_shot_examples=shots,
                    process_index=state.process_index,
                    num_processes=state.num_processes,
                ),
                pairs=len(pairs),
            )

        def write(out: Path) -> dict:
            rows = read_shards(shards_dir, stats["num_shards"])
            if rows is None:
                raise RuntimeError(f"A shard is missing from {shards_dir} after generation; re-run to resume.")
            save_rows(rows, out)
            save_generation_config(loaded["model"], loaded["tokenizer"], args, out)
            shutil.rmtree(shards_dir)
            return {
                "rows": len(rows),
                "adapter": adapter,
                "few_shot_examples": shots,
                "processes": state.num_processes,
                "parse_rate": _mean(float(r["parsed"]) for r in rows),
                "stopped_rate": _mean(float(r["finish_reason"] == "stop") for r in rows),
                **stats,
            }

        return self._stage("candidates", iteration, config, inputs, models, write, parallel=generate)

    def _judge_loaders(self, data_parallel: bool = False):
        """`judge()` and `classifier(path)` that load on first use (and once), and the dict holding what was loaded.

        `data_parallel`: the judge splits each call across processes (for stages every process runs whole).
        """
        from .judge import DataParallelJudge, Judge
        from .models import load_causal_lm, load_classifier, load_tokenizer

        critic, judge_spec = self.recipe.critic, self.recipe.judge_spec()
        loaded: dict[str, Any] = {}

        def judge() -> Judge:
            if "judge" not in loaded:
                kind = DataParallelJudge if data_parallel else Judge
                loaded["judge"] = kind(
                    load_causal_lm(judge_spec), load_tokenizer(judge_spec), critic.batch_tokens, critic.judge_context
                )
            return loaded["judge"]

        def classifier(path: str):
            if path not in loaded:
                role = "NLI classifier" if path == critic.nli_model else "toxicity classifier"
                spec = ModelSpec(name_or_path=path, dtype=judge_spec.dtype)
                loaded[path] = load_classifier(spec, role), load_tokenizer(spec, padding_side="right")
            return loaded[path]

        return judge, classifier, loaded

    def stage_critique(self, iteration: int) -> str:
        """Critiques. Every process scores its shards of user pairs (data parallel); the main process merges them."""
        import shutil

        from accelerate import PartialState

        from .critic.critiques import critique_shards
        from .critic.registry import build_experts
        from .models import identity

        candidates_dir, candidates_fp = self._input("candidates", iteration, "generate")
        critic = self.recipe.critic
        # Thresholds and the grounding's role only matter to `select`: changing them must not re-score. The embedder
        # counts only where `persona_grounding` uses it, so runs without that expert keep their fingerprints.
        grounded = "persona_grounding" in critic.experts
        selection_only = ("persona_grounding_role",) + (() if grounded else ("embedder",))
        config = {
            k: v
            for k, v in self.recipe.section("critic").items()
            if not k.endswith("_threshold") and k not in selection_only
        }
        models = {"judge": self.identities()["judge"], "toxicity": self.identities()["toxicity"]}
        if grounded:
            from .models import resolve_embedder

            models["embedder"] = identity(resolve_embedder(critic.embedder))
        if critic.nli_model and "faithfulness_nli" in critic.experts:
            models["nli"] = identity(critic.nli_model)
        folder = self.run.stage_dir("critiques", iteration)
        shards_dir = folder.with_name(".critiques.shards")
        state = PartialState()
        judge, classifier, loaded = self._judge_loaders()
        stats: dict[str, Any] = {}

        def score(fp: str) -> None:
            if state.is_main_process:  # shards of an older fingerprint are not ours to resume from
                self.run.scratch(folder, "shards", fp)
            state.wait_for_everyone()
            candidates = load_rows(candidates_dir)
            stats.update(
                critique_shards(
                    candidates,
                    partial(build_experts, critic, judge, classifier),
                    shards_dir,
                    shard_size=critic.shard_size,
                    process_index=state.process_index,
                    num_processes=state.num_processes,
                )
            )

        def write(out: Path) -> dict:
            rows = read_shards(shards_dir, stats["num_shards"])
            if rows is None:
                raise RuntimeError(f"A shard is missing from {shards_dir} after critique; re-run to resume.")
            save_rows(rows, out)
            shutil.rmtree(shards_dir)
            used = loaded.get("judge")
            return {
                "rows": len(rows),
                "experts": critic.experts,
                "processes": state.num_processes,
                **stats,
                "judge_prompts_truncated": used.truncated if used else 0,
                "judge_examples_dropped": used.examples_dropped if used else 0,
            }

        return self._stage("critiques", iteration, config, [candidates_fp], models, write, parallel=score)

    def thresholds(self) -> dict[str, float]:
        critic = self.recipe.critic
        known = {
            "faithfulness": critic.faithfulness_threshold,
            "faithfulness_nli": critic.faithfulness_nli_threshold,
            "toxicity": critic.toxicity_threshold,
        }
        return {name: value for name, value in known.items() if name in critic.experts}

    def grounding(self) -> tuple[str, float | None] | None:
        """How `persona_grounding` takes part in the selection (role, threshold), if it is an expert."""
        critic = self.recipe.critic
        if "persona_grounding" not in critic.experts:
            return None
        return critic.persona_grounding_role, critic.persona_grounding_threshold

    def stage_select(self, iteration: int) -> str:
        from .critic.fed import POLICIES
        from .critic.selection import select

        critiques_dir, critiques_fp = self._input("critiques", iteration, "critique")
        thresholds = self.thresholds()
        policies = [name for name in self.recipe.critic.experts if name in POLICIES]
        grounding = self.grounding()

        def write(out: Path) -> dict:
            selected, stats = select(load_rows(critiques_dir), thresholds, policies, grounding=grounding)
            save_rows(selected, out)
            if not selected:
                logger.warning("Iteration %d selected no conversation: %s.", iteration, _empty_selection_cause(stats))
            elif stats["pairs_without_survivor"]:
                logger.info(
                    "%d pairs have no candidate that passes the filters.", len(stats["pairs_without_survivor"])
                )
            return {"rows": len(selected), **stats}

        config = {"thresholds": thresholds, "policies": policies}
        if grounding:  # only when used, so runs without the expert keep their fingerprints
            config["grounding"] = list(grounding)
        return self._stage("selected", iteration, config, [critiques_fp], {}, write)

    def stage_sft_data(self, iteration: int) -> str:
        from .training.data import sft_rows

        # `continue` trains on this iteration's selection; `fresh` on everything selected so far.
        first = iteration if self.recipe.loop.update == "continue" else 0
        sources = [self._input("selected", k, "select") for k in range(first, iteration + 1)]

        def write(out: Path) -> dict:
            rows = sft_rows([row for folder, _ in sources for row in load_rows(folder)])
            save_rows(rows, out)
            return {"rows": len(rows)}

        config = {"update": self.recipe.loop.update}
        return self._stage("train", iteration, config, [fp for _, fp in sources], {}, write)

    def stage_train(self, iteration: int) -> str:
        """LoRA SFT. Every process trains (DDP/FSDP/ZeRO under `accelerate launch`); checkpoints go to a scratch
        folder of this fingerprint, so a killed run resumes from its last checkpoint; the main process saves."""
        import shutil

        from accelerate import PartialState
        from datasets import load_from_disk

        from .training.sft import train_adapter

        data_dir, data_fp = self._input("train", iteration, "sft-data")
        init_adapter, init_fp = (None, None)
        if self.recipe.loop.update == "continue":
            init_adapter, init_fp = self._adapter_for(iteration)
        config = {"training": self.recipe.section("training"), "model": self.recipe.section("model")}
        models = {"generator": self.identities()["generator"]}
        seed = self.recipe.loop.seed + iteration
        folder = self.run.stage_dir("adapter", iteration)
        scratch = folder.with_name(".adapter.checkpoints")
        state = PartialState()
        stats: dict[str, Any] = {}

        def train(fp: str) -> None:
            if state.is_main_process:
                self.run.scratch(folder, "checkpoints", fp)
            state.wait_for_everyone()
            rows = load_from_disk(str(data_dir), keep_in_memory=True)  # no cache files in the run
            if len(rows) == 0:
                raise StageInputError(
                    f"No conversation passed the critic at iteration {iteration}, so there is nothing to train on "
                    f"(see {self.run.stage_dir('selected', iteration)}/stage.json). Lower the critic thresholds, "
                    "sample more candidates, or set loop.train: false."
                )
            args = self.recipe.sft_config(output_dir=str(scratch), seed=seed)
            stats.update(train_adapter(rows, self.recipe.model, args, scratch / "final", init_adapter=init_adapter))

        def write(out: Path) -> dict:
            for path in (scratch / "final").iterdir():
                if path.name != "training_args.bin":  # a pickle of this run's paths; the recipe has the values
                    shutil.move(str(path), out / path.name)
            shutil.rmtree(scratch)
            return stats

        return self._stage("adapter", iteration, config, [data_fp, init_fp], models, write, parallel=train)

    def _evaluation_inputs(self) -> tuple[dict, dict]:
        """The evaluate stages' config and models (their fingerprint), and lazy loaders of those models."""
        from functools import cache

        from .critic.registry import EXPERTS
        from .evaluation.evaluate import Evaluators, nli_contradicting
        from .models import identity
        from .personas.profiles import llm_negate

        recipe, critic = self.recipe, self.recipe.critic
        asked = set(recipe.evaluation.measurements)
        judged = asked & {"detection", "extraction", "llm_judge"}
        nli_path = recipe.personas.nli_model or critic.nli_model
        config = {
            "evaluation": recipe.section("evaluation"),
            "toxicity": {k: v for k, v in recipe.section("critic").items() if k.startswith("toxicity")},
            "seed": recipe.loop.seed,
        }
        models = {"judge": self.identities()["judge"] if judged else None}
        if "embedding" in asked:
            models["embedder"] = identity(recipe.personas.embedder)
        if "toxicity" in asked:
            models["toxicity"] = self.identities()["toxicity"] or self.identities()["judge"]
        if "extraction" in asked:
            models |= {"generator (negation)": self.identities()["generator"], "nli": identity(nli_path)}
        judge, classifier, _ = self._judge_loaders(data_parallel=True)

        def toxicity(records: list[dict]) -> list[float]:
            expert = EXPERTS["toxicity"]("toxicity", critic, judge, classifier)
            return expert.score([{**record, "parsed": True} for record in records])

        def contradicting():
            from .nli import load_nli

            nli = load_nli(ModelSpec(name_or_path=nli_path)) if nli_path else None
            return nli_contradicting(nli) if hasattr(nli, "contradiction") else None

        evaluators = Evaluators(
            judge=judge,
            embed=cache(self._embed),
            toxicity=toxicity,
            negate=lambda: llm_negate(self._complete()),
            contradicting=contradicting,
        )
        return {"config": config, "models": models}, evaluators

    def stage_evaluate_seed(self) -> str:
        """The seed conversations of the run's pairs, measured like an iteration: the report's first column."""
        from .evaluation.evaluate import evaluate_dataset

        seed_dir, seed_fp = self._input("seed")
        pairs_dir, pairs_fp = self._input("pairs", command="pair-users")
        spec, evaluators = self._evaluation_inputs()
        recipe = self.recipe
        measured: dict[str, Any] = {}

        def measure(fp: str) -> None:  # on every process: the judge divides its passes among them
            pair_ids = {pair["pair_id"] for pair in load_rows(pairs_dir)}
            seed = [record for record in load_rows(seed_dir) if record["pair_id"] in pair_ids]
            measured["metrics"] = evaluate_dataset(
                seed,
                config=recipe.evaluation,
                evaluators=evaluators,
                toxicity_threshold=recipe.critic.toxicity_threshold,
                seed=recipe.loop.seed,
            )

        inputs = [seed_fp, pairs_fp]
        write = partial(_write_metrics, measured)
        return self._stage("eval", None, spec["config"], inputs, spec["models"], write, parallel=measure)

    def stage_evaluate(self, iteration: int) -> str:
        """The iteration's selection measured against the seed, plus the critic's and the training's numbers."""
        from .evaluation.evaluate import evaluate_dataset

        critiques_dir, critiques_fp = self._input("critiques", iteration, "critique")
        selected_dir, selected_fp = self._input("selected", iteration, "select")
        seed_dir, seed_fp = self._input("seed")
        inputs = [critiques_fp, selected_fp, seed_fp]
        adapter_fp = self._optional_input("adapter", iteration) if self.recipe.loop.train else None
        if adapter_fp:
            inputs.append(adapter_fp)
        spec, evaluators = self._evaluation_inputs()
        recipe = self.recipe
        measured: dict[str, Any] = {}

        def measure(fp: str) -> None:  # on every process: the judge divides its passes among them
            from .evaluation.metrics import bootstrap_mean_interval

            adapter = read_stage(self.run.stage_dir("adapter", iteration)) if adapter_fp else None
            selection = read_stage(selected_dir)
            generated = read_stage(self.run.stage_dir("candidates", iteration)) or {}
            critiques = load_rows(critiques_dir)
            selected = load_rows(selected_dir)
            seed = load_rows(seed_dir)
            stored = [row["scores"].get("toxicity") for row in selected]
            metrics = measured["metrics"] = evaluate_dataset(
                selected,
                config=recipe.evaluation,
                evaluators=evaluators,
                reference=seed,
                toxicity_scores=stored if "toxicity" in recipe.critic.experts else None,
                toxicity_threshold=recipe.critic.toxicity_threshold,
                seed=recipe.loop.seed,
            )
            metrics.update(
                candidates=len(critiques),
                parse_rate=selection["parse_rate"],
                stopped_rate=generated.get("stopped_rate", float("nan")),
                pass_rate=selection["pass_rate"],
                sft_loss=adapter["train_loss"] if adapter else float("nan"),
            )
            # Filters: mean over all candidates. Policies: a mean pairwise win rate over all candidates is 0.5 by
            # construction, so report the selected candidates' win rate instead.
            for name in recipe.critic.experts:
                if name in self.thresholds():
                    metrics[f"{name}_mean"] = _mean(row["scores"].get(name) for row in critiques)
                elif name == "persona_grounding":  # absolute: its mean over all candidates shows the generator move
                    mean, low, high = bootstrap_mean_interval(
                        [row["scores"].get(name) for row in critiques], seed=recipe.loop.seed
                    )
                    metrics |= {
                        f"{name}_candidates_{key}": v for key, v in zip(("mean", "low", "high"), (mean, low, high))
                    }
                    metrics[f"{name}_selected_mean"] = _mean(row["scores"].get(name) for row in selected)
                else:
                    metrics[f"{name}_selected_win_rate"] = _mean(row["scores"].get(name) for row in selected)

        config = {**spec["config"], "experts": recipe.critic.experts}
        write = partial(_write_metrics, measured)
        return self._stage("eval", iteration, config, inputs, spec["models"], write, parallel=measure)

    def stage_report(self) -> str:
        from .evaluation.summary import write_run_report

        if self._plan is None:
            self.run.current = self.current_fingerprints()  # iterations of this recipe, as it stands, only
            iterations = self.run.finished("eval")
        else:
            iterations = list(range(self.recipe.loop.iterations))
        inputs = [self._input("seed")[1], self._input("pairs", command="pair-users")[1]]
        inputs += [self._input("eval", None, "evaluate-seed")[1]]
        inputs += [self._input("eval", k, "evaluate")[1] for k in iterations]
        config = {"iterations": iterations, "thresholds": self.thresholds()}
        return self._stage(
            "report", None, config, inputs, {}, lambda out: write_run_report(self.run, out, self.thresholds())
        )

    # -- the loop -------------------------------------------------------------------------------------------------
    def run_all(self) -> None:
        self.prepare()
        self._schedule()

    def _schedule(self) -> None:
        """The stages in loop order: run, or (while planning) only fingerprinted."""
        self.stage_seed()
        if self.recipe.personas.source != "seed":
            self.stage_personas()
            self.stage_profiles()
        self.stage_pairs()
        self.stage_evaluate_seed()
        for k in range(self.recipe.loop.iterations):
            self.stage_generate(k)
            self.stage_critique(k)
            self.stage_select(k)
            self._stop_if_nothing_selected(k)
            if self.recipe.loop.train:
                self.stage_sft_data(k)
                self.stage_train(k)
            self.stage_evaluate(k)
            self.push()
        self.stage_report()
        self.push()

    def _stop_if_nothing_selected(self, iteration: int) -> None:
        """An empty selection leaves nothing to train on or evaluate: the loop stops there, in one line."""
        record = read_stage(self.run.stage_dir("selected", iteration))
        if self._plan is None and record and record["rows"] == 0 and self.recipe.loop.train:
            raise StageInputError(
                f"Iteration {iteration} selected no conversation ({_empty_selection_cause(record)}), so there is "
                "nothing to train on: lower that threshold or sample more candidates, then re-run the same command."
            )

    def push(self) -> None:
        """Push what is finished to `hub.repo_id` (main process); the push ledger skips what is already there."""
        from accelerate import PartialState

        hub = self.recipe.hub
        if hub.repo_id and self._plan is None and PartialState().is_main_process:
            from .hub import push_run

            result = push_run(
                self.run.root,
                hub.repo_id,
                current=self.current_fingerprints(),
                model_repo_id=hub.model_repo_id,
                private=hub.private,
                include_candidates=hub.include_candidates,
            )
            logger.info("Hub: %s", result.summary())
