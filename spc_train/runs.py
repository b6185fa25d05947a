"""The run directory: the loop's single source of truth.

Every stage writes one folder (a `datasets` folder or a PEFT adapter) plus a `stage.json` holding its fingerprint
and the size and hash of each file it wrote. A folder counts as done only when its `stage.json` exists, its
fingerprint matches what the loop would compute now, and its files are still those it wrote; folders are written to a
temporary sibling and renamed into place, so a crash never leaves a half folder that looks finished. One process at a
time writes a run directory: it holds `RUN/.lock`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
TEMPORARY_PATTERNS = (".*.tmp-*", ".*.old-*")  # `write_json_atomic`, `commit`, `replace_folder`, `write_shard`
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


class RunLockedError(StageInputError):
    """Another process is writing the run directory: two writers would overwrite each other's stages."""


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


def _process_alive(pid: str) -> bool:
    """Whether `pid` (a temporary's suffix) is a live process on this machine."""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


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


def output_files(folder: Path) -> list[str]:
    """A stage folder's output files, relative to it: all but its `stage.json` and hidden scratch files."""
    names = (p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file())
    return [name for name in names if Path(name).name != STAGE_FILE and not name.startswith(".") and "/." not in name]


@lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, cached while its size and time are unchanged (`is_done` checks every stage on each run)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """A file's SHA-256 (what the Hub shows for an LFS file), computed once per process while it is unchanged."""
    path = Path(path)
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def written_files(folder: Path) -> dict[str, dict[str, Any]]:
    """`{relative_path: {"size", "sha256"}}` of a stage folder's output files, as `stage.json` records them."""
    return {
        name: {"size": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
        for name in output_files(folder)
    }


def verify_stage(folder: Path) -> str | None:
    """What makes a stage folder unusable, in a line naming the file, or None if it is finished and intact.

    Every file listed in `stage.json` must exist with its recorded size and hash; files not listed (a `datasets`
    cache) are ignored. A `stage.json` without `files` (runs before they were recorded) is trusted as it stands.
    """
    record = read_stage(folder)
    if record is None:
        return f"{folder} is not finished (no readable {STAGE_FILE})"
    for relative, expected in record.get("files", {}).items():
        path = folder / relative
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != expected["size"]:
            return f"{path} is {size} bytes, {expected['size']} recorded"
        if file_sha256(path) != expected["sha256"]:
            return f"{path} has changed since it was written (its SHA-256 differs from the recorded one)"
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


def read_shard(path: Path) -> list[dict] | None:
    """A shard's rows, or None if it is missing or unreadable. An unreadable shard (a truncated line, bytes that are
    not UTF-8) is deleted with a warning, so that the resumed run writes it again."""
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except FileNotFoundError:
        return None
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        logger.warning("Shard %s is unreadable (%s): deleted, it is generated again.", path, error)
        path.unlink(missing_ok=True)
        return None


def read_shards(shards_dir: Path, num_shards: int) -> list[dict] | None:
    """All rows in shard order, or None while a shard is missing or unreadable."""
    rows: list[dict] = []
    for index in range(num_shards):
        shard = read_shard(shard_path(shards_dir, index))
        if shard is None:
            return None
        rows.extend(shard)
    return rows


def pending_shards(shards_dir: Path, num_shards: int, process_index: int = 0, num_processes: int = 1) -> list[int]:
    """This process's shards (p, p + world, ...) that are not written yet or unreadable; logs what a resumed run
    skips."""
    mine = [i for i in range(num_shards) if i % num_processes == process_index]
    todo = [i for i in mine if read_shard(shard_path(shards_dir, i)) is None]
    if len(todo) < len(mine):
        logger.info("Resuming %s: %d of %d shards already written.", shards_dir.name, len(mine) - len(todo), len(mine))
    return todo


class RunDir:
    """Paths and bookkeeping of one run: `RUN/seed`, `RUN/iter-00/candidates`, `RUN/report`, ..."""

    def __init__(self, root: str | Path, current: dict[str, str] | None = None):
        self.root = Path(root)
        # `{label: fingerprint}` of the recipe's stages as it stands (`Loop.current_fingerprints`): when set, a stage
        # made by another recipe, or by an iteration the recipe no longer has, is not `finished`.
        self.current = current
        self.left_out: dict[str, str] = {}  # label -> why `finished` left it out

    def stage_dir(self, stage: str, iteration: int | None = None) -> Path:
        return self.root / stage if iteration is None else self.root / f"iter-{iteration:02d}" / stage

    def iterations(self) -> list[int]:
        return sorted(int(p.name[5:]) for p in self.root.glob("iter-[0-9][0-9]") if p.is_dir())

    def finished(self, stage: str) -> list[int]:
        """The iterations whose `stage` folder is finished and intact (`verify_stage`); a damaged one is named in a
        warning and left out."""
        finished = []
        for k in self.iterations():
            folder = self.stage_dir(stage, k)
            record = read_stage(folder)
            if record is None:
                continue
            label = f"iter-{k:02d}/{stage}"
            if self.current is not None and label not in self.current:
                why = "not an iteration of the recipe now"
            elif self.current is not None and self.current[label] != record.get("fingerprint"):
                why = "stale: made from another recipe or other inputs (see `spc-train status`)"
            else:
                why = verify_stage(folder)
            if why is None:
                finished.append(k)
            elif label not in self.left_out:
                self.left_out[label] = why
                logger.warning("%s is left out: %s.", label, why)
        return finished

    def is_done(self, folder: Path, fp: str) -> bool:
        """Whether `folder` holds the output of fingerprint `fp`, every file as it was written; a damaged folder is
        named in a warning and counts as not done, so the stage runs again."""
        record = read_stage(folder)
        if record is None or record.get("fingerprint") != fp:
            return False
        problem = verify_stage(folder)
        if problem:
            logger.warning("%s: the stage re-runs.", problem)
        return problem is None

    @contextmanager
    def lock(self, main_process: bool = True) -> Iterator[None]:
        """Hold `RUN/.lock` while writing the run: a second writer gets `RunLockedError` naming the holder's PID.

        Under `accelerate launch` the processes of one job share the run: pass `PartialState().is_main_process`, so
        only the main process takes the lock and the others do nothing here. The lock is an `flock`, so the system
        releases it when its holder exits or is killed. Once held, temporaries of dead processes are removed.
        """
        if not main_process:
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        handle = (self.root / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "a process that has not written its PID yet"
            handle.close()
            raise RunLockedError(
                f"{self.root} is being written by {holder}: wait for it to finish or stop it, or give another "
                "--run_dir."
            ) from None
        try:
            handle.seek(0)
            handle.truncate()
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
            handle.write(f"PID {os.getpid()} on {socket.gethostname()} ({command})\n")
            handle.flush()
            self.remove_stale_temporaries()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporaries (`.NAME.tmp-PID`, `.NAME.old-PID`) that killed processes left in the run, its
        iterations, its stage folders and scratch folders; a live process's are kept. Scratch folders themselves
        (`.candidates.shards`, `.adapter.checkpoints`, ...) are resume state and stay. Call with the lock held."""
        removed = []
        for depth in ("", "*/", "*/*/"):
            for pattern in TEMPORARY_PATTERNS:
                for path in sorted(self.root.glob(depth + pattern)):
                    if _process_alive(path.name.rsplit("-", 1)[-1]) or not os.path.lexists(path):
                        continue
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
                    removed.append(path)
        if removed:
            names = ", ".join(p.relative_to(self.root).as_posix() for p in removed)
            logger.info("Removed %d temporaries left by stopped processes: %s", len(removed), names)
        return removed

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

        files = written_files(tmp)
        record = {
            "stage": stage or folder.name,
            "fingerprint": fp,
            "output_hash": folder_hash(tmp, files),  # what `spc-train reproduce` compares a re-run with
            "files": files,  # what `verify_stage` checks before the folder counts as done
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
