"""GGUF checkpoints dequantized once: a dense transformers folder per .gguf file, kept in a cache.

transformers reads a .gguf file by parsing all of its metadata (the tokenizer's vocabulary and merges, field by field)
once for the config and again for the weights, then maps the tensor names one tensor at a time: on 2 CPU cores that is
23 s for SmolLM2-135M's model and 7 s for its tokenizer, paid by every stage that loads them (most stages of the
loop). The dequantized model is an ordinary dense model, so the first load saves it
(safetensors, config, generation config, tokenizer) and every later load reads that folder in about a second.

The folder is named by the .gguf file's sha256 (the run's identity of the model), the dtype and the transformers
version that dequantized it, under `SPC_TRAIN_GGUF_CACHE` (default `$HF_HOME/spc_train/gguf`); `SPC_TRAIN_GGUF_CACHE=0`
turns the cache off. It is written to a temporary folder and renamed when complete, so a crash, a full disk or a second
process never leaves a half folder to be read; when it cannot be written, the model loads from the .gguf as before.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

COMPLETE = "spc_train_gguf.json"  # written last, in the temporary folder: its presence means the copy is whole
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


def copy_folder(path: Path, dtype) -> Path | None:
    """Where the dense copy of the .gguf file at `path` in `dtype` lives (or would), None when the cache is off."""
    import transformers

    from .runs import file_sha256

    root = cache_root()
    if root is None:
        return None
    dtype_name = str(dtype).removeprefix("torch.")
    return root / f"{file_sha256(path)[:24]}-{dtype_name}-transformers-{transformers.__version__}"


def cached_copy(path: Path, dtype) -> Path | None:
    """The dense copy of the .gguf file at `path` in `dtype`, if a complete one is in the cache."""
    folder = copy_folder(path, dtype)
    return folder if folder is not None and (folder / COMPLETE).is_file() else None


def worth_writing(path: Path, dtype) -> bool:
    """Whether a missing copy should be made now: the cache is on and this process has not failed to write it (each
    attempt loads the .gguf once more)."""
    folder = copy_folder(path, dtype)
    return folder is not None and folder not in _UNWRITABLE


def save_copy(path: Path, dtype, model, tokenizer) -> Path | None:
    """Save a model and tokenizer just loaded from the .gguf file at `path` as its dense copy; None (and the reason
    in the log) when the cache is off or the copy cannot be written."""
    import json

    from .runs import file_sha256

    folder = copy_folder(path, dtype)
    if folder is None:
        return None
    root = folder.parent
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free < 2 * size:
            raise OSError(f"{free / 1e9:.1f} GB free, {2 * size / 1e9:.1f} GB wanted")
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / COMPLETE).write_text(
            json.dumps({"gguf_file": str(path), "sha256": file_sha256(path)}, indent=2) + "\n"
        )
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same copy first: theirs is as good
            shutil.rmtree(partial, ignore_errors=True)
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
