"""QLoRA: the LoRA adapter trains on a 4-bit (bitsandbytes NF4) base with TRL's SFTTrainer, changes the generator's
outputs, and continues from itself (the loop's `update: continue`). bitsandbytes runs 4-bit layers on CPU too."""

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from spc_train.configs import GeneratorConfig
from spc_train.models import load_causal_lm, load_tokenizer
from spc_train.training.sft import train_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = Dataset.from_list(
    [
        {
            "prompt": [{"role": "user", "content": f"User 1 Profile: I have {i} cats.\nUser 2 Profile: I swim."}],
            "completion": [{"role": "assistant", "content": f"User 1: I have {i} cats.\nUser 2: I love to swim."}],
        }
        for i in range(8)
    ]
)


def sft_args(output_dir):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_length=128,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
    )


def lora_weights(folder):
    return load_file(folder / "adapter_model.safetensors")


def test_qlora_trains_on_a_4bit_base_changes_outputs_and_continues(tiny_models, tmp_path):
    spec = GeneratorConfig(name_or_path=str(tiny_models / "generator"), dtype="float32", load_in_4bit=True, lora_r=4)
    first = train_adapter(ROWS, spec, sft_args(tmp_path / "ckpt-1"), tmp_path / "adapter-1")
    assert first["steps"] == 2 and first["loss_is_finite"] and first["trainable_parameters"] > 0
    trained = lora_weights(tmp_path / "adapter-1")
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: training moved every one

    tokenizer = load_tokenizer(spec)
    ids = tokenizer("User 1 Profile: I have 3 cats.", return_tensors="pt")["input_ids"]
    base = load_causal_lm(spec)
    adapted = load_causal_lm(spec, adapter=str(tmp_path / "adapter-1"))
    assert any(type(m).__name__ == "Linear4bit" for m in adapted.modules())
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, adapted(ids).logits, atol=1e-4)

    second = train_adapter(
        ROWS, spec, sft_args(tmp_path / "ckpt-2"), tmp_path / "adapter-2", init_adapter=str(tmp_path / "adapter-1")
    )
    assert second["init_adapter"] == str(tmp_path / "adapter-1") and second["loss_is_finite"]
    continued = lora_weights(tmp_path / "adapter-2")
    assert continued.keys() == trained.keys()
    assert any(not torch.equal(continued[k], trained[k]) for k in trained)  # it trained on from adapter-1


def test_an_adapter_loaded_for_inference_is_merged_into_the_weights(tiny_models, tmp_path):
    from peft import PeftModel

    spec = GeneratorConfig(name_or_path=str(tiny_models / "generator"), dtype="float32", lora_r=4)
    train_adapter(ROWS, spec, sft_args(tmp_path / "ckpt"), tmp_path / "adapter")
    merged = load_causal_lm(spec, adapter=str(tmp_path / "adapter"))
    assert not isinstance(merged, PeftModel) and not any("lora" in name for name, _ in merged.named_parameters())
    unmerged = PeftModel.from_pretrained(load_causal_lm(spec), str(tmp_path / "adapter")).eval()
    ids = load_tokenizer(spec)("User 1 Profile: I have 3 cats.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, unmerged(ids).logits, atol=1e-5)  # the same function
        assert not torch.allclose(merged(ids).logits, load_causal_lm(spec)(ids).logits, atol=1e-4)
