"""Push a run to the Hugging Face Hub: one dataset repo (a config per iteration) and one model repo (an adapter branch
per iteration, the last one on `main`).

Everything is staged locally under `RUN/.push/` first, exactly as it will be uploaded, so what the Hub gets can be
inspected (and loaded with plain `datasets` / `peft`) before and after. Each upload unit (one config, one branch, the
cards) is one commit; `RUN/push.json` records the commits made with the hash of every file, so a push that failed half
way is finished by running it again, and a unit whose files did not change is never uploaded twice.

Tokens are left to `huggingface_hub` (the `HF_TOKEN` variable or `hf auth login`): they are never passed around, and
no staged file may contain the active token (checked before any upload). The cards are written by `hub_cards.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .hub_cards import dataset_card, model_card, run_recipe, seed_is_spc
from .runs import RunDir, load_rows, read_stage, write_json_atomic

logger = logging.getLogger(__name__)

LEDGER_FILE = "push.json"
STAGING_DIR = ".push"
CANONICAL_COLUMNS = ("pair_id", "user1_persona", "user2_persona", "turns", "source")
# Files of an adapter folder that are run bookkeeping (stage.json) or replaced by our card (PEFT's README.md).
ADAPTER_SKIP = {"stage.json", "README.md"}


class HubOfflineError(RuntimeError):
    """Raised before anything is staged or uploaded when the Hub is switched off (HF_HUB_OFFLINE)."""


class PushError(RuntimeError):
    """A push that stopped part way: says what was uploaded (with commits) and what was not."""

    def __init__(self, message: str, uploaded: list[str], pending: list[str]):
        super().__init__(message)
        self.uploaded = uploaded
        self.pending = pending


@dataclass
class UploadUnit:
    """One commit: the files (path in repo -> local file) of one config, branch or card set."""

    name: str
    repo_id: str
    repo_type: str  # "dataset" or "model"
    revision: str
    files: dict[str, Path]
    message: str

    @property
    def key(self) -> str:
        return f"{self.repo_type}:{self.repo_id}@{self.revision}:{self.name}"

    def digests(self) -> dict[str, str]:
        return {path: _sha256(local) for path, local in sorted(self.files.items())}


@dataclass
class PushResult:
    dataset_repo: str
    model_repo: str | None
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    commits: dict[str, str] = field(default_factory=dict)
    staging_dir: Path | None = None

    def summary(self) -> str:
        lines = [f"dataset: https://huggingface.co/datasets/{self.dataset_repo}"]
        if self.model_repo:
            lines.append(f"adapters: https://huggingface.co/{self.model_repo}")
        lines.append(f"uploaded {len(self.uploaded)} commits, {len(self.skipped)} already on the Hub")
        lines += [f"  {key}: {self.commits[key]}" for key in self.uploaded]
        return "\n".join(lines)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hub_offline() -> bool:
    """True when `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set now or was when huggingface_hub was imported."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return now.upper() in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


# -- staging ----------------------------------------------------------------------------------------------------------
def _write_parquet(folder: Path, out: Path) -> int:
    """A stage's `datasets` folder as one parquet shard, canonical columns first (features kept in the metadata)."""
    from datasets import load_from_disk

    dataset = load_from_disk(str(folder))
    first = [c for c in CANONICAL_COLUMNS if c in dataset.column_names]
    dataset = dataset.select_columns(first + [c for c in dataset.column_names if c not in first])
    out.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(out))
    return len(dataset)


def stage_dataset(
    run: RunDir,
    out: Path,
    repo_id: str,
    model_repo: str | None,
    include_candidates: bool = False,
    license: str | None = None,
) -> dict[str, dict[str, Path]]:
    """Lay out the dataset repo under `out`; returns config name (and "card") -> {path in repo: local file}."""
    from .data.writers import write_spc_csv

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    iterations = run.finished("selected")
    units: dict[str, dict[str, Path]] = {}
    configs, rows_per_config = [], {}
    for k in iterations:
        name = f"iter-{k:02d}"
        parquet, csv = f"{name}/train-00000-of-00001.parquet", f"{name}/spc_format.csv"
        rows_per_config[name] = _write_parquet(run.stage_dir("selected", k), out / parquet)
        write_spc_csv(load_rows(run.stage_dir("selected", k)), out / csv)
        units[name] = {parquet: out / parquet, csv: out / csv}
        configs.append({"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*.parquet"}]})
        if include_candidates and read_stage(run.stage_dir("critiques", k)):
            cname = f"{name}-candidates"
            cparquet = f"{cname}/train-00000-of-00001.parquet"
            rows_per_config[cname] = _write_parquet(run.stage_dir("critiques", k), out / cparquet)
            units[cname] = {cparquet: out / cparquet}
            configs.append(
                {"config_name": cname, "data_files": [{"split": "train", "path": f"{cname}/train-*.parquet"}]}
            )
    if configs:
        last = f"iter-{iterations[-1]:02d}"
        for config in configs:
            if config["config_name"] == last:
                config["default"] = True

    recipe, manifest = run_recipe(run), run.manifest()
    spc = seed_is_spc(run, recipe)
    license = license or ("cc-by-4.0" if spc else "other")
    card = dataset_card(run, repo_id, model_repo, configs, rows_per_config, recipe, manifest, spc, license)
    (out / "README.md").write_text(card)
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    units["card"] = {"README.md": out / "README.md", "recipe.yaml": out / "recipe.yaml"}
    metrics_path = run.root / "report" / "metrics.json"
    if metrics_path.exists():
        shutil.copyfile(metrics_path, out / "metrics.json")
        units["card"]["metrics.json"] = out / "metrics.json"
    return units


def stage_adapters(run: RunDir, out: Path, dataset_repo: str) -> dict[str, dict[str, Path]]:
    """Lay out each adapter branch (and main) under `out`; returns revision -> {path in repo: local file}."""
    shutil.rmtree(out, ignore_errors=True)
    iterations = sorted(set(run.finished("selected")) & set(run.finished("adapter")))
    revisions = [(f"iter-{k:02d}", k) for k in iterations] + ([("main", iterations[-1])] if iterations else [])
    units = {}
    for revision, k in revisions:
        source, target = run.stage_dir("adapter", k), out / revision
        target.mkdir(parents=True)
        files = {}
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            rel = path.relative_to(source).as_posix()
            if rel in ADAPTER_SKIP:
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / rel)
            files[rel] = target / rel
        adapter_config = json.loads((source / "adapter_config.json").read_text())
        (target / "README.md").write_text(model_card(run, k, revision, adapter_config, dataset_repo, iterations))
        files["README.md"] = target / "README.md"
        units[revision] = files
    return units


def check_no_token(folder: Path) -> None:
    """Refuse to upload when the active Hub token is written in any staged file."""
    from huggingface_hub import get_token

    token = get_token()
    if not token or len(token) < 8:
        return
    needle = token.encode()
    for path in folder.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            raise PushError(f"Refusing to push: {path} contains the Hub token.", [], [])


# -- pushing ----------------------------------------------------------------------------------------------------------
def _read_ledger(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def push_run(
    run_dir: str | Path,
    repo_id: str,
    *,
    model_repo_id: str | None = None,
    private: bool = True,
    include_candidates: bool = False,
    license: str | None = None,
    api: Any = None,
    current: dict[str, str] | None = None,
) -> PushResult:
    """Push a run's selected data (dataset repo `repo_id`) and adapters (model repo `model_repo_id`, default the same
    name) to the Hub, resuming from `RUN/push.json`. `api` defaults to `HfApi()`, which finds the token itself.
    `current` (`Loop.current_fingerprints`) leaves out stages the recipe, as it stands, would not make."""
    if hub_offline():
        raise HubOfflineError(
            "The Hugging Face Hub is switched off (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1): nothing was pushed. "
            "Unset HF_HUB_OFFLINE to push."
        )
    run = RunDir(run_dir, current)
    if not run.finished("selected"):
        raise PushError(
            f"{run.root} has no finished iteration (no iter-NN/selected/stage.json): nothing to push.", [], []
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    model_repo_id = model_repo_id or repo_id
    staging = run.root / STAGING_DIR
    logger.info("Staging the dataset and adapters of %s under %s.", run.root, staging)
    dataset_files = stage_dataset(run, staging / "dataset", repo_id, model_repo_id, include_candidates, license)
    adapter_files = stage_adapters(run, staging / "model", repo_id)
    if not adapter_files:
        logger.info("No finished adapter in %s: pushing the dataset only.", run.root)
    check_no_token(staging)

    # Configs before the card that declares them; branches before main.
    units = [
        UploadUnit(name, repo_id, "dataset", "main", files, f"spc_train: {name} of run {run.root.name}")
        for name, files in dataset_files.items()
        if name != "card"
    ]
    units.append(
        UploadUnit("card", repo_id, "dataset", "main", dataset_files["card"], "spc_train: dataset card and recipe")
    )
    units += [
        UploadUnit("adapter", model_repo_id, "model", revision, files, f"spc_train: adapter for {revision}")
        for revision, files in adapter_files.items()
    ]

    ledger_path = run.root / LEDGER_FILE
    ledger = _read_ledger(ledger_path)
    done = ledger.setdefault("uploads", {})
    result = PushResult(repo_id, model_repo_id if adapter_files else None, staging_dir=staging)
    pending = [u for u in units if done.get(u.key, {}).get("files") != u.digests()]
    for unit in units:
        if unit not in pending:
            result.skipped.append(unit.key)
            result.commits[unit.key] = done[unit.key]["commit"]
    if not pending:
        logger.info("Everything is already on the Hub (%s): nothing to upload.", ledger_path)
        return result

    from huggingface_hub import CommitOperationAdd

    created_repos: set[tuple[str, str]] = set()
    created_branches: set[tuple[str, str]] = set()
    for i, unit in enumerate(pending):
        try:
            if (unit.repo_id, unit.repo_type) not in created_repos:
                api.create_repo(unit.repo_id, repo_type=unit.repo_type, private=private, exist_ok=True)
                created_repos.add((unit.repo_id, unit.repo_type))
                ledger.setdefault("repos", {})[f"{unit.repo_type}:{unit.repo_id}"] = {"private": private}
            if unit.revision != "main" and (unit.repo_id, unit.revision) not in created_branches:
                api.create_branch(unit.repo_id, branch=unit.revision, repo_type=unit.repo_type, exist_ok=True)
                created_branches.add((unit.repo_id, unit.revision))
            logger.info("Uploading %s (%d files).", unit.key, len(unit.files))
            operations = [
                CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(local))
                for path, local in sorted(unit.files.items())
            ]
            info = api.create_commit(
                unit.repo_id,
                operations,
                commit_message=unit.message,
                repo_type=unit.repo_type,
                revision=unit.revision,
            )
        except Exception as error:
            uploaded = [u.key for u in units if u.key in done and done[u.key]["files"] == u.digests()]
            not_uploaded = [u.key for u in pending[i:]]
            ledger["last_error"] = {"unit": unit.key, "error": f"{type(error).__name__}", "at": _now()}
            write_json_atomic(ledger_path, ledger)
            raise PushError(
                f"Push stopped at {unit.key}: {type(error).__name__}: {_redact(str(error))}\n"
                f"uploaded ({len(uploaded)}): {', '.join(uploaded) or 'nothing'}\n"
                f"not uploaded ({len(not_uploaded)}): {', '.join(not_uploaded)}\n"
                f"Run the same push again to upload the rest (progress is kept in {ledger_path}).",
                uploaded,
                not_uploaded,
            ) from error
        commit = getattr(info, "oid", None) or str(info)
        done[unit.key] = {
            "files": unit.digests(),
            "commit": commit,
            "commit_url": getattr(info, "commit_url", None),
            "uploaded_at": _now(),
        }
        ledger.pop("last_error", None)
        write_json_atomic(ledger_path, ledger)
        result.uploaded.append(unit.key)
        result.commits[unit.key] = commit
        logger.info("Uploaded %s: commit %s.", unit.key, commit)
    return result


def _redact(text: str) -> str:
    """An error text with the active token (should a server ever echo it) masked."""
    from huggingface_hub import get_token

    token = get_token()
    return text.replace(token, "***") if token else text


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
