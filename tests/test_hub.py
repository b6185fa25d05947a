"""`spc-train push`: the Hub cannot be reached here, so the push is checked at the `HfApi` boundary with a recording
fake, and what it uploaded is loaded back with plain `datasets`, `peft` and TRL's CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from spc_train.data import read_seed
from spc_train.data.writers import write_dataset
from spc_train.hub import HubOfflineError, PushError, push_run
from spc_train.runs import load_rows, save_rows, write_json_atomic

SAMPLE = Path(__file__).resolve().parents[1] / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"
REPO = "my-org/spc-demo"
EXPERTS = ["faithfulness", "toxicity", "depth"]


class FakeHfApi:
    """Records what `push_run` asks of the Hub; `fail_on=N` makes the Nth `create_commit` raise."""

    def __init__(self, fail_on: int | None = None):
        self.fail_on = fail_on
        self.calls: list[tuple] = []
        self.commits: list[dict] = []
        self.files: dict[tuple[str, str, str], dict[str, bytes]] = {}  # (type, repo, revision) -> path -> bytes

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        assert exist_ok and "token" not in kwargs
        self.calls.append(("create_repo", repo_id, repo_type, private))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kwargs):
        assert exist_ok and "token" not in kwargs
        self.calls.append(("create_branch", repo_id, repo_type, branch))

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, revision=None, **kwargs):
        assert "token" not in kwargs
        if self.fail_on is not None and len(self.commits) + 1 == self.fail_on:
            raise ConnectionError("simulated network failure")
        files = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations}
        oid = f"{len(self.commits):040x}"
        self.commits.append(
            dict(repo_id=repo_id, repo_type=repo_type, revision=revision, message=commit_message, files=files)
        )
        self.files.setdefault((repo_type, repo_id, revision or "main"), {}).update(files)
        self.calls.append(("create_commit", repo_id, repo_type, revision))
        return SimpleNamespace(oid=oid, commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}")

    def materialize(self, repo_type: str, revision: str, folder: Path) -> Path:
        """Write a repo revision as uploaded, for loading it back with plain libraries."""
        for path, data in self.files[(repo_type, REPO, revision)].items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(data)
        return folder


# -- a small run directory, built by hand in a few seconds ----------------------------------------------------------
def _stage(folder: Path, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "stage.json", {"stage": folder.name, "fingerprint": "f" * 20, **record})


def _tiny_generator(out: Path) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    from spc_train.tiny import _llama_config, train_tokenizer

    records = read_seed(str(SAMPLE), limit=40).records
    tokenizer = train_tokenizer([t["text"] for r in records for t in r["turns"]])
    torch.manual_seed(0)
    model = LlamaForCausalLM(_llama_config(tokenizer, hidden=32, layers=1))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_run(root: Path, generator: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = root / "run"
    seed = read_seed(str(SAMPLE), limit=12).records
    write_dataset(seed, run / "seed")
    _stage(run / "seed", rows=len(seed))
    for k in (0, 1):
        it = run / f"iter-{k:02d}"
        candidates = [
            {
                **record,
                "candidate": c,
                "text": "",
                "iteration": k,
                "source": f"generated:iter-{k:02d}",
                "scores": {name: 0.1 * c + 0.01 * i for name in EXPERTS},
                "pairwise": {"depth": [float("nan"), 0.5]},
                "passed": c == 0 or i % 2 == 0,
            }
            for i, record in enumerate(seed[:6])
            for c in range(2)
        ]
        save_rows(candidates, it / "critiques")
        _stage(it / "critiques", rows=len(candidates))
        selected = [{**row, "selected": True, "votes": 2, "wins": 1.0} for row in candidates if row["candidate"] == 0]
        save_rows(selected, it / "selected")
        _stage(
            it / "selected",
            selected=len(selected),
            parse_rate=1.0,
            pass_rate=0.75,
            filter_pass_rates={"faithfulness": 0.9, "toxicity": 1.0},
            pairs_without_survivor=[],
        )
        _stage(it / "eval", metrics={"candidates": len(candidates), "distinct_1": 0.25 + k / 10, "sft_loss": 1.5})
        model = AutoModelForCausalLM.from_pretrained(generator)
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        )
        (it / "adapter").mkdir()
        peft_model.save_pretrained(it / "adapter")
        AutoTokenizer.from_pretrained(generator).save_pretrained(it / "adapter")
        _stage(it / "adapter", train_loss=1.2 - k / 10, final_loss=1.1, steps=4, rows=6, init_adapter=None)
    recipe = {
        "seed": {"path": str(SAMPLE), "format": None},
        "model": {"name_or_path": str(generator), "lora_r": 4},
        "training": {"max_steps": 4, "learning_rate": 0.005, "per_device_train_batch_size": 2, "eos_token": None},
        "loop": {"iterations": 2, "seed": 7},
    }
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    metrics = {
        "columns": ["seed", "iter-00", "iter-01"],
        "metrics": {"distinct_1": {"seed": 0.4321, "iter-00": 0.25, "iter-01": 0.35}, "pass:toxicity": {}},
    }
    (run / "report").mkdir()
    (run / "report" / "metrics.json").write_text(json.dumps(metrics))
    manifest = {
        "models": {
            "generator": {"dtype": "float32", "adapter": None, "model": {"path": str(generator), "sha256": "abc123"}},
            "toxicity": {"path": "tiny-models/toxicity", "sha256": "def456"},
        },
        "packages": {"trl": "1.16.0", "peft": "0.21.2"},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    generator = _tiny_generator(root / "generator")
    return build_run(root, generator), generator


@pytest.fixture
def run(template, tmp_path) -> Path:
    """A fresh copy of the template run for each test (pushing writes RUN/push.json and RUN/.push)."""
    return Path(shutil.copytree(template[0], tmp_path / "run"))


@pytest.fixture
def online(monkeypatch):
    """conftest switches the Hub off for the whole session; these tests switch it back on (the api is a fake)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def pushed(template, tmp_path_factory):
    """One complete push (with candidates) of a copy of the template, for the read-back tests."""
    from huggingface_hub import constants

    run = Path(shutil.copytree(template[0], tmp_path_factory.mktemp("pushed") / "run"))
    api = FakeHfApi()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "0")
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        result = push_run(run, REPO, include_candidates=True, api=api)
    return run, api, result


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


