"""Offline test set-up: no Hub, a private HF_HOME, and tiny models built once per session."""

import os
import tempfile

# Before any Hugging Face library is imported: they read these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="spc-train-hf-home-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Tiny generator / NLI / toxicity models, built from the shipped seed sample with a short warm-start."""
    from spc_train.tiny import build_tiny_models

    out = tmp_path_factory.mktemp("tiny-models")
    build_tiny_models(out, warm_start_steps=40, classifier_steps=80, max_conversations=90)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny-model unit tests: they gain nothing from threads, and busy threads stall badly on a
    shared 2-core machine. Opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llama_config(tok, **extra):
    """The unit tests' one-layer Llama (32 wide) over a tokenizer; `extra` adds eos / labels / problem type."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


SAMPLE = REPO / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"


def write_recipe(path: Path, tiny: Path, **changes) -> Path:
    recipe = {
        "seed": {"path": str(SAMPLE), "max_conversations": 60},
        "model": {"name_or_path": str(tiny / "generator"), "dtype": "float32", "lora_r": 4, "lora_alpha": 8},
        "personas": {"num_pairs": 6},
        "generation": {
            "num_candidates": 3,
            "few_shot_examples": 1,
            "max_new_tokens": 96,
            "max_prompt_tokens": 512,
            "shard_size": 3,
            "min_turns": 2,
        },
        "critic": {
            "experts": ["faithfulness", "toxicity", "depth", "coherency", "likable"],
            "toxicity_model": str(tiny / "toxicity"),
            "faithfulness_threshold": 0.99,
            "toxicity_threshold": 0.99,
            "shard_size": 3,
        },
        "training": {
            "max_steps": 4,
            "per_device_train_batch_size": 2,
            "learning_rate": 5e-3,
            "max_length": 384,
            "save_strategy": "steps",
            "save_steps": 2,
            "report_to": "none",
            "use_cpu": True,
            "bf16": False,
            "activation_checkpointing": False,
        },
        "loop": {"iterations": 2, "seed": 7},
    }
    for section, values in changes.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="session")
def demo_run(tiny_models, tmp_path_factory):
    """The demo recipe's whole loop (2 iterations), run once per session; tests copy what they change."""
    from spc_train.cli import main

    root = tmp_path_factory.mktemp("loop")
    recipe = write_recipe(root / "recipe.yaml", tiny_models)
    run_dir = root / "run"
    assert main(["loop", "--config", str(recipe), "--run_dir", str(run_dir)]) == 0
    return recipe, run_dir


def copy_run(demo_run, tmp_path) -> Path:
    """A copy of the session's demo run for a test that changes it."""
    import shutil

    _, run_dir = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy
