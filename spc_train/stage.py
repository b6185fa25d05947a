"""The shape every stage has: what it reads, and the work that reads only that.

A stage declares the recipe fields it reads (`reads`: "generation" for a whole section, "loop.seed" for one field),
the stages whose folders it reads (`inputs`) and the model roles it loads (`roles`). Its work receives `selected`,
a recipe in which the declared fields (and those of its model roles) hold the run's values and every other field
its default, so nothing else of the recipe can reach the work. The fingerprint is computed from exactly that
selection, the inputs' fingerprints and the roles' identities: a field cannot be used without being fingerprinted
(as a DataDreamer step hashes the arguments it receives, or a distilabel step its declared fields).

`work(ctx)` runs on every process (under `accelerate launch`, each takes its share) and returns `write(out)`, which
the main process calls to fill the stage's folder and which returns the summary kept in `stage.json`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configs import _UNRECORDED_TRAINING_KEYS, SECTIONS, Recipe
from .runs import RunDir, load_rows

# Fields that change how a run is watched, scheduled or shared, never what a stage makes. A stage that reads one is
# given it, but it does not count in the fingerprint; fields no stage reads are here too. One place, with the reason.
NO_OUTPUT: dict[str, str] = {
    **{
        f"training.{key}": "how training is logged, not what it learns"
        for key in (
            "report_to",
            "logging_steps",
            "logging_strategy",
            "logging_first_step",
            "logging_nan_inf_filter",
            "disable_tqdm",
            "log_level",
            "log_level_replica",
            "log_on_each_node",
        )
    },
    **{
        f"training.{key}": "the run's own paths, set by the loop where it trains, or a secret"
        for key in sorted(_UNRECORDED_TRAINING_KEYS)
    },
    "hub": "pushing copies finished stages to the Hub; it makes none",
    "loop.tiny_models_dir": "builds the tiny models when missing; their weights count through the roles' identities",
    "loop.iterations": "how many iterations are scheduled; each iteration's stages are their own",
    "loop.on_blind_judge": "whether the loop goes on past a judge at chance; the probes and their card are the same",
    "loop.report_to": "which trackers receive each iteration's metrics, read from finished stages; they make nothing",
}


def makes_no_output(path: str) -> bool:
    return path in NO_OUTPUT or path.partition(".")[0] in NO_OUTPUT


@dataclass(frozen=True)
class Input:
    """Another stage's folder that a stage reads; `optional`: used when it exists (an evaluation's adapter)."""

    name: str
    iteration: int | None = None
    optional: bool = False


@dataclass(frozen=True)
class Stage:
    """One step of the loop, defined in its room (personas, generation, critic, training, evaluation)."""

    name: str  # its folder: RUN/<name>, or RUN/iter-NN/<name> for an iteration's stage
    command: str  # `spc-train <command>` runs it alone
    reads: tuple[str, ...]  # recipe fields its work may see: a section name, or "section.field"
    work: Callable[[StageContext], Callable[[Path], dict]]
    inputs: Callable[[Recipe, int | None], list[Input]] = lambda selected, iteration: []
    roles: Callable[[Recipe], tuple[str, ...]] | tuple[str, ...] = ()
    per_iteration: bool = False
    outside: Callable[[Recipe], list[Any]] = lambda selected: []  # identities of data from outside the run
    # After the stage is done (now or earlier), may stop the loop: `gate(recipe, folder)` raises to say why.
    gate: Callable[[Recipe, Path], None] | None = None
    # What the stage made, in a few words from its `stage.json` summary: the end of its line in the log.
    describe: Callable[[dict], str] | None = None

    def role_names(self, selected: Recipe) -> tuple[str, ...]:
        return self.roles(selected) if callable(self.roles) else self.roles


def _value(section: Any, name: str) -> Any:
    return section[name] if isinstance(section, dict) else getattr(section, name)


def expand(reads: tuple[str, ...], recipe: Recipe) -> dict[str, list[str]]:
    """`{section: [field, ...]}` for the dotted or whole-section `reads` (whole `training`: the recipe's keys)."""
    fields: dict[str, list[str]] = {}
    for path in reads:
        section, _, name = path.partition(".")
        if section not in SECTIONS:
            raise KeyError(f"Unknown recipe section in a stage's reads: {path!r}")
        if name:
            names = [name]
        elif section == "training":
            names = [key for key in recipe.training if key not in _UNRECORDED_TRAINING_KEYS]
        else:
            names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        fields.setdefault(section, [])
        fields[section] += [n for n in names if n not in fields[section]]
    return fields


def selected(recipe: Recipe, reads: tuple[str, ...]) -> Recipe:
    """The recipe as a stage sees it: the fields of `reads` as in `recipe`, every other field at its default."""
    fields = expand(reads, recipe)
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        names = fields.get(section, [])
        values = {name: _value(getattr(recipe, section), name) for name in names}
        sections[section] = values if cls is None else cls(**values)
    return Recipe(**sections)


def fingerprint_config(recipe: Recipe, reads: tuple[str, ...]) -> dict[str, Any]:
    """`{"section.field": value}` of every declared field that makes output: the config part of a fingerprint."""
    return {
        f"{section}.{name}": _value(getattr(recipe, section), name)
        for section, names in expand(reads, recipe).items()
        for name in names
        if not makes_no_output(f"{section}.{name}")
    }


@dataclass
class StageContext:
    """What a stage's work is given: its selection of the recipe, its inputs' folders, its models, its folder."""

    stage: Stage
    config: Recipe  # the selection (see `selected`)
    iteration: int | None
    run: RunDir
    folder: Path
    fingerprint: str
    models: Any  # `model_roles.Models` over the selection
    inputs: list[Input] = field(default_factory=list)  # the declared inputs it uses (an optional one when found)
    input_fingerprints: dict[str, str] = field(default_factory=dict)  # `{label: fingerprint}` of those inputs
    current: dict[str, str] | None = None  # a stage run alone: `{label: fingerprint}` the recipe gives every stage

    def declares(self, name: str, iteration: int | None = None) -> bool:
        """Whether the stage reads this input (an input its selection declares only for some recipes)."""
        return any(i.name == name and i.iteration == iteration for i in self.inputs)

    def input(self, name: str, iteration: int | None = None) -> Path:
        """The folder of a declared input."""
        if not self.declares(name, iteration):
            raise KeyError(f"Stage {self.stage.name} reads {name} (iteration {iteration}) without declaring it.")
        return self.run.stage_dir(name, iteration)

    def rows(self, name: str, iteration: int | None = None) -> list[dict]:
        return load_rows(self.input(name, iteration))

    def scratch(self, kind: str) -> Path:
        """A work folder of this fingerprint beside the stage's folder (shards, checkpoints) that a killed run resumes
        from: the main process clears one left by another fingerprint, then every process may use it."""
        from accelerate import PartialState

        state = PartialState()
        if state.is_main_process:
            self.run.scratch(self.folder, kind, self.fingerprint)
        state.wait_for_everyone()
        return self.folder.with_name(f".{self.folder.name}.{kind}")

    @property
    def process(self):
        from accelerate import PartialState

        return PartialState()
