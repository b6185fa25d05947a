"""`spc-train reproduce`: re-run one iteration of a run from what the run recorded, and compare stage by stage.

The run's `recipe.yaml`, seeds and inputs (everything before iteration K) are copied into a scratch run directory;
iteration K's stages run there offline (HF_HUB_OFFLINE=1); each stage's fingerprint (what went in) and output hash
(what came out) are compared with the recorded `stage.json`, and the recorded output is checked on disk against the
files `stage.json` lists, so an output edited after the run is caught too (and a file added later, such as a
`datasets` cache, is ignored). On CPU a reproduction must match exactly; on GPU, kernels may differ, so a stage that
does not match says what differs: files, rows and fields, the largest numeric gap (NaN equals NaN), or the adapter's
weights. Installed packages that differ from the run's are named before anything runs.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path

from .configs import parse_recipe
from .loop import Loop
from .models import folder_hash, spec_identity
from .runs import RunDir, StageInputError, load_rows, output_files, package_versions, read_stage, verify_stage

logger = logging.getLogger(__name__)

ITERATION_STAGES = [  # (folder, command)
    ("candidates", "generate"),
    ("critiques", "critique"),
    ("selected", "select"),
    ("train", "sft-data"),
    ("adapter", "train"),
    ("eval", "evaluate"),
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
    finished = [k for k in run.iterations() if read_stage(run.stage_dir("selected", k))]
    if iteration not in finished:
        raise StageInputError(
            f"{run.root} has no finished iteration {iteration} to reproduce; finished iterations: "
            f"{', '.join(map(str, finished)) or 'none'}."
        )
    recipe = parse_recipe(run.root / "recipe.yaml")
    manifest = run.manifest()
    recorded_models = manifest.get("models", {})
    for role, spec in (("generator", recipe.model), ("judge", recipe.judge_spec())):
        if recorded_models.get(role) and recorded_models[role] != spec_identity(spec):
            logger.warning("The %s differs from the one recorded in the manifest: outputs will differ.", role)
    recorded_packages = manifest.get("packages", {})
    changed = [
        f"{name} {recorded_packages[name]} -> {version}"
        for name, version in package_versions().items()
        if name in recorded_packages and recorded_packages[name] != version
    ]
    if changed:
        logger.warning("Installed packages differ from the run's, outputs may differ: %s.", ", ".join(changed))
    work = Path(work_dir or tempfile.mkdtemp(prefix="spc-train-reproduce-"))
    work.mkdir(parents=True, exist_ok=True)
    _copy_inputs(run, iteration, work)
    loop = Loop(recipe, work)
    loop.prepare()
    results = []
    for name, command in ITERATION_STAGES:
        recorded = read_stage(run.stage_dir(name, iteration))
        if recorded is None:
            continue  # e.g. train stages of a run with loop.train: false
        loop.run_stage(command, iteration)
        redone = read_stage(loop.run.stage_dir(name, iteration))
        folder = run.stage_dir(name, iteration)
        on_disk = _on_disk_problem(folder, recorded)
        result = {
            "stage": f"iter-{iteration:02d}/{name}",
            "fingerprint": redone["fingerprint"] == recorded["fingerprint"],
            "output": redone.get("output_hash") == recorded.get("output_hash"),
            "on_disk": on_disk is None,
        }
        ignored = sorted(set(output_files(folder)) - _output_files(folder))
        if ignored:  # e.g. a `datasets` cache written by a later `filter`
            result["ignored"] = ignored
        if not (result["output"] and result["on_disk"]):
            difference = describe_difference(folder, loop.run.stage_dir(name, iteration))
            result["difference"] = difference if on_disk is None else f"{difference}; on disk: {on_disk}"
        results.append(result)
    return results


def _on_disk_problem(folder: Path, recorded: dict) -> str | None:
    """Whether the recorded output is still what the run wrote: its listed files (`verify_stage`), or for a record
    without a file list (older runs), the hash of the whole folder."""
    if "files" in recorded:
        return verify_stage(folder)
    if folder_hash(folder) != recorded.get("output_hash"):
        return "the recorded output changed after the run"
    return None


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _same(a, b) -> bool:
    """Equality of nested values in which NaN equals NaN (pairwise matrices have NaN diagonals)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _largest_gap(a, b) -> float | None:
    """The largest |a - b| over the numbers found at the same place in two nested values; None if none differ.
    NaN against NaN is no difference; NaN against a number is an infinite one."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if _same(a, b):
            return None
        return math.inf if math.isnan(a) or math.isnan(b) else abs(a - b)
    pairs = []
    if isinstance(a, dict) and isinstance(b, dict):
        pairs = [(a[k], b[k]) for k in a.keys() & b.keys()]
    elif isinstance(a, list) and isinstance(b, list):
        pairs = list(zip(a, b))
    gaps = [gap for x, y in pairs if (gap := _largest_gap(x, y)) is not None]
    return max(gaps, default=None)


def _output_files(folder: Path) -> set[str]:
    """The files a stage wrote: those its `stage.json` lists, or (no list) every output file in the folder."""
    record = read_stage(folder)
    return set(record["files"] if record and "files" in record else output_files(folder))


def describe_difference(recorded: Path, redone: Path) -> str:
    """What differs between a recorded stage output and its reproduction, in a line a person can act on."""
    old_files, new_files = _output_files(recorded), _output_files(redone)
    parts = []
    if old_files - new_files:
        parts.append(f"only in the record: {', '.join(sorted(old_files - new_files))}")
    if new_files - old_files:
        parts.append(f"only in the reproduction: {', '.join(sorted(new_files - old_files))}")
    if (recorded / ADAPTER_WEIGHTS).exists() and (redone / ADAPTER_WEIGHTS).exists():
        from safetensors.torch import load_file

        old, new = load_file(recorded / ADAPTER_WEIGHTS), load_file(redone / ADAPTER_WEIGHTS)
        differing = [k for k in old.keys() | new.keys() if k not in old or k not in new or not old[k].equal(new[k])]
        if differing:
            gaps = [(old[k].float() - new[k].float()).abs().max().item() for k in differing if k in old and k in new]
            by = max(gaps, default=0.0)
            return "; ".join([*parts, f"{len(differing)} of {len(old)} adapter tensors differ, by at most {by:.3g}"])
    try:
        old_rows, new_rows = load_rows(recorded), load_rows(redone)
    except (OSError, ValueError):  # not a datasets folder (FileNotFoundError), or one with a damaged file
        differing = sorted(
            name
            for name in old_files & new_files
            if not ((recorded / name).is_file() and (redone / name).is_file())
            or (recorded / name).read_bytes() != (redone / name).read_bytes()
        )
        if differing or not parts:
            parts.append(f"files differ: {', '.join(differing) or 'none (only the record)'}")
        return "; ".join(parts)
    changed = [(a, b) for a, b in zip(old_rows, new_rows) if not _same(a, b)]
    parts.append(
        f"{len(old_rows)} rows recorded, {len(new_rows)} reproduced; {len(changed)} of the first "
        f"{min(len(old_rows), len(new_rows))} differ"
    )
    fields = sorted({k for a, b in changed for k in a.keys() | b.keys() if not _same(a.get(k), b.get(k))})
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
    lines += [
        f"  {r['stage']}: not written by the stage, ignored: {', '.join(r['ignored'])}"
        for r in results
        if r.get("ignored")
    ]
    bad = [r["stage"] for r in results if not (r["fingerprint"] and r["output"] and r["on_disk"])]
    lines.append("reproduced: every stage matches" if not bad else f"NOT reproduced: {', '.join(bad)}")
    return "\n".join(lines)
