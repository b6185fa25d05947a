"""Each iteration's numbers to experiment trackers (`loop.report_to`: TensorBoard, Trackio, Weights & Biases).

Built on accelerate's tracker classes (`accelerate.tracking`: `start`, `log(values, step=k)`, `finish`), used
without an `Accelerator`: one made here would fix the accelerate state that the stages' own Trainer sets up.

After an iteration's evaluation the loop sends that iteration's numbers, with step = the iteration: its evaluation
metrics (`eval/...`), the selection's counts and pass rates (`select/...`), the judges' option mass
(`critic/option_mass/...`) and the adapter's training summary (`train/...`); after the report, `report.md` as text
(TensorBoard only: the others have no text panel). The main process logs; the stages' outputs are read, never
changed, so no fingerprint depends on `loop.report_to`.

TensorBoard writes to `RUN/trackers/`, one event stream per run directory, and records what it holds in
`RUN/trackers/logged.json`: a resumed loop sends only what is new or changed, and a changed iteration (a stage re-run
on a new recipe) is written again from its step on, with TensorBoard's purge step, so the older values are hidden
instead of doubled. Trackio and W&B start a new tracker run per `spc-train loop`, which receives every iteration the
loop passes, finished earlier or now, so each tracker run holds the whole series.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from .configs import TRACKER_CHOICES, RecipeError
from .runs import RunDir, read_stage, write_json_atomic

logger = logging.getLogger(__name__)

# tracker -> the package it needs (what `pip install` gets: the same name); `all`: every one installed, `none`: none.
TRACKERS = {name: name for name in TRACKER_CHOICES if name not in ("none", "all")}
LOGGING_DIR = "trackers"  # RUN/trackers
LEDGER_FILE = "logged.json"
PROJECT = "spc_train"  # the Trackio and W&B project; the run is named after the run directory
TEXT_TRACKERS = {"tensorboard"}  # trackers that show a markdown text


def installed(name: str) -> bool:
    return importlib.util.find_spec(TRACKERS[name]) is not None


def resolve(report_to: list[str]) -> list[str]:
    """The trackers `report_to` names, in order: `none` (or nothing) none, `all` every tracker installed. A named
    tracker whose package is missing is refused in one line that says what to install."""
    if "all" in report_to:
        names = [name for name in TRACKERS if installed(name)]
        if not names:
            logger.warning("loop.report_to is `all` but no tracker is installed (%s): none used.", ", ".join(TRACKERS))
        return names
    names = list(dict.fromkeys(name for name in report_to if name != "none"))
    missing = [TRACKERS[name] for name in names if not installed(name)]
    if missing:
        raise RecipeError(
            f"loop.report_to asks for {', '.join(missing)}, which is not installed: pip install {' '.join(missing)} "
            "(or pip install 'spc_train[trackers]'), or set loop.report_to: none."
        )
    return names


def check_trackers(report_to: list[str]) -> str:
    """For `check`: the trackers a run would use, in a line; refuses a missing package (`resolve`)."""
    names = resolve(report_to)
    return f"trackers: {', '.join(names)}" if names else "trackers: none"


def _numbers(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """`{prefix/name: value}` of the finite numbers in `values`, a level of nested mappings flattened by name."""
    out: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out |= _numbers(f"{prefix}/{name}", value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"{prefix}/{name}"] = value
    return out


def iteration_values(run: RunDir, k: int, trained: bool = True) -> dict[str, float]:
    """The numbers of iteration `k` that trackers receive, from its stages' records (`stage.json`)."""
    values: dict[str, float] = {}
    evaluation = read_stage(run.stage_dir("eval", k)) or {}
    values |= _numbers("eval", evaluation.get("metrics", {}))
    selection = read_stage(run.stage_dir("selected", k)) or {}
    keys = ("selected", "candidates", "pairs", "parse_rate", "pass_rate")
    values |= _numbers("select", {key: selection[key] for key in keys if key in selection})
    values |= _numbers("select/pass_rate", selection.get("filter_pass_rates", {}))
    critiques = read_stage(run.stage_dir("critiques", k)) or {}
    mass = {expert: entry.get("mean") for expert, entry in (critiques.get("option_mass") or {}).items()}
    values |= _numbers("critic/option_mass", mass)
    if trained:  # a run that does not train may hold an older recipe's adapter
        adapter = read_stage(run.stage_dir("adapter", k)) or {}
        keys = ("train_loss", "final_loss", "steps", "rows")
        values |= _numbers("train", {key: adapter[key] for key in keys if key in adapter})
    return values


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Trackers:
    """The loop's trackers while it runs: `with Trackers(recipe, run) as trackers: ... trackers.stage_done(stage, k)`.

    Made on every process (the package check refuses the same everywhere); only the main process logs. A tracker
    starts at its first log, so a resumed loop with nothing new opens no TensorBoard file.
    """

    def __init__(self, recipe, run: RunDir):
        from accelerate import PartialState

        self.names = resolve(recipe.loop.report_to)
        self.run = run
        self.trained = recipe.loop.train
        self.last_step = recipe.loop.iterations - 1
        self.main = PartialState().is_main_process
        self.folder = run.root / LOGGING_DIR
        self._started: dict[str, Any] = {}

    # -- the ledger of what TensorBoard holds ------------------------------------------------------------------------
    def _ledger(self) -> dict[str, dict[str, Any]]:
        """`{key: {"step", "digest"}}` of what RUN/trackers holds (key: `iter-NN` or `report`)."""
        try:
            return json.loads((self.folder / LEDGER_FILE).read_text()).get("tensorboard", {})
        except (FileNotFoundError, ValueError):
            return {}

    def _save_ledger(self, ledger: dict[str, dict[str, Any]]) -> None:
        write_json_atomic(self.folder / LEDGER_FILE, {"tensorboard": ledger})

    # -- trackers ----------------------------------------------------------------------------------------------------
    def _tracker(self, name: str, purge_step: int | None = None):
        if name not in self._started:
            from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker

            run_name = self.run.root.resolve().name
            if name == "tensorboard":
                self.folder.mkdir(parents=True, exist_ok=True)
                tracker = TensorBoardTracker("", str(self.folder), purge_step=purge_step)
            elif name == "wandb":
                self.folder.mkdir(parents=True, exist_ok=True)
                tracker = WandBTracker(os.environ.get("WANDB_PROJECT", PROJECT), name=run_name, dir=str(self.folder))
            else:
                tracker = TrackioTracker(PROJECT, name=run_name)
            tracker.start()
            self._started[name] = tracker
            logger.info("tracker %s started%s", name, f" in {self.folder}" if name == "tensorboard" else "")
        return self._started[name]

    def log(self, key: str, step: int, values: dict[str, Any]) -> None:
        """Send `values` at `step` to every tracker (text values to those that show text); TensorBoard skips what
        it holds already, and rewrites from `step` on what changed."""
        if not self.main or not values:
            return
        for name in self.names:
            sent = values if name in TEXT_TRACKERS else {k: v for k, v in values.items() if not isinstance(v, str)}
            if not sent:
                continue
            if name != "tensorboard":
                self._tracker(name).log(sent, step=step)
                continue
            ledger, entry = self._ledger(), {"step": step, "digest": _digest(sent)}
            if ledger.get(key) == entry:
                continue
            # Values at this step or later are held already: an iteration whose stages re-ran. A first write purges
            # them (TensorBoard hides what an older file holds from `purge_step` on); they are sent again as the
            # loop goes on. The report's text is only added again: a purge at its step would hide the last iteration.
            later = any(held["step"] >= step for held in ledger.values())
            purge = key != "report" and later and name not in self._started
            self._tracker(name, purge_step=step if purge else None).log(sent, step=step)
            if purge:
                logger.info("TensorBoard: %s changed; its values from step %d on are written again.", key, step)
                ledger = {k: held for k, held in ledger.items() if held["step"] < step}
            self._save_ledger({**ledger, key: entry})

    def iteration(self, k: int) -> None:
        self.log(f"iter-{k:02d}", k, iteration_values(self.run, k, self.trained))

    def report(self) -> None:
        path = self.run.stage_dir("report") / "report.md"
        if path.is_file():
            self.log("report", self.last_step, {"report": path.read_text(encoding="utf-8")})

    def stage_done(self, stage, k: int | None) -> None:
        """After a stage of the loop is done (run now or earlier): an iteration's evaluation sends the iteration's
        numbers, the report its text."""
        if stage.command == "evaluate" and k is not None:
            self.iteration(k)
        elif stage.command == "report":
            self.report()

    def close(self) -> None:
        for name, tracker in self._started.items():
            try:
                tracker.finish()
            except Exception as error:  # a tracker that fails to close must not hide the loop's own outcome
                logger.warning("tracker %s did not close: %s", name, error)
        self._started = {}

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log_run(recipe, run_dir: str | Path) -> None:
    """Send a finished run's iterations and report to the recipe's trackers (what the loop sends as it goes)."""
    run = RunDir(run_dir)
    with Trackers(recipe, run) as trackers:
        for k in range(recipe.loop.iterations):
            if read_stage(run.stage_dir("eval", k)):
                trackers.iteration(k)
        trackers.report()
