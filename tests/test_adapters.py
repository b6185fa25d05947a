"""The training stage's adapter folder is portable: it loads with plain PEFT from any working directory, and its
README is the model card (base model, data, training), deterministic, so the stage's output hash reproduces."""

import json
import shutil
from pathlib import Path

import pytest

from spc_train.configs import parse_recipe
from spc_train.loop import Loop
from spc_train.runs import RunDir, read_stage, save_rows, verify_stage

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = Path(__file__).resolve().parents[1] / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"
ROWS = [
    {
        "pair_id": f"p{i}",
        "prompt": [{"role": "user", "content": f"User 1 Profile: I have {i} cats.\nUser 2 Profile: I swim."}],
        "completion": [{"role": "assistant", "content": f"User 1: I have {i} cats.\nUser 2: I love to swim."}],
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Path:
    """A one-layer Llama with the tiny models' tokenizer and chat template (seconds, not the tiny models' build)."""
    import torch
    from transformers import LlamaForCausalLM

    from spc_train.data import read_seed
    from spc_train.tiny import _llama_config, train_tokenizer

    out = tmp_path_factory.mktemp("generator")
    records = read_seed(str(SAMPLE), limit=40).records
    tokenizer = train_tokenizer([t["text"] for r in records for t in r["turns"]])
    torch.manual_seed(0)
    LlamaForCausalLM(_llama_config(tokenizer, hidden=32, layers=1)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_once(generator: Path, run_dir: Path) -> Path:
    """`spc-train train --iteration 0` on a run holding only its input (`iter-00/train`, the SFT rows)."""
    run = RunDir(run_dir)
    run.commit(run.stage_dir("train", 0), "sft-rows", lambda out: save_rows(ROWS, out) or {"rows": len(ROWS)})
    overrides = ["--model.name_or_path", str(generator), "--model.dtype", "float32", "--model.lora_r", "4"]
    overrides += ["--model.lora_alpha", "8", "--loop.iterations", "1", "--training.max_steps", "2"]
    overrides += ["--training.per_device_train_batch_size", "4", "--training.max_length", "128"]
    overrides += ["--training.use_cpu", "true", "--training.bf16", "false", "--training.report_to", "none"]
    overrides += ["--training.save_strategy", "no", "--training.activation_checkpointing", "false"]
    Loop(parse_recipe(None, overrides), run_dir).run_stage("train", 0)
    return run.stage_dir("adapter", 0)


def test_the_adapter_loads_from_anywhere_and_carries_its_model_card(generator, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM, PeftModel

    adapter = train_once(generator, tmp_path / "run")
    card = (adapter / "README.md").read_text()
    assert "[More Information Needed]" not in card  # PEFT's empty template is replaced
    assert f"**`{generator.resolve()}`**" in card and "`iter-00/train`" in card
    assert "- `max_steps`: 2" in card and "Train loss " in card and "AutoPeftModelForCausalLM" in card
    assert str(tmp_path) not in card.replace(str(generator.resolve()), "")  # nothing of the run's own path
    record = read_stage(adapter)
    assert "README.md" in record["files"] and verify_stage(adapter) is None  # listed, with its sha256

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the base is found from adapter_config.json alone, not from the run's directory
    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    assert isinstance(model, PeftModel)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        generator.resolve()
    )

    # The card is the same bytes from another run directory: the adapter's output hash reproduces.
    again = train_once(generator, tmp_path / "another-name")
    assert (again / "README.md").read_bytes() == (adapter / "README.md").read_bytes()
    assert read_stage(again)["output_hash"] == record["output_hash"]
    shutil.rmtree(tmp_path / "another-name")
