"""The scheduler: the stages in loop order; each fingerprinted, then skipped (done) or run, with the process barriers.

The stages live in their rooms (`spc_train/<room>/stages.py`) and have one shape (`stage.Stage`). A stage whose
fingerprint matches its folder's `stage.json` is skipped; a changed field it reads changes its fingerprint and,
through the inputs, every fingerprint downstream. Under `accelerate launch` every process computes the same
fingerprints from the same run directory, so all agree on what to skip; only the main process writes shared files.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .configs import Recipe, save_recipe
from .critic.stages import CRITIQUE, SELECT
from .data.stages import SEED
from .evaluation.referee_stages import HELD_OUT, HELD_OUT_GENERATIONS, REFEREE
from .evaluation.stages import EVALUATE, EVALUATE_SEED, REPORT
from .generation.stages import GENERATE
from .health.stages import PROBES
from .model_roles import ROLES, Models
from .personas.stages import PAIRS, PERSONAS, PROFILES
from .preflight import check_recipe
from .runs import RunDir, StageInputError, fingerprint, package_versions, read_stage, verify_stage
from .stage import Input, Stage, StageContext, fingerprint_config, selected
from .training.stages import SFT_DATA, TRAIN

logger = logging.getLogger(__name__)


def _generated_users(recipe: Recipe, k: int | None) -> bool:
    return recipe.personas.source != "seed"


def _trains(recipe: Recipe, k: int | None) -> bool:
    return recipe.loop.train


def _refereed(recipe: Recipe, k: int | None) -> bool:
    return bool(recipe.referee.held_out_pairs)


def _refereed_after_0(recipe: Recipe, k: int | None) -> bool:
    return _refereed(recipe, k) and bool(k)  # iteration k's generator against iteration 0's


# (stage, whether the recipe schedules it at iteration k), in loop order. A new stage is defined in its room and
# listed here.
SETUP = [
    (SEED, None),
    (PERSONAS, _generated_users),
    (PROFILES, _generated_users),
    (PAIRS, None),
    (HELD_OUT, _refereed),
    (PROBES, None),
    (EVALUATE_SEED, None),
]
ITERATION = [
    (GENERATE, None),
    (CRITIQUE, None),
    (SELECT, None),
    (SFT_DATA, _trains),
    (TRAIN, _trains),
    (HELD_OUT_GENERATIONS, _refereed),
    (REFEREE, _refereed_after_0),
    (EVALUATE, None),
]
FINISH = [(REPORT, None)]
# The model roles whose identities `manifest.json` records (the report's header and `reproduce` read them).
MANIFEST_ROLES = ("generator", "judge", "toxicity", "nli", "critic nli", "embedder", "critic embedder", "referee")
STAGES: dict[str, Stage] = {stage.command: stage for stage, _ in SETUP + ITERATION + FINISH}


def producer(name: str, iteration: int | None) -> Stage:
    """The stage that writes folder `name` (of an iteration or not)."""
    return next(s for s in STAGES.values() if s.name == name and s.per_iteration == (iteration is not None))


class Loop:
    trackers = None  # while `run_all` runs: `trackers.Trackers`, where each iteration's metrics go

    def __init__(self, recipe: Recipe, run_dir: str | Path, *, allow_stale: bool = False):
        self.recipe = recipe
        self.run = RunDir(run_dir)
        self.allow_stale = allow_stale
        self._identities: dict[str, Any] = {}
        self._plan: dict[str, dict] | None = None  # filled instead of running, while `plan()` walks the stages
        self._current: dict[str, dict] | None = None  # the plan a single stage command checks its inputs against

    def plan(self) -> dict[str, dict]:
        """Every stage the recipe runs, in loop order, as `{label: {"state", "fingerprint", "reads", "inputs"}}`.

        `state`: `done` (its folder matches the recipe now), `stale` (made from another recipe or other inputs),
        `damaged` (a file changed) or `missing`. Runs and writes nothing; a stale stage makes every stage after it
        that reads it stale too. `reads` and `inputs` are the recipe fields and input labels it is fingerprinted on.
        """
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

    def prepare(self) -> None:
        """Build the tiny models if the recipe asks for them, then `check_recipe`, then record the run."""
        from accelerate import PartialState

        state, recipe = PartialState(), self.recipe
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
        if state.is_main_process:
            self.run.root.mkdir(parents=True, exist_ok=True)
            save_recipe(recipe, self.run.root / "recipe.yaml")
            models = {role: self._identity(role, recipe) for role in MANIFEST_ROLES}
            # The recipe's own file; a stage command that read RUN/recipe.yaml keeps the one recorded.
            own = recipe.path and Path(recipe.path).resolve() != (self.run.root / "recipe.yaml").resolve()
            self.run.update_manifest(
                packages=package_versions(), seed=recipe.loop.seed, models=models,
                processes=state.num_processes, **({"recipe": recipe.path} if own else {}),
            )  # fmt: skip
        state.wait_for_everyone()

    def _identity(self, role: str, recipe: Recipe) -> Any:
        """The role's identity (a weights hash), computed once per value of the fields that make it."""
        key = role + json.dumps(fingerprint_config(recipe, ROLES[role].reads), sort_keys=True, default=str)
        if key not in self._identities:
            self._identities[key] = ROLES[role].identity(recipe)
        return self._identities[key]

    # -- one stage --------------------------------------------------------------------------------------------------
    def run_stage(self, command: str, iteration: int | None = None) -> str:
        """Run one stage (`spc-train <command>`), from inputs already in the run directory."""
        return self._run(STAGES[command], iteration)

    def _input(self, wanted: Input) -> str | None:
        """An input's fingerprint: planned, or recorded (current, unless `allow_stale`); None: optional, not there."""
        folder = self.run.stage_dir(wanted.name, wanted.iteration)
        label = folder.relative_to(self.run.root).as_posix()
        if self._plan is not None and label in self._plan:
            return self._plan[label]["fingerprint"]
        record = read_stage(folder)
        state = (self._current or {}).get(label, {}).get("state", "done")
        if wanted.optional:
            return record["fingerprint"] if record and state == "done" else None
        if self._plan is not None:  # an input the recipe does not schedule
            return record["fingerprint"] if record else "missing"
        where = f" --iteration {wanted.iteration}" if wanted.iteration is not None else ""
        command = producer(wanted.name, wanted.iteration).command
        if record is None:
            raise StageInputError(
                f"{folder} is missing or unfinished: run `spc-train {command}{where}` (or `spc-train loop`)."
            )
        if state != "done":
            raise StageInputError(
                f"{label} is {state} for this recipe (see `spc-train status`): re-run `spc-train {command}{where}` "
                "first (or `spc-train loop`), or pass --allow_stale to use it as it is."
            )
        return record["fingerprint"]

    def _run(self, stage: Stage, iteration: int | None) -> str:
        """Skip if done; else the stage's work on every process (its share), then its write on the main process."""
        from accelerate import PartialState

        roles = stage.role_names(selected(self.recipe, stage.reads))
        reads = stage.reads + tuple(field for role in roles for field in ROLES[role].reads)
        config = selected(self.recipe, reads)
        if roles != stage.role_names(self.recipe) or stage.inputs(config, iteration) != stage.inputs(
            self.recipe, iteration
        ):
            raise RuntimeError(f"Stage {stage.command} chooses its roles or inputs by a field it does not declare.")
        inputs: list[Input] = []
        fingerprints: dict[str, str] = {}
        for wanted in stage.inputs(config, iteration):
            fp = self._input(wanted)
            if fp is not None:
                inputs.append(wanted)
                fingerprints[
                    self.run.stage_dir(wanted.name, wanted.iteration).relative_to(self.run.root).as_posix()
                ] = fp
        folder = self.run.stage_dir(stage.name, iteration)
        label = folder.relative_to(self.run.root).as_posix()
        models = {role: self._identity(role, config) for role in roles}
        outside = stage.outside(config)
        fp = fingerprint(label, fingerprint_config(config, reads), [*outside, *fingerprints.values()], models, None)
        if self._plan is not None:
            record = read_stage(folder)
            if record is None:
                status = "missing"
            elif record.get("fingerprint") != fp:
                status = "stale"
            else:
                status = "damaged" if verify_stage(folder) else "done"
            self._plan[label] = {"state": status, "fingerprint": fp, "reads": reads, "inputs": list(fingerprints)}
            return fp
        if self.run.is_done(folder, fp):
            logger.info("skip %-22s (done, fingerprint %s)", label, fp)
            return fp
        logger.info("run  %-22s", label)
        started, state = time.perf_counter(), PartialState()
        current = {label: entry["fingerprint"] for label, entry in self._current.items()} if self._current else None
        ctx = StageContext(
            stage, config, iteration, self.run, folder, fp, Models(config), inputs, fingerprints, current
        )
        write = stage.work(ctx)
        state.wait_for_everyone()
        if state.is_main_process:
            record = self.run.commit(folder, fp, write, stage=stage.name, started=started)
            said = f": {stage.describe(record)}" if stage.describe else ""
            logger.info("done %-22s in %.1fs%s", label, record["seconds"], said)
        state.wait_for_everyone()
        return fp

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run_all(self) -> None:
        from .trackers import Trackers

        self.trackers = Trackers(self.recipe, self.run)  # `loop.report_to`; a tracker not installed stops here
        with self.trackers:
            self.prepare()
            self._schedule()

    def order(self) -> Iterator[tuple[Stage, int | None]]:
        """The stages the recipe schedules, with their iteration, in loop order."""
        yield from ((stage, None) for stage, when in SETUP if when is None or when(self.recipe, None))
        for k in range(self.recipe.loop.iterations):
            yield from ((stage, k) for stage, when in ITERATION if when is None or when(self.recipe, k))
        yield from ((stage, None) for stage, when in FINISH if when is None or when(self.recipe, None))

    def _schedule(self) -> None:
        """The stages in loop order: run, or (while planning) only fingerprinted. After each, its gate may stop the
        loop (a blind judge, an empty selection), and after each iteration what is finished goes to the Hub."""
        for stage, k in self.order():
            self._run(stage, k)
            if self._plan is None and self.trackers is not None:
                self.trackers.stage_done(stage, k)  # an iteration's metrics, after its evaluation
            if self._plan is None and stage.gate is not None:
                stage.gate(self.recipe, self.run.stage_dir(stage.name, k))
            if stage is ITERATION[-1][0] or stage is FINISH[-1][0]:
                self.push()

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
