"""The whole loop on tiny models: outputs, skip on re-run, resume after a crash, adapters, selection."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_recipe  # noqa: F401  (the demo recipe; other test modules import it from here)

from spc_train.cli import main
from spc_train.configs import parse_recipe
from spc_train.loop import Loop
from spc_train.runs import read_stage

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).resolve().parents[1] / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"
STAGES = ["candidates", "critiques", "selected", "train", "adapter", "eval"]


def load(folder: Path) -> list[dict]:
    from datasets import load_from_disk

    return load_from_disk(str(folder)).to_list()


def test_loop_writes_every_stage_of_both_iterations(demo_run):
    _, run = demo_run
    for k in (0, 1):
        for stage in STAGES:
            record = read_stage(run / f"iter-{k:02d}" / stage)
            assert record is not None, f"iter-{k:02d}/{stage} not finished"
        selected = load(run / f"iter-{k:02d}" / "selected")
        assert selected and all(row["selected"] and row["passed"] for row in selected)
        assert {row["pair_id"] for row in selected} <= {row["pair_id"] for row in load(run / "pairs")}
        assert len(load(run / f"iter-{k:02d}" / "candidates")) == 6 * 3
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]) >= {f"iter-01/{stage}" for stage in STAGES} | {"seed", "pairs", "report"}
    assert manifest["models"]["generator"]["model"]["sha256"]
    assert manifest["packages"]["trl"]
    assert (run / "report" / "report.md").read_text().count("iter-01") >= 2
    assert (run / "report" / "metrics-statistics.png").stat().st_size > 1000
    # The paper's measurements, for the seed (first column) and each iteration, each with its section and plot.
    report = (run / "report" / "report.md").read_text()
    sections = [("Dataset statistics", "statistics"), ("Toxicity", "toxicity"), ("AI detection", "detection")]
    for section, plot in sections:
        assert f"## {section}" in report and (run / "report" / f"metrics-{plot}.png").exists()
    for section in ("Next-utterance prediction", "Faithfulness: profile extraction", "LLM-judge scores"):
        assert f"## {section}" in report
    assert "## Persona set" not in report  # users are the seed's (`personas.source: seed`): nothing was expanded
    seed_metrics, last = (read_stage(run / where)["metrics"] for where in ("eval", "iter-01/eval"))
    assert "detection_lose" not in seed_metrics and seed_metrics["extraction_items"] > 0
    assert last["detection_lose"] + last["detection_win"] + last["detection_tie"] == pytest.approx(1.0)
    assert last["detection_items"] == len(load(run / "iter-01" / "selected"))
    assert 0.0 <= last["persona_embedding_coverage"] <= 1.0 and last["toxicity_weak"] >= 0.0
    # The saved recipe is complete: it parses back to the same values.
    assert parse_recipe(run / "recipe.yaml").to_dict() == parse_recipe(demo_run[0]).to_dict()


def test_rerun_does_no_work(demo_run, caplog):
    recipe, run = demo_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("stage.json")}
    with caplog.at_level("INFO", logger="spc_train.loop"):
        assert main(["loop", "--config", str(recipe), "--run_dir", str(run)]) == 0
    assert {p: p.stat().st_mtime_ns for p in run.rglob("stage.json")} == before
    messages = [r.getMessage() for r in caplog.records if r.name == "spc_train.loop"]
    assert messages and all(m.startswith("skip") for m in messages)
    assert len(messages) == 4 + 2 * len(STAGES) + 1  # seed, pairs, probes, seed evaluation, 2 iterations, report


def test_adapter_of_iteration_0_changes_the_generator(demo_run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe, run = demo_run
    base_path = parse_recipe(recipe).model.name_or_path
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    inputs = tokenizer("User 1: Hi! I love my dogs.\nUser 2:", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    with torch.no_grad():
        before = base(**inputs).logits
        tuned = PeftModel.from_pretrained(base, str(run / "iter-00" / "adapter")).eval()  # plain PEFT, no help
        after = tuned(**inputs).logits
    assert (after - before).abs().max().item() > 1e-3
    # ... and iteration 1 generated with that adapter, keeping its few-shot example (generation.zero_shot_with_adapter
    # is off by default: a weak real generator loses the format without examples).
    generation = read_stage(run / "iter-01" / "candidates")
    assert generation["adapter"] == str(run / "iter-00" / "adapter")
    assert generation["few_shot_examples"] == read_stage(run / "iter-00" / "candidates")["few_shot_examples"] == 1


def test_selected_candidate_is_the_one_the_experts_prefer(demo_run):
    _, run = demo_run
    policies = ["depth", "coherency", "likable"]
    for k in (0, 1):
        critiques = load(run / f"iter-{k:02d}" / "critiques")
        for chosen in load(run / f"iter-{k:02d}" / "selected"):
            rows = [r for r in critiques if r["pair_id"] == chosen["pair_id"]]
            survivors = [
                r for r in rows if r["parsed"] and max(r["scores"]["faithfulness"], r["scores"]["toxicity"]) < 0.99
            ]
            members = [r["candidate"] for r in survivors]
            votes = dict.fromkeys(members, 0)
            for policy in policies:
                wins = {
                    r["candidate"]: sum(r["pairwise"][policy][o] for o in members if o != r["candidate"])
                    for r in survivors
                }
                votes[max(members, key=lambda c: (wins[c], -c))] += 1
            assert chosen["candidate"] in members
            assert votes[chosen["candidate"]] == max(votes.values())


def test_changed_threshold_reselects_without_rescoring(demo_run, tmp_path):
    recipe, run = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    critiques_before = read_stage(copy / "iter-00" / "critiques")
    args = ["select", "--run_dir", str(copy), "--iteration", "0", "--critic.faithfulness_threshold", "0.0"]
    assert main(args) == 0
    assert read_stage(copy / "iter-00" / "critiques") == critiques_before
    selection = read_stage(copy / "iter-00" / "selected")
    assert selection["selected"] == 0 and len(selection["pairs_without_survivor"]) == 6
    assert load(copy / "iter-00" / "selected") == []


def test_killed_generation_resumes_to_the_same_candidates(demo_run, tmp_path, monkeypatch):
    import spc_train.generation.candidates as candidates

    recipe, run = demo_run
    copy = tmp_path / "run"
    copy.mkdir()
    for stage in ("seed", "pairs"):
        shutil.copytree(run / stage, copy / stage)
    real_write = candidates.write_shard
    calls = []

    def crash_on_second_shard(path, rows):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_write(path, rows)

    monkeypatch.setattr(candidates, "write_shard", crash_on_second_shard)
    loop = Loop(parse_recipe(recipe), copy)
    with pytest.raises(KeyboardInterrupt):
        loop.run_stage("generate", 0)
    assert read_stage(copy / "iter-00" / "candidates") is None
    assert [p.name for p in (copy / "iter-00" / ".candidates.shards").glob("shard-*.jsonl")] == ["shard-00000.jsonl"]

    monkeypatch.setattr(candidates, "write_shard", real_write)
    loop.run_stage("generate", 0)
    stats = read_stage(copy / "iter-00" / "candidates")
    assert stats["shards_generated"] == 1 and stats["num_shards"] == 2
    assert load(copy / "iter-00" / "candidates") == load(run / "iter-00" / "candidates")
    assert stats["fingerprint"] == read_stage(run / "iter-00" / "candidates")["fingerprint"]


# Runs `spc-train ARGS` and SIGKILLs itself right after the patched function's `TRIGGER`-th call returns: a real
# `kill -9` (no cleanup, no exception handlers), landing at a point the test chooses.
KILLER = """
import os, signal, sys
from importlib import import_module
from spc_train.cli import main
module_name, owner, name, trigger = sys.argv[1:5]
target = getattr(import_module(module_name), owner) if owner != "-" else import_module(module_name)
real, calls = getattr(target, name), []
def killed_after(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == int(trigger):
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(target, name, killed_after)
sys.exit(main(sys.argv[5:]))
"""


def run_killed(tmp_path: Path, patch: list[str], args: list[str]) -> int:
    import os
    import subprocess
    import sys

    # The same thread count as this process: float sums over threads, hence scores, depend on it.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, "-c", KILLER, *patch, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600).returncode


def assert_same_rows(ours: list[dict], theirs: list[dict], where: str = "") -> None:
    """Equal rows, floats to a relative 1e-5 and NaN equal to NaN (pairwise matrices have NaN diagonals)."""

    def close(a, b) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return (a != a and b != b) or math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        return a == b

    assert len(ours) == len(theirs), where
    for index, (a, b) in enumerate(zip(ours, theirs)):
        assert close(a, b), f"{where} row {index}: {a} != {b}"


def copy_run(run: Path, to: Path, stages: list[str]) -> Path:
    """A new run directory holding these stage folders (or files, e.g. `recipe.yaml`) of `run`."""
    for stage in stages:
        if (run / stage).is_file():
            to.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run / stage, to / stage)
        else:
            shutil.copytree(run / stage, to / stage)
    return to


def test_killed_critique_resumes_to_the_same_critiques(demo_run, tmp_path):
    """kill -9 after the first shard of critiques; the same command scores only the rest; rows equal the run's."""
    import signal

    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "iter-00/candidates"])
    command = ["critique", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    patch = ["spc_train.critic.critiques", "-", "write_shard", "1"]
    assert run_killed(tmp_path, patch, command) == -signal.SIGKILL
    shards = copy / "iter-00" / ".critiques.shards"
    assert [p.name for p in shards.glob("shard-*.jsonl")] == ["shard-00000.jsonl"]
    assert read_stage(copy / "iter-00" / "critiques") is None

    assert main(command) == 0
    stats = read_stage(copy / "iter-00" / "critiques")
    assert stats["num_shards"] == 2 and stats["shards_scored"] == 1
    assert not shards.exists()
    # NaN-aware: the pairwise matrices have NaN on their diagonal, and NaN != NaN.
    ours, theirs = (json.dumps(load(r / "iter-00" / "critiques"), sort_keys=True) for r in (copy, run))
    assert ours == theirs


def test_killed_training_resumes_from_its_checkpoint_to_the_same_adapter(demo_run, tmp_path):
    """kill -9 right after checkpoint-2 is saved; the same command resumes there and ends with the same adapter.

    Every arm runs as a fresh `spc-train` process with the same environment, as a user's commands do. (The reference
    once came from the pytest process itself, whose library state ~250 earlier tests had changed: on a busy machine
    it differed from a fresh process in the last bits, while fresh processes agree bit for bit.)"""
    import signal

    from safetensors.torch import load_file

    recipe, run = demo_run
    stages = ["seed", "pairs", "iter-00/candidates", "iter-00/critiques", "iter-00/selected", "iter-00/train"]
    runs = {name: copy_run(run, tmp_path / name, stages) for name in ("uninterrupted", "resumed", "cut")}

    def command(folder: Path) -> list[str]:
        return ["train", "--config", str(recipe), "--run_dir", str(folder), "--iteration", "0"]

    patch = ["transformers", "Trainer", "_save_checkpoint"]
    assert run_killed(tmp_path, [*patch, "0"], command(runs["uninterrupted"])) == 0  # trigger 0: never killed
    assert run_killed(tmp_path, [*patch, "1"], command(runs["resumed"])) == -signal.SIGKILL
    checkpoints = runs["resumed"] / "iter-00" / ".adapter.checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]
    assert read_stage(runs["resumed"] / "iter-00" / "adapter") is None

    assert run_killed(tmp_path, [*patch, "0"], command(runs["resumed"])) == 0
    stats = read_stage(runs["resumed"] / "iter-00" / "adapter")
    assert stats["resumed_from"] == "checkpoint-2" and stats["steps"] == 4
    assert not checkpoints.exists()

    # A checkpoint cut short (here the last one lost its trainer state, as on a full disk) is set aside, and training
    # resumes from the one before.
    assert run_killed(tmp_path, [*patch, "2"], command(runs["cut"])) == -signal.SIGKILL
    (runs["cut"] / "iter-00" / ".adapter.checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    assert run_killed(tmp_path, [*patch, "0"], command(runs["cut"])) == 0
    assert read_stage(runs["cut"] / "iter-00" / "adapter")["resumed_from"] == "checkpoint-2"

    reference = runs["uninterrupted"] / "iter-00" / "adapter"
    for name in ("resumed", "cut"):
        adapter = runs[name] / "iter-00" / "adapter"
        ours, theirs = (load_file(a / "adapter_model.safetensors") for a in (adapter, reference))
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}: {key}"
        # The loss over all 4 steps, not only those after the checkpoint; the same adapter config, byte for byte.
        assert read_stage(adapter)["train_loss"] == pytest.approx(read_stage(reference)["train_loss"], rel=1e-5)
        assert (adapter / "adapter_config.json").read_bytes() == (reference / "adapter_config.json").read_bytes()
    config = json.loads((reference / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()


def test_missing_model_fails_before_any_work(tiny_models, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_models, model={"name_or_path": str(tmp_path / "no-such-model")})
    assert main(["loop", "--config", str(recipe), "--run_dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "no-such-model") in error and "generator" in error
    assert not (tmp_path / "run" / "seed").exists()


def test_stage_alone_needs_its_inputs(tiny_models, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_models)
    assert main(["critique", "--config", str(recipe), "--run_dir", str(tmp_path / "run"), "--iteration", "0"]) == 2
    assert "spc-train generate --iteration 0" in capsys.readouterr().err


def test_two_processes_generate_the_same_candidates(demo_run, tmp_path):
    """Data-parallel generation (torchrun, 2 CPU processes over gloo) merges to the single-process result."""
    import os
    import subprocess
    import sys

    from transformers import GenerationConfig

    recipe, run = demo_run
    copy = tmp_path / "run"
    copy.mkdir()
    for stage in ("seed", "pairs"):
        shutil.copytree(run / stage, copy / stage)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    command += ["-m", "spc_train.cli", "generate", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = read_stage(copy / "iter-00" / "candidates")
    assert stats["processes"] == 2
    assert load(copy / "iter-00" / "candidates") == load(run / "iter-00" / "candidates")
    saved = GenerationConfig.from_pretrained(copy / "iter-00" / "candidates")
    assert saved.top_k == 40 and saved.num_return_sequences == 3 and saved.eos_token_id


def test_killed_two_process_generation_resumes_without_loss_or_duplicates(demo_run, tmp_path):
    """kill -9 a 2-process generation mid-stage; the same command resumes; rows equal an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    recipe, run = demo_run
    overrides = ["--generation.shard_size", "1", "--generation.max_new_tokens", "160"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    for folder in (reference, resumed):
        folder.mkdir()
        for stage in ("seed", "pairs"):
            shutil.copytree(run / stage, folder / stage)
    Loop(parse_recipe(recipe, overrides), reference).run_stage("generate", 0)  # uninterrupted, one process

    def launch(port: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
        command += ["-m", "spc_train.cli", "generate", "--config", str(recipe), "--run_dir", str(resumed)]
        command += ["--iteration", "0", *overrides]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )

    shards = resumed / "iter-00" / ".candidates.shards"
    process = launch(29533)
    deadline = time.time() + 300
    while time.time() < deadline and not list(shards.glob("shard-*.jsonl")) and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole launcher and its workers, mid-stage
    process.wait()
    written = sorted(p.name for p in shards.glob("shard-*.jsonl"))
    assert 1 <= len(written) < 6, f"the kill should land mid-stage, found {written}"
    assert read_stage(resumed / "iter-00" / "candidates") is None

    process = launch(29534)
    output = process.communicate(timeout=600)[0].decode()
    assert process.returncode == 0, output[-3000:]
    stats = read_stage(resumed / "iter-00" / "candidates")
    assert stats["processes"] == 2 and stats["num_shards"] == 6
    rows = load(resumed / "iter-00" / "candidates")
    assert rows == load(reference / "iter-00" / "candidates")
    keys = [(row["pair_id"], row["candidate"]) for row in rows]
    assert len(keys) == len(set(keys)) == 6 * 3


def test_new_users_flow_into_generation(tiny_models, tmp_path):
    """personas -> profiles -> pairs of new users (NLI-checked, > 2 shared clusters) -> candidates for them."""
    changes = {
        "personas": {
            "source": "generated",
            "nli_model": str(tiny_models / "nli"),
            "query_bootstrap_steps": 2,
            "target_new_attributes": 5,
            "max_bootstrap_steps": 1,
            "num_profiles": 12,
            "num_pairs": 4,
            "max_new_tokens": 24,
            "entailment_threshold": 0.95,  # the briefly trained test NLI is not what this test is about
        },
        "seed": {"max_conversations": None},
    }
    recipe = parse_recipe(write_recipe(tmp_path / "r.yaml", tiny_models, **changes))
    loop = Loop(recipe, tmp_path / "run")
    loop.prepare()
    loop.run_stage("seed")
    loop.run_stage("expand-personas")
    loop.run_stage("build-profiles")
    loop.run_stage("pair-users")
    personas = read_stage(tmp_path / "run" / "personas")
    assert personas["statistics"]["seed"]["clusters"] > 1
    profiles = load(tmp_path / "run" / "profiles")
    assert len(profiles) == 12 and all(len(p["persona"]) == 5 for p in profiles)
    pairs = load(tmp_path / "run" / "pairs")
    assert pairs and all(p["source"] == "generated" and p["shared_clusters"] > 2 for p in pairs)
    loop.run_stage("generate", 0)
    generated_for = {row["pair_id"] for row in load(tmp_path / "run" / "iter-00" / "candidates")}
    assert generated_for == {p["pair_id"] for p in pairs}
    # Same seed, same users: re-running the stages in a fresh run directory gives identical profiles and pairs.
    again = Loop(recipe, tmp_path / "again")
    again.prepare()
    again.run_stage("seed")
    again.run_stage("expand-personas")
    again.run_stage("build-profiles")
    again.run_stage("pair-users")
    assert load(tmp_path / "again" / "profiles") == profiles and load(tmp_path / "again" / "pairs") == pairs


def test_generated_users_need_an_nli_model_with_the_right_labels(tiny_models, tmp_path, capsys):
    recipe = write_recipe(
        tmp_path / "r.yaml", tiny_models, personas={"source": "generated", "nli_model": str(tiny_models / "toxicity")}
    )
    assert main(["loop", "--config", str(recipe), "--run_dir", str(tmp_path / "run")]) == 2
    assert "entailment" in capsys.readouterr().err
    assert not (tmp_path / "run" / "seed").exists()


def test_a_run_whose_seed_is_imported_no_longer_needs_the_seed_file(demo_run, tmp_path):
    """Resuming or reproducing a run elsewhere: the seed stage is done, so a seed path that is gone is not an error."""
    from spc_train.preflight import check_recipe
    from spc_train.runs import StageInputError

    recipe, run = demo_run
    gone = parse_recipe(recipe, ["--seed.path", str(tmp_path / "gone.csv")])
    assert f"seed: imported in {run / 'seed'}; users: seed" in check_recipe(gone, run)
    with pytest.raises(StageInputError, match="seed.path: .*gone.csv is not an existing file"):
        check_recipe(gone, tmp_path / "new-run")


def test_reproduce_matches_an_unmodified_run_and_names_a_tampered_stage(demo_run, tmp_path, capsys):
    _, run = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["reproduce", "--run_dir", str(copy), "--iteration", "1", "--work_dir", str(tmp_path / "w1")]) == 0
    printed = capsys.readouterr().out
    assert "reproduced: every stage matches" in printed and "iter-01/adapter" in printed

    # Tamper with a recorded output: drop one selected conversation and save the folder again.
    from datasets import Dataset

    rows = load(copy / "iter-01" / "selected")[1:]
    stage_json = (copy / "iter-01" / "selected" / "stage.json").read_text()
    shutil.rmtree(copy / "iter-01" / "selected")
    Dataset.from_list(rows).save_to_disk(str(copy / "iter-01" / "selected"))
    (copy / "iter-01" / "selected" / "stage.json").write_text(stage_json)
    assert main(["reproduce", "--run_dir", str(copy), "--iteration", "1", "--work_dir", str(tmp_path / "w2")]) == 1
    printed = capsys.readouterr().out
    assert "NOT reproduced: iter-01/selected" in printed
    assert f"iter-01/selected: {len(rows)} rows recorded, {len(rows) + 1} reproduced" in printed


def test_whole_loop_under_accelerate_launch_with_two_processes(demo_run, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on CPU) runs the loop; iteration 0's selection equals
    one process's. Later iterations differ by design: two processes train on two half batches per step (DDP)."""
    import os
    import subprocess
    import sys

    recipe, run = demo_run
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
    command += ["29537", str(Path(__file__).resolve().parents[1] / "scripts" / "run_loop.py")]
    command += ["--config", str(recipe), "--run_dir", str(tmp_path / "run"), "--training.ddp_find_unused_parameters"]
    command += ["false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in STAGES:
        assert read_stage(tmp_path / "run" / "iter-01" / stage) is not None
    assert read_stage(tmp_path / "run" / "iter-00" / "candidates")["processes"] == 2
    # Scores agree to float noise: each process runs 1 thread here, the reference 2, and a float sum's order follows
    # the threads. Which candidates exist and which are selected is exactly the same.
    for stage in ("candidates", "critiques", "selected"):
        assert_same_rows(load(tmp_path / "run" / "iter-00" / stage), load(run / "iter-00" / stage), stage)
    # Evaluation: both processes run the measurements and the judge divides its forward passes between them; the
    # numbers are one process's. (iter-00's SFT loss is not: under DDP each step sees two half batches.)
    for where in ("eval", "iter-00/eval"):
        assert read_stage(tmp_path / "run" / where)["processes"] == 2
        ours, theirs = (
            {k: v for k, v in load(root / where)[0].items() if k != "sft_loss"} for root in (tmp_path / "run", run)
        )
        assert_same_rows([ours], [theirs], where)
    assert "iter-01" in result.stdout  # the summary table, printed once by the main process
    assert result.stdout.count("report:") == 1


def test_hub_section_pushes_after_each_iteration(demo_run, tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants
    from test_hub import FakeHfApi

    recipe, run = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    # Offline (the test session's setting), a recipe that asks to push fails before any work.
    assert main(["loop", "--config", str(recipe), "--run_dir", str(copy), "--hub.repo_id", "org/spc-demo"]) == 2
    fake = FakeHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert main(["loop", "--config", str(recipe), "--run_dir", str(copy), "--hub.repo_id", "org/spc-demo"]) == 0
    pushed = {(c["repo_type"], c["revision"] or "main") for c in fake.commits}
    assert ("dataset", "main") in pushed and ("model", "iter-00") in pushed and ("model", "iter-01") in pushed
    # The stages were all skipped: the hub section is not part of any stage's fingerprint.
    assert read_stage(copy / "iter-01" / "selected") == read_stage(run / "iter-01" / "selected")
