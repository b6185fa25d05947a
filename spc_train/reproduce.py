"""`spc-train reproduce`: re-run one iteration of a run from what the run recorded, and compare stage by stage.

The run's `recipe.yaml`, seeds and inputs (everything before iteration K) are copied into a scratch run directory;
iteration K's stages run there offline (HF_HUB_OFFLINE=1); each stage's fingerprint (what went in) and output hash
(what came out) are compared with the recorded `stage.json`, and the recorded output is re-hashed on disk, so an
output edited after the run is caught too. On CPU a reproduction must match exactly; on GPU, kernels may differ.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .configs import parse_recipe
from .loop import Loop
from .models import folder_hash, spec_identity
from .runs import RunDir, read_stage

logger = logging.getLogger(__name__)

ITERATION_STAGES = [
    ("candidates", "stage_generate"),
    ("critiques", "stage_critique"),
    ("selected", "stage_select"),
    ("train", "stage_sft_data"),
    ("adapter", "stage_train"),
    ("eval", "stage_evaluate"),
]


def _copy_inputs(run: RunDir, iteration: int, work: Path) -> None:
    """Everything iteration K reads: users, seed, and the earlier iterations (pool, adapter)."""
    for path in run.root.iterdir():
        if path.name.startswith("iter-"):
            if int(path.name[5:]) < iteration:
                shutil.copytree(path, work / path.name)
        elif path.is_dir() and path.name not in ("report",) and not path.name.startswith("."):
            shutil.copytree(path, work / path.name)


def reproduce(run_dir: str | Path, iteration: int, work_dir: str | Path | None = None) -> list[dict]:
    """Per stage of `iteration`: whether fingerprint, reproduced output and on-disk output match the record."""
    run = RunDir(run_dir)
    if (
        read_stage(run.stage_dir("eval", iteration)) is None
        and read_stage(run.stage_dir("selected", iteration)) is None
    ):
        raise FileNotFoundError(f"{run.root} has no finished iteration {iteration} to reproduce.")
    recipe = parse_recipe(run.root / "recipe.yaml")
    recorded_models = run.manifest().get("models", {})
    for role, spec in (("generator", recipe.model), ("judge", recipe.judge_spec())):
        if recorded_models.get(role) and recorded_models[role] != spec_identity(spec):
            logger.warning("The %s differs from the one recorded in the manifest: outputs will differ.", role)
    work = Path(work_dir or tempfile.mkdtemp(prefix="spc-train-reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    _copy_inputs(run, iteration, work)
    loop = Loop(recipe, work)
    loop.prepare()
    results = []
    for name, method in ITERATION_STAGES:
        recorded = read_stage(run.stage_dir(name, iteration))
        if recorded is None:
            continue  # e.g. train stages of a run with loop.train: false
        getattr(loop, method)(iteration)
        redone = read_stage(loop.run.stage_dir(name, iteration))
        results.append(
            {
                "stage": f"iter-{iteration:02d}/{name}",
                "fingerprint": redone["fingerprint"] == recorded["fingerprint"],
                "output": redone.get("output_hash") == recorded.get("output_hash"),
                "on_disk": folder_hash(run.stage_dir(name, iteration)) == recorded.get("output_hash"),
            }
        )
    return results


def format_results(results: list[dict]) -> str:
    mark = {True: "match", False: "DIFFERS"}
    lines = [f"{'stage':<24}{'inputs':>10}{'output':>10}{'on disk':>10}"]
    for r in results:
        lines.append(f"{r['stage']:<24}{mark[r['fingerprint']]:>10}{mark[r['output']]:>10}{mark[r['on_disk']]:>10}")
    bad = [r["stage"] for r in results if not (r["fingerprint"] and r["output"] and r["on_disk"])]
    lines.append("reproduced: every stage matches" if not bad else f"NOT reproduced: {', '.join(bad)}")
    return "\n".join(lines)
