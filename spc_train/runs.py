"""The run directory: the loop's single source of truth.

Every stage writes one folder (a `datasets` folder or a PEFT adapter) plus a `stage.json` holding its fingerprint.
A folder counts as done only when its `stage.json` exists and its fingerprint matches what the loop would compute
now; folders are written to a temporary sibling and renamed into place, so a crash never leaves a half folder that
looks finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
MANIFEST_FILE = "manifest.json"
TRACKED_PACKAGES = (
    "spc_train",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "peft",
    "trl",
    "accelerate",
    "sentence-transformers",
    "bitsandbytes",
)


class StageInputError(RuntimeError):
    """A stage was asked to run before the stages it reads from, or without the data it needs."""


def fingerprint(stage: str, config: Any, inputs: list[str], models: dict[str, Any], seed: int | None) -> str:
    """Hash of everything that determines a stage's output: change any of it and the stage (and its users) re-run."""
    payload = {"stage": stage, "config": config, "inputs": inputs, "models": models, "seed": seed}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_stage(folder: Path) -> dict[str, Any] | None:
    """The stage record of a finished folder, or None if the folder is absent or unfinished."""
    try:
        return json.loads((folder / STAGE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def load_rows(folder: Path) -> list[dict]:
    """A stage's `datasets` folder as a list of records."""
    from datasets import load_from_disk

    return load_from_disk(str(folder)).to_list()


def save_rows(rows: list[dict], folder: Path) -> None:
    from datasets import Dataset

    if rows:
        Dataset.from_list(rows).save_to_disk(str(folder))
    else:  # an empty output still needs a schema and one shard, or datasets cannot reload it
        Dataset.from_dict({"pair_id": []}).save_to_disk(str(folder), num_shards=1)


def replace_folder(tmp: Path, target: Path) -> None:
    """Move a fully written folder into place, replacing an older version of it."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def shard_path(shards_dir: Path, index: int) -> Path:
    return shards_dir / f"shard-{index:05d}.jsonl"


def write_shard(path: Path, rows: list[dict]) -> None:
    """One finished shard of a data-parallel stage, written atomically: a shard file that exists is complete."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_shards(shards_dir: Path, num_shards: int) -> list[dict] | None:
    """All rows in shard order, or None while a shard is missing."""
    rows: list[dict] = []
    for index in range(num_shards):
        path = shard_path(shards_dir, index)
        if not path.exists():
            return None
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return rows


def pending_shards(shards_dir: Path, num_shards: int, process_index: int = 0, num_processes: int = 1) -> list[int]:
    """This process's shards (p, p + world, ...) that are not written yet; logs what a resumed run skips."""
    mine = [i for i in range(num_shards) if i % num_processes == process_index]
    todo = [i for i in mine if not shard_path(shards_dir, i).exists()]
    if len(todo) < len(mine):
        logger.info("Resuming %s: %d of %d shards already written.", shards_dir.name, len(mine) - len(todo), len(mine))
    return todo


class RunDir:
    """Paths and bookkeeping of one run: `RUN/seed`, `RUN/iter-00/candidates`, `RUN/report`, ..."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage_dir(self, stage: str, iteration: int | None = None) -> Path:
        return self.root / stage if iteration is None else self.root / f"iter-{iteration:02d}" / stage

    def iterations(self) -> list[int]:
        return sorted(int(p.name[5:]) for p in self.root.glob("iter-[0-9][0-9]") if p.is_dir())

    def finished(self, stage: str) -> list[int]:
        """The iterations whose `stage` folder is finished (has its `stage.json`)."""
        return [k for k in self.iterations() if read_stage(self.stage_dir(stage, k))]

    def is_done(self, folder: Path, fp: str) -> bool:
        record = read_stage(folder)
        return record is not None and record.get("fingerprint") == fp

    def commit(
        self,
        folder: Path,
        fp: str,
        write: Callable[[Path], dict[str, Any] | None],
        stage: str | None = None,
        started: float | None = None,
    ) -> dict[str, Any]:
        """Run `write(tmp_folder)`, then record `stage.json` and atomically move the folder into place.

        `write` fills the temporary folder and returns statistics (row counts, losses, ...) for `stage.json`;
        `started` (a `time.perf_counter()` value) counts work done before the write, e.g. by other processes.
        """
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        start = time.perf_counter() if started is None else started
        stats = write(tmp) or {}
        from .models import folder_hash

        record = {
            "stage": stage or folder.name,
            "fingerprint": fp,
            "output_hash": folder_hash(tmp),  # what `spc-train reproduce` compares a re-run with
            "seconds": round(time.perf_counter() - start, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **stats,
        }
        write_json_atomic(tmp / STAGE_FILE, record)
        replace_folder(tmp, folder)
        self.record_stage(folder, fp)
        return record

    def scratch(self, folder: Path, kind: str, fp: str) -> Path:
        """A work folder beside a stage folder (generation shards, training checkpoints) that survives a crash, so
        the next run resumes from it; left by another fingerprint, it is cleared. Call on the main process only."""
        path = folder.with_name(f".{folder.name}.{kind}")
        marker = path / "FINGERPRINT"
        if path.exists() and (not marker.exists() or marker.read_text() != fp):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
        return path

    # -- manifest -------------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / MANIFEST_FILE).read_text())
        except FileNotFoundError:
            return {}

    def update_manifest(self, **fields: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key] = {**manifest[key], **value}
            else:
                manifest[key] = value
        write_json_atomic(self.root / MANIFEST_FILE, manifest)

    def record_stage(self, folder: Path, fp: str) -> None:
        key = folder.relative_to(self.root).as_posix()
        self.update_manifest(stages={key: fp})