# -- what is uploaded -------------------------------------------------------------------------------------------------
def test_push_uploads_every_config_and_branch(pushed):
    run, api, result = pushed
    repos = [c for c in api.calls if c[0] == "create_repo"]
    assert repos == [("create_repo", REPO, "dataset", True), ("create_repo", REPO, "model", True)]  # private
    branches = [c[3] for c in api.calls if c[0] == "create_branch"]
    assert branches == ["iter-00", "iter-01"]
    parquet = "train-00000-of-00001.parquet"
    adapter = sorted(
        ["README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        + [p.name for p in (run / "iter-00" / "adapter").glob("*.jinja")]
    )
    assert [(c["repo_type"], c["revision"], sorted(c["files"])) for c in api.commits] == [
        ("dataset", "main", ["iter-00/spc_format.csv", f"iter-00/{parquet}"]),
        ("dataset", "main", [f"iter-00-candidates/{parquet}"]),
        ("dataset", "main", ["iter-01/spc_format.csv", f"iter-01/{parquet}"]),
        ("dataset", "main", [f"iter-01-candidates/{parquet}"]),
        ("dataset", "main", ["README.md", "metrics.json", "recipe.yaml"]),
        ("model", "iter-00", adapter),
        ("model", "iter-01", adapter),
        ("model", "main", adapter),
    ]
    models = api.files
    # main holds the last iteration's adapter, byte for byte.
    main_weights = models[("model", REPO, "main")]["adapter_model.safetensors"]
    assert main_weights == (run / "iter-01" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert main_weights != models[("model", REPO, "iter-00")]["adapter_model.safetensors"]
    assert result.uploaded == [f"dataset:{REPO}@main:{n}" for n in ("iter-00", "iter-00-candidates")] + [
        f"dataset:{REPO}@main:{n}" for n in ("iter-01", "iter-01-candidates", "card")
    ] + [f"model:{REPO}@{b}:adapter" for b in ("iter-00", "iter-01", "main")]
    ledger = json.loads((run / "push.json").read_text())
    assert set(ledger["uploads"]) == set(result.uploaded)
    assert ledger["uploads"][f"model:{REPO}@main:adapter"]["commit"] == f"{7:040x}"
    assert ledger["repos"] == {f"dataset:{REPO}": {"private": True}, f"model:{REPO}": {"private": True}}


def test_dataset_card_declares_configs_and_documents_the_run(pushed):
    _, api, _ = pushed
    card = api.files[("dataset", REPO, "main")]["README.md"].decode()
    meta = front_matter(card)
    assert meta["configs"] == [
        {"config_name": "iter-00", "data_files": [{"split": "train", "path": "iter-00/train-*.parquet"}]},
        {
            "config_name": "iter-00-candidates",
            "data_files": [{"split": "train", "path": "iter-00-candidates/train-*.parquet"}],
        },
        {
            "config_name": "iter-01",
            "data_files": [{"split": "train", "path": "iter-01/train-*.parquet"}],
            "default": True,
        },
        {
            "config_name": "iter-01-candidates",
            "data_files": [{"split": "train", "path": "iter-01-candidates/train-*.parquet"}],
        },
    ]
    assert meta["license"] == "cc-by-4.0"
    assert {"synthetic", "persona", "conversational"} <= set(meta["tags"])
    assert meta["source_datasets"] == ["google/Synthetic-Persona-Chat"]
    for text in ("Generator-Critic", "arXiv:2312.10007", "Jandaghi", "CC BY 4.0", "License and attribution"):
        assert text in card
    assert "@article{jandaghi2023faithful" in card
    assert "| distinct_1 | 0.4321 | 0.25 | 0.35 |" in card  # metrics.json, seed first
    assert "pass:toxicity" not in card
    assert "| generator |" in card and "abc123" in card and "tiny-models/toxicity" in card  # manifest models
    assert "learning_rate: 0.005" in card  # resolved recipe
    assert f'load_dataset("{REPO}", "iter-00"' in card
    assert yaml.safe_load(api.files[("dataset", REPO, "main")]["recipe.yaml"])["training"]["max_steps"] == 4


def test_model_card_names_base_model_data_training_and_metrics(pushed, template):
    _, api, _ = pushed
    generator = template[1]
    for revision, name in (("iter-00", "iter-00"), ("iter-01", "iter-01"), ("main", "iter-01")):
        card = api.files[("model", REPO, revision)]["README.md"].decode()
        meta = front_matter(card)
        assert meta["library_name"] == "peft" and meta["datasets"] == [REPO]
        assert "base_model" not in meta  # a local path is not a Hub id: the Hub would reject it
        assert f"`{generator}`" in card
        assert f"Config `{name}` of the dataset" in card
        assert "- `max_steps`: 4" in card and "learning_rate: 0.005" in card
        assert f'revision="{revision}"' in card
    main = api.files[("model", REPO, "main")]["README.md"].decode()
    assert "This is `main`, which holds the last iteration (iter-01)" in main
    assert "Train loss 1.1" in main  # iter-01 adapter stage record
    assert "| distinct_1 | 0.4321 | 0.35 |" in main


def test_public_flag_and_dataset_only_run(run, online):
    shutil.rmtree(run / "iter-00" / "adapter")
    shutil.rmtree(run / "iter-01" / "adapter")
    api = FakeHfApi()
    result = push_run(run, REPO, private=False, api=api)
    assert [c for c in api.calls if c[0] == "create_repo"] == [("create_repo", REPO, "dataset", False)]
    assert result.model_repo is None and {c["repo_type"] for c in api.commits} == {"dataset"}
    assert len(api.commits) == 3  # two configs (no candidates unless asked) and the card


def test_offline_mode_fails_before_anything(run):
    api = FakeHfApi()
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE"):
        push_run(run, REPO, api=api)
    assert api.calls == []
    assert not (run / "push.json").exists() and not (run / ".push").exists()


# -- resuming -------------------------------------------------------------------------------------------------------
def test_failure_mid_push_is_reported_and_a_rerun_uploads_only_the_rest(run, online):
    failing = FakeHfApi(fail_on=3)
    with pytest.raises(PushError) as raised:
        push_run(run, REPO, api=failing)
    message = str(raised.value)
    assert "simulated network failure" in message
    assert raised.value.uploaded == [f"dataset:{REPO}@main:iter-00", f"dataset:{REPO}@main:iter-01"]
    rest = [f"dataset:{REPO}@main:card"] + [f"model:{REPO}@{b}:adapter" for b in ("iter-00", "iter-01", "main")]
    assert raised.value.pending == rest
    assert f"uploaded (2): dataset:{REPO}@main:iter-00, dataset:{REPO}@main:iter-01" in message
    assert "not uploaded (4): " + ", ".join(rest) in message
    assert "push.json" in message
    ledger = json.loads((run / "push.json").read_text())
    assert set(ledger["uploads"]) == set(raised.value.uploaded)
    assert ledger["last_error"]["unit"] == rest[0]

    working = FakeHfApi()
    result = push_run(run, REPO, api=working)
    assert result.uploaded == rest and result.skipped == raised.value.uploaded
    assert [(c["repo_type"], c["revision"]) for c in working.commits] == [("dataset", "main")] + [
        ("model", b) for b in ("iter-00", "iter-01", "main")
    ]
    assert "README.md" in working.commits[0]["files"] and "last_error" not in json.loads(
        (run / "push.json").read_text()
    )

    again = FakeHfApi()
    assert push_run(run, REPO, api=again).uploaded == [] and again.calls == []

    # A changed output (here: the last adapter) is uploaded again, and only it: its branch and main.
    (run / "iter-01" / "adapter" / "adapter_model.safetensors").write_bytes(b"changed")
    changed = FakeHfApi()
    assert push_run(run, REPO, api=changed).uploaded == [f"model:{REPO}@{b}:adapter" for b in ("iter-01", "main")]


# -- tokens -----------------------------------------------------------------------------------------------------------
MARKER = "hf_TOKENMARKERdoNotLeak0123456789"


def test_token_appears_nowhere(run, online, monkeypatch):
    from huggingface_hub import get_token

    monkeypatch.setenv("HF_TOKEN", MARKER)
    assert get_token() == MARKER  # the leak check below sees the token
    api = FakeHfApi(fail_on=4)
    with pytest.raises(PushError):
        push_run(run, REPO, include_candidates=True, api=api)
    api2 = FakeHfApi()
    push_run(run, REPO, include_candidates=True, api=api2)
    for path in run.rglob("*"):
        if path.is_file():
            assert MARKER.encode() not in path.read_bytes(), path
    for fake in (api, api2):
        assert MARKER not in repr(fake.calls)
        for commit in fake.commits:
            assert MARKER not in commit["message"]
            assert all(MARKER.encode() not in data for data in commit["files"].values())


def test_a_staged_file_holding_the_token_is_refused(run, online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", MARKER)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["training"]["hub_token"] = MARKER  # e.g. a recipe that carried a token along
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    api = FakeHfApi()
    with pytest.raises(PushError, match="contains the Hub token"):
        push_run(run, REPO, api=api)
    assert api.calls == []


# -- interop: plain datasets, peft and TRL read what was uploaded ---------------------------------------------------
def test_configs_load_with_plain_datasets(pushed, tmp_path):
    from datasets import load_dataset

    run, api, _ = pushed
    folder = api.materialize("dataset", "main", tmp_path / "repo")
    for k in (0, 1):
        expected = load_rows(run / f"iter-{k:02d}" / "selected")
        data = load_dataset(str(folder), f"iter-{k:02d}", split="train")
        assert data.column_names[:5] == ["pair_id", "user1_persona", "user2_persona", "turns", "source"]
        same = ["pair_id", "user1_persona", "user2_persona", "turns", "source", "candidate", "scores", "selected"]
        assert data.select_columns(same).to_list() == [{name: row[name] for name in same} for row in expected]
        assert set(data.column_names) == set(expected[0])
        candidates = load_dataset(str(folder), f"iter-{k:02d}-candidates", split="train")
        assert len(candidates) == 12 and "scores" in candidates.column_names
        direct = load_dataset("parquet", data_files=str(folder / f"iter-{k:02d}" / "*.parquet"), split="train")
        assert direct["pair_id"] == [row["pair_id"] for row in expected]
        # The SPC CSV reads back (with spc_train's SPC reader) to the same personas and turns.
        spc = read_seed(str(folder / f"iter-{k:02d}" / "spc_format.csv")).records
        assert [(r["user1_persona"], r["turns"]) for r in spc] == [(r["user1_persona"], r["turns"]) for r in expected]
    assert load_dataset(str(folder), split="train")["pair_id"] == data["pair_id"]  # default config: last iteration


def test_plain_peft_loads_the_uploaded_adapter_and_generates(pushed, template, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, api, _ = pushed
    folder = api.materialize("model", "iter-00", tmp_path / "adapter")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(template[1])
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    inputs = tokenizer("User 1: Hi! I love my dogs.\nUser 2:", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    with torch.no_grad(), model.disable_adapter():
        plain = model(**inputs).logits
    assert (model(**inputs).logits - plain).abs().max().item() > 1e-4  # the adapter does something


@pytest.mark.slow
def test_trl_cli_trains_on_the_exported_sft_view(pushed, template, tmp_path):
    """TRL's own `trl sft` trains the tiny generator for 2 steps on the uploaded iter-00 config as SFT rows."""
    from datasets import load_dataset

    from spc_train.training.data import sft_rows

    _, api, _ = pushed
    folder = api.materialize("dataset", "main", tmp_path / "repo")
    records = load_dataset(str(folder), "iter-00", split="train").to_list()
    data = tmp_path / "sft"
    data.mkdir()
    with (data / "train.jsonl").open("w") as f:
        for row in sft_rows(records):
            f.write(json.dumps(row) + "\n")
    trl = Path(sys.executable).with_name("trl")
    out = tmp_path / "out"
    command = [str(trl), "sft", "--model_name_or_path", str(template[1]), "--dataset_name", str(data)]
    command += ["--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "1024"]
    command += ["--use_cpu", "--bf16", "false", "--report_to", "none", "--save_strategy", "no"]
    command += ["--output_dir", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Training completed" in proc.stdout + proc.stderr
    assert (out / "model.safetensors").stat().st_size > 0
