"""`spc-train export` shaped for the ecosystem: parquet is parquet, JSONL has no NaN, candidates carry their
critiques, and the SFT folder is what `load_dataset(DIR)` and TRL's own `trl sft --dataset_name DIR` train on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_loop import load

from spc_train.cli import main

pytestmark = pytest.mark.slow


def test_parquet_is_parquet_and_jsonl_has_no_nan(demo_run, tmp_path, capsys):
    import pyarrow.parquet as pq

    _, run = demo_run
    out = tmp_path / "selected.parquet"
    assert main(["export", "--run_dir", str(run), "--output", str(out)]) == 0
    assert pq.read_table(out).num_rows == len(load(run / "iter-01" / "selected"))
    jsonl = tmp_path / "candidates.jsonl"
    assert main(["export", "--run_dir", str(run), "--output", str(jsonl), "--what", "candidates"]) == 0
    text = jsonl.read_text()
    assert "NaN" not in text and "null" in text  # the pairwise diagonals
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == len(load(run / "iter-01" / "candidates"))
    assert all(row["scores"] and "passed" in row and "selected" in row for row in rows)
    assert sum(row["selected"] for row in rows) == len(load(run / "iter-01" / "selected"))
    assert all(row["passed"] for row in rows if row["selected"])


def test_an_unknown_extension_is_refused(demo_run, tmp_path, capsys):
    _, run = demo_run
    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "x.xlsx")]) == 2
    assert "unknown output type '.xlsx'" in capsys.readouterr().err
    assert not (tmp_path / "x.xlsx").exists()


def test_trl_sft_trains_on_the_exported_folder(demo_run, tiny_models, tmp_path):
    from datasets import load_dataset

    _, run = demo_run
    folder = tmp_path / "sft"
    assert main(["export", "--run_dir", str(run), "--output", str(folder), "--what", "sft"]) == 0
    assert "trl sft" in (folder / "README.md").read_text()
    rows = load_dataset(str(folder), split="train")
    assert rows.column_names == ["prompt", "completion"] and len(rows) == len(load(run / "iter-01" / "train"))
    # TRL's own command line, as the README shows it.
    trl = Path(sys.executable).with_name("trl")  # the console script of the environment the tests run in
    command = [str(trl), "sft", "--model_name_or_path", str(tiny_models / "generator")]
    command += ["--dataset_name", str(folder), "--output_dir", str(tmp_path / "out"), "--max_steps", "2"]
    command += ["--per_device_train_batch_size", "2", "--max_length", "256", "--use_peft", "--lora_r", "4"]
    command += ["--use_cpu", "--bf16", "false", "--report_to", "none", "--save_strategy", "no"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_trl_sft_trains_on_a_dataset_mixture_of_exports(demo_run, tiny_models, tmp_path):
    """The README's TRL YAML: a `datasets:` mixture of two exported SFT folders, `trl sft --config`."""
    import yaml

    _, run = demo_run
    for k in (0, 1):
        out = str(tmp_path / f"sft-{k}")
        assert main(["export", "--run_dir", str(run), "--output", out, "--what", "sft", "--iteration", str(k)]) == 0
    config = {
        "model_name_or_path": str(tiny_models / "generator"),
        "datasets": [{"path": str(tmp_path / "sft-0")}, {"path": str(tmp_path / "sft-1")}],
        "use_peft": True,
        "lora_r": 4,
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "max_length": 256,
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(config))
    trl = Path(sys.executable).with_name("trl")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(trl), "sft", "--config", str(tmp_path / "sft.yaml")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()
