"""The console: a stage's log is its start and end lines (with what it made) unless `--verbose` asks for the
libraries' bars and lines; the events a user must act on are WARNINGs that say what to do."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import copy_run

from spc_train.cli import main
from spc_train.runs import load_rows

SPC_TRAIN = Path(sys.executable).with_name("spc-train")  # the console script of the environment the tests run in


def _train_again(copy: Path, *flags: str) -> subprocess.CompletedProcess:
    shutil.rmtree(copy / "iter-01" / "adapter")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("DISABLE_PROGRESS_BARS", "TQDM_DISABLE"))}
    return subprocess.run(
        [str(SPC_TRAIN), "train", "--run_dir", str(copy), "--iteration", "1", *flags],
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )


def test_a_stage_is_two_lines_without_verbose_and_shows_the_libraries_with_it(demo_run, tmp_path):
    copy = copy_run(demo_run, tmp_path)
    quiet = _train_again(copy)
    assert quiet.returncode == 0, quiet.stderr
    lines = (quiet.stdout + quiet.stderr).splitlines()
    assert len(lines) == 2, lines
    assert "run  iter-01/adapter" in lines[0]
    assert "done iter-01/adapter" in lines[1] and "LoRA adapter, 4 steps, train loss" in lines[1]

    verbose = _train_again(copy, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    shown = verbose.stdout + verbose.stderr
    assert "Loading weights" in shown  # transformers' bar
    assert "Tokenizing train dataset" in shown  # TRL's preprocessing, through datasets' bars
    assert "'loss'" in shown  # the Trainer's log lines
    assert "is_gradient_checkpointing" not in shown  # a known harmless FutureWarning stays filtered


def test_what_a_user_must_act_on_is_a_warning_that_says_what_to_do(demo_run, tmp_path, caplog, monkeypatch):
    from spc_train.model_roles import Models

    copy = copy_run(demo_run, tmp_path)
    run = ["--run_dir", str(copy)]
    with caplog.at_level(logging.WARNING, logger="spc_train"):
        # Eight new tokens are no conversation of both users.
        assert main(["generate", *run, "--iteration", "0", "--generation.max_new_tokens", "8"]) == 0
        # A generator that writes nothing for persona expansion: no query, so no new attribute.
        monkeypatch.setattr(Models, "complete", lambda self: lambda prompts: ["" for _ in prompts])
        assert main(["expand-personas", *run]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("0% of" in w and "parsed" in w and "generation.max_new_tokens" in w for w in warnings), warnings
    assert any("no new attribute" in w and "personas.target_new_attributes" in w for w in warnings), warnings


def test_a_tiny_selection_is_a_warning(demo_run, tmp_path, caplog):
    copy = copy_run(demo_run, tmp_path)
    critiques = [row for row in load_rows(copy / "iter-00" / "critiques") if row["parsed"]]
    # A toxicity threshold just above the least toxic pair's best candidate: one pair of six passes.
    best = sorted(
        {
            min(r["scores"]["toxicity"] for r in critiques if r["pair_id"] == p)
            for p in {r["pair_id"] for r in critiques}
        }
    )
    threshold = (best[0] + best[1]) / 2
    with caplog.at_level(logging.WARNING, logger="spc_train"):
        code = main(
            ["select", "--run_dir", str(copy), "--iteration", "0", "--critic.toxicity_threshold", str(threshold)]
        )
    assert code == 0
    assert len(load_rows(copy / "iter-00" / "selected")) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("only 1 of" in w and "generation.num_candidates" in w for w in warnings), warnings


def test_training_many_epochs_over_a_small_selection_is_a_warning(demo_run, tmp_path, caplog):
    copy = copy_run(demo_run, tmp_path)
    shutil.rmtree(copy / "iter-01" / "adapter")
    epochs = ["--training.max_steps", "-1", "--training.num_train_epochs", "11"]  # iteration 0's adapter too:
    with caplog.at_level(logging.WARNING, logger="spc_train"):  # its descendants are stale, used as they are
        assert main(["train", "--run_dir", str(copy), "--iteration", "1", "--allow_stale", *epochs]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("11 epochs" in w and "training.num_train_epochs" in w for w in warnings), warnings


def test_a_generator_worse_at_the_format_after_training_is_a_warning(caplog):
    from spc_train.evaluation.stages import warn_if_format_fell

    before = {"parse_rate": 0.21, "stopped_rate": 0.40, "rows": 48}
    with caplog.at_level(logging.WARNING, logger="spc_train"):
        # SmolLM2 after 32 epochs on 3 rows: parses more, stops much less (z = 2.2)
        warn_if_format_fell(1, before, {"parse_rate": 0.54, "stopped_rate": 0.19, "candidates": 48})
        # 40% -> 27% at 48 candidates is 1.3 standard errors: within the sampling's noise
        warn_if_format_fell(1, before, {"parse_rate": 0.17, "stopped_rate": 0.27, "candidates": 48})
        # the same fall over 480 candidates each is not
        warn_if_format_fell(1, before | {"rows": 480}, {"parse_rate": 0.21, "stopped_rate": 0.27, "candidates": 480})
        warn_if_format_fell(1, {}, {"parse_rate": 0.15, "stopped_rate": 0.35, "candidates": 48})  # nothing before
        # as many parse and stop, but fewer do both: fewer whole conversations
        after = {"parse_rate": 0.21, "stopped_rate": 0.40, "complete_rate": 0.02, "candidates": 100}
        warn_if_format_fell(1, before | {"complete_rate": 0.15, "rows": 100}, after)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3, warnings
    assert "(stopped by the model 40% -> 19%, of 48 and 48 candidates)" in warnings[0]
    assert "(stopped by the model 40% -> 27%, of 480 and 480 candidates)" in warnings[1]
    assert "(parsed and stopped 15% -> 2%, of 100 and 100 candidates)" in warnings[2]
    assert all("training.num_train_epochs" in w and "loop.train: false" in w for w in warnings)
