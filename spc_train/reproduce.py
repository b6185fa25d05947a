"""`spc-train reproduce`: re-run one iteration of a run from what the run recorded, and compare stage by stage.

The run's `recipe.yaml`, seeds and inputs (everything before iteration K) are copied into a scratch run directory;
iteration K's stages run there offline (HF_HUB_OFFLINE=1); each stage's fingerprint (what went in) and output hash
(what came out) are compared with the recorded `stage.json`, and the recorded output is re-hashed on disk, so an
output edited after the run is caught too. On CPU a reproduction must match exactly; on GPU, kernels may differ, so
a stage that does not match says what differs: rows and fields, the largest numeric gap, or the adapter's weights.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from .configs import parse_recipe
from .loop import Loop
from .models import folder_hash, spec_identity
from .runs import STAGE_FILE, RunDir, load_rows, read_stage

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
        result = {
            "stage": f"iter-{iteration:02d}/{name}",
            "fingerprint": redone["fingerprint"] == recorded["fingerprint"],
            "output": redone.get("output_hash") == recorded.get("output_hash"),
            "on_disk": folder_hash(run.stage_dir(name, iteration)) == recorded.get("output_hash"),
        }
        if not (result["output"] and result["on_disk"]):
            result["difference"] = describe_difference(
                run.stage_dir(name, iteration), loop.run.stage_dir(name, iteration)
            )
        results.append(result)
    return results


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _largest_gap(a, b) -> float | None:
    """The largest |a - b| over the numbers found at the same place in two nested values; None if none differ."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) if a != b else None
    pairs = []
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = [(a[k], b[k]) for k in a.keys() & b.keys()]
    elif isinstance(a, list) and isinstance(b, list):
        pairs = list(zip(a, b))
    gaps = [gap for x, y in pairs if (gap := _largest_gap(x, y)) is not None]
    return max(gaps, default=None)


def _files_that_differ(recorded: Path, redone: Path) -> list[str]:
    names = {p.name for folder in (recorded, redone) for p in folder.iterdir() if p.is_file()} - {STAGE_FILE}
    return sorted(
        name
        for name in names
        if not ((recorded / name).exists() and (redone / name).exists())
        or (recorded / name).read_bytes() != (redone / name).read_bytes()
    )


def describe_difference(recorded: Path, redone: Path) -> str:
    """What differs between a recorded stage output and its reproduction, in a line a person can act on."""
    if (recorded / ADAPTER_WEIGHTS).exists() and (redone / ADAPTER_WEIGHTS).exists():
        from safetensors.torch import load_file

        old, new = load_file(recorded / ADAPTER_WEIGHTS), load_file(redone / ADAPTER_WEIGHTS)
        differing = [k for k in old.keys() | new.keys() if k not in old or k not in new or not old[k].equal(new[k])]
        if differing:
            gaps = [(old[k].float() - new[k].float()).abs().max().item() for k in differing if k in old and k in new]
            return f"{len(differing)} of {len(old)} adapter tensors differ, by at most {max(gaps, default=0.0):.3g}"
    try:
        old_rows, new_rows = load_rows(recorded), load_rows(redone)
    except FileNotFoundError:  # not a datasets folder
        return f"files differ: {', '.join(_files_that_differ(recorded, redone)) or 'none (only the record)'}"
    changed = [(a, b) for a, b in zip(old_rows, new_rows) if a != b]
    parts = [
        f"{len(old_rows)} rows recorded, {len(new_rows)} reproduced; {len(changed)} of the first "
        f"{min(len(old_rows), len(new_rows))} differ"
    ]
    fields = sorted({k for a, b in changed for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    if fields:
        parts.append(f"in {', '.join(fields)}")
    gap = _largest_gap([a for a, _ in changed], [b for _, b in changed])
    if gap is not None:
        parts.append(f"largest numeric difference {gap:.3g}")
    return "; ".join(parts)


def format_results(results: list[dict]) -> str:
    mark = {True: "match", False: "DIFFERS"}
    lines = [f"{'stage':<24}{'inputs':>10}{'output':>10}{'on disk':>10}"]
    for r in results:
        lines.append(f"{r['stage']:<24}{mark[r['fingerprint']]:>10}{mark[r['output']]:>10}{mark[r['on_disk']]:>10}")
    lines += [f"  {r['stage']}: {r['difference']}" for r in results if r.get("difference")]
    bad = [r["stage"] for r in results if not (r["fingerprint"] and r["output"] and r["on_disk"])]
    lines.append("reproduced: every stage matches" if not bad else f"NOT reproduced: {', '.join(bad)}")
    return "\n".join(lines)
