"""GGUF checkpoints dequantized once: a dense transformers folder per .gguf file, kept in a cache.

transformers reads a .gguf file by parsing all of its metadata (the tokenizer's vocabulary and merges, field by field)
once for the config and again for the weights, then maps the tensor names one tensor at a time: on 2 CPU cores that is
23 s for SmolLM2-135M's model and 7 s for its tokenizer, paid by every stage that loads them (most stages of the
loop). The dequantized model is an ordinary dense model, so the first load saves it
(safetensors, config, generation config, tokenizer) and every later load reads that folder in about a second.

The folder is named by everything that makes it: the .gguf file's sha256 (the run's identity of the model), the dtype,
and the versions of transformers and of `gguf` (which dequantizes), under `SPC_TRAIN_GGUF_CACHE` (default
`$HF_HOME/spc_train/gguf`); `SPC_TRAIN_GGUF_CACHE=0` turns the cache off. It is written to `<name>.partial-<pid>` and
renamed when whole, so a crash, a full disk or a second process never leaves a half folder to be read (of two
processes the second to finish discards its own); a partial folder whose process is gone is removed at the next
lookup. When the copy cannot be written, the model loads from the .gguf as before. Files are made 0644 and folders
0755 (transformers writes some 0600), so every user of a shared cache can read them.

The copy is the model the run names by the .gguf's hash, so it is checked at every lookup before it is read: its
manifest (`spc_train_dense.json`, written last, before the rename) records the key's parts and each file's size and
sha256. A copy whose files differ from it (bytes overwritten, a file truncated, added or missing, no manifest) is
named in one WARNING, removed and made again from the .gguf; it is never loaded. The whole content is hashed, not a
sample of the first and last MiB, which would miss bytes overwritten in the middle of the weights: SmolLM2-135M's
538 MB copy hashes in 0.5-0.9 s on this busy 2-core machine, so Qwen2.5-1.5B's 7.1 GB takes about 7 s (more from a
cold disk), against 20 s to minutes to dequantize; and only once per process, as `runs.file_sha256` remembers a hash
while the file's size and mtime stay the same (sizes are compared at every lookup).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "spc_train_dense.json"  # written last, before the rename: what every file of a whole copy holds
PARTIAL = ".partial-"  # `<name>.partial-<pid>`: a copy being written, or being removed, by process pid
OFF = ("0", "off", "false", "no")
_UNWRITABLE: set[Path] = set()  # copies that could not be written: not tried again by this process


def cache_root() -> Path | None:
    """Where dense copies live, or None when `SPC_TRAIN_GGUF_CACHE` turns the cache off."""
    setting = os.environ.get("SPC_TRAIN_GGUF_CACHE", "")
    if setting.lower() in OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
    return Path(home).expanduser() / "spc_train" / "gguf"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # transformers then refuses the .gguf with its own message
        return "absent"


def copy_key(path: Path, dtype) -> dict[str, str]:
    """Everything that makes the dense copy of the .gguf file at `path`: another value of any is another copy."""
    from .runs import file_sha256

    return {
        "gguf_sha256": file_sha256(path),
        "dtype": str(dtype).removeprefix("torch."),
        "transformers": _version("transformers"),
        "gguf": _version("gguf"),
    }


def _folder_name(key: dict[str, str]) -> str:
    return f"{key['gguf_sha256'][:24]}-{key['dtype']}-transformers-{key['transformers']}-gguf-{key['gguf']}"


def copy_folder(path: Path, dtype) -> Path | None:
    """Where the dense copy of the .gguf file at `path` in `dtype` lives (or would), None when the cache is off."""
    root = cache_root()
    return None if root is None else root / _folder_name(copy_key(path, dtype))


def cached_copy(path: Path, dtype) -> Path | None:
    """The dense copy of the .gguf file at `path` in `dtype`, if a whole one is in the cache. One that fails its check
    is removed, so that the caller makes it again."""
    root = cache_root()
    if root is None:
        return None
    remove_stale_partials(root)
    key = copy_key(path, dtype)
    folder = root / _folder_name(key)
    if not folder.exists():
        return None
    fault = copy_fault(folder, key)
    if fault is None:
        return folder
    logger.warning(
        "The dense copy %s fails its check (%s): it is removed and made again from %s.", folder, fault, path
    )
    _remove(folder)
    return None


def copy_fault(folder: Path, key: dict[str, str]) -> str | None:
    """What differs between a copy and its manifest, or None when every file is the one that was written."""
    from .runs import file_sha256

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        recorded = manifest["key"]
        files = {name: (int(file["size"]), str(file["sha256"])) for name, file in manifest["files"].items()}
    except FileNotFoundError:
        return f"{MANIFEST} is missing"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{MANIFEST} is unreadable: {error!r}"
    if recorded != key:
        return f"{MANIFEST} records another key: {recorded}"
    try:
        present = set(_copy_files(folder))
        if present != set(files):
            return f"files missing: {sorted(set(files) - present)}, not recorded: {sorted(present - set(files))}"
        for name, (size, _) in files.items():
            if (folder / name).stat().st_size != size:
                return f"{name} is {(folder / name).stat().st_size} bytes, {size} recorded"
        for name, (_, sha256) in files.items():
            if file_sha256(folder / name) != sha256:
                return f"{name}'s sha256 is not the one recorded"
    except OSError as error:
        return f"unreadable: {error}"
    return None


def _copy_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def remove_stale_partials(root: Path) -> None:
    """Remove the partial folders of processes that are gone: one killed while writing leaves gigabytes behind."""
    for partial in root.glob(f"*{PARTIAL}*"):
        pid = partial.name.rpartition(PARTIAL)[2]
        if pid.isdigit() and not _alive(int(pid)):
            logger.info("Removing %s, left by process %s, which is gone.", partial, pid)
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(folder: Path) -> None:
    """Take a copy out of the cache at once (a rename), then delete it; if this process dies meanwhile, what is left
    is a stale partial folder, removed later."""
    doomed = folder.with_name(f"{folder.name}{PARTIAL}{os.getpid()}")
    shutil.rmtree(doomed, ignore_errors=True)
    try:
        folder.rename(doomed)
    except OSError:  # removed by another process first, or not removable: checked again at the next lookup
        return
    shutil.rmtree(doomed, ignore_errors=True)


def worth_writing(path: Path, dtype) -> bool:
    """Whether a missing copy should be made now: the cache is on and this process has not failed to write it (each
    attempt loads the .gguf once more)."""
    folder = copy_folder(path, dtype)
    return folder is not None and folder not in _UNWRITABLE


def _seal(partial: Path, key: dict[str, str], path: Path) -> None:
    """Make a written copy readable by every user of the cache, then record its files in the manifest, last."""
    from .runs import file_sha256

    for item in [partial, *partial.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    files = {
        name: {"size": (partial / name).stat().st_size, "sha256": file_sha256(partial / name)}
        for name in _copy_files(partial)
    }
    manifest = {"key": key, "gguf_file": str(path), "files": files}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (partial / MANIFEST).chmod(0o644)


def save_copy(path: Path, dtype, model, tokenizer) -> Path | None:
    """Save a model and tokenizer just loaded from the .gguf file at `path` as its dense copy; None (and the reason
    in the log) when the cache is off or the copy cannot be written."""
    root = cache_root()
    if root is None:
        return None
    key = copy_key(path, dtype)
    folder = root / _folder_name(key)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    partial = folder.with_name(f"{folder.name}{PARTIAL}{os.getpid()}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(root)
        free = shutil.disk_usage(root).free
        if free < 2 * size:
            raise OSError(f"{free / 1e9:.1f} GB free, {2 * size / 1e9:.1f} GB wanted")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        _seal(partial, key, path)
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same copy first: theirs is as good, if it checks out
            shutil.rmtree(partial, ignore_errors=True)
            fault = copy_fault(folder, key)
            if fault:
                raise OSError(f"{folder} is in the way and fails its check ({fault})") from None
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        _UNWRITABLE.add(folder)
        logger.warning(
            "Could not cache the dense copy of %s in %s (%s): it loads from the .gguf file each time; set "
            "SPC_TRAIN_GGUF_CACHE to a writable folder with room for it.",
            path.name,
            root,
            error,
        )
        return None
    logger.info("Cached the dequantized %s in %s (set SPC_TRAIN_GGUF_CACHE=0 to turn this off).", path.name, folder)
    return folder
