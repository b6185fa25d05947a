"""`loop.report_to`: each iteration's numbers reach the trackers with the iteration as step (read back from
TensorBoard's event files); a resumed loop sends only what changed; bad names and missing packages are one line."""

import json
from pathlib import Path

import pytest
import yaml

from spc_train import trackers
from spc_train.configs import RecipeError, parse_recipe
from spc_train.runs import STAGE_FILE

pytest.importorskip("tensorboard")


def stage(folder: Path, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAGE_FILE).write_text(json.dumps({"fingerprint": "f", **record}))


def fake_run(root: Path, iterations: int = 2, shift: float = 0.0) -> Path:
    """The stage records the trackers read, as a finished two-iteration run writes them (no model involved)."""
    for k in range(iterations):
        it = root / f"iter-{k:02d}"
        metrics = {"distinct_1": 0.2 + k / 10 + shift, "conversations": 6, "sft_loss": float("nan"), "note": "x"}
        stage(it / "eval", metrics=metrics)
        stage(
            it / "selected",
            selected=6 - k,
            rows=6 - k,
            parse_rate=0.8,
            pass_rate=0.75,
            filter_pass_rates={"toxicity": 1.0, "faithfulness": 0.5},
        )
        stage(it / "critiques", option_mass={"depth": {"mean": 0.9, "min": 0.8, "questions": 15}})
        stage(it / "adapter", train_loss=2.0 - k, final_loss=1.9 - k, steps=4, rows=6, loss_is_finite=True)
    (root / "report").mkdir(parents=True, exist_ok=True)
    (root / "report" / "report.md").write_text("# spc_train report\n\n| metric | iter-00 |\n")
    stage(root / "report")
    return root


def recipe(*overrides: str):
    return parse_recipe(None, ["--loop.report_to", "tensorboard", "--loop.iterations", "2", *overrides])


def read_events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(event.step, round(event.value, 5)) for event in events.Scalars(tag)]


def test_each_iteration_reaches_tensorboard_with_the_iteration_as_step(tmp_path):
    run = fake_run(tmp_path / "run")
    trackers.log_run(recipe(), run)
    events = read_events(run / "trackers")
    tags = set(events.Tags()["scalars"])
    assert {
        "eval/distinct_1",
        "eval/conversations",
        "select/selected",
        "select/pass_rate",
        "select/pass_rate/toxicity",
        "critic/option_mass/depth",
        "train/train_loss",
        "train/steps",
    } <= tags
    assert "eval/sft_loss" not in tags and "eval/note" not in tags  # NaN and text are not scalars
    assert scalars(events, "eval/distinct_1") == [(0, 0.2), (1, 0.3)]
    assert scalars(events, "select/selected") == [(0, 6), (1, 5)]
    assert scalars(events, "train/train_loss") == [(0, 2.0), (1, 1.0)]
    assert "report/text_summary" in events.Tags()["tensors"]  # the report's markdown, as TensorBoard text
    (report,) = events.Tensors("report/text_summary")
    assert report.step == 1 and b"spc_train report" in report.tensor_proto.string_val[0]


def test_a_resumed_loop_sends_only_what_is_new_and_rewrites_what_changed(tmp_path):
    run = fake_run(tmp_path / "run")
    trackers.log_run(recipe(), run)
    files = sorted((run / "trackers").glob("events.out.tfevents.*"))
    trackers.log_run(recipe(), run)  # nothing changed: no new event file, nothing doubled
    assert sorted((run / "trackers").glob("events.out.tfevents.*")) == files
    # Iteration 1 re-ran on a new recipe: its step is written again, and the older values hidden, not doubled.
    stage(run / "iter-01" / "eval", metrics={"distinct_1": 0.9, "conversations": 6})
    trackers.log_run(recipe(), run)
    assert len(list((run / "trackers").glob("events.out.tfevents.*"))) == len(files) + 1
    events = read_events(run / "trackers")
    assert scalars(events, "eval/distinct_1") == [(0, 0.2), (1, 0.9)]
    assert scalars(events, "train/train_loss") == [(0, 2.0), (1, 1.0)]  # sent again after the purge
    ledger = json.loads((run / "trackers" / trackers.LEDGER_FILE).read_text())["tensorboard"]
    assert sorted(ledger) == ["iter-00", "iter-01", "report"]


def test_the_loop_sends_each_iteration_after_its_evaluation(tmp_path, monkeypatch):
    """The scheduler's call: stages already done (skipped) still send their iteration, once."""
    from spc_train.loop import Loop

    run = fake_run(tmp_path / "run")
    sent = []
    monkeypatch.setattr(Loop, "prepare", lambda self: None)
    monkeypatch.setattr(Loop, "_run", lambda self, stage, k: "done")
    monkeypatch.setattr(trackers.Trackers, "log", lambda self, key, step, values: sent.append((key, step)))
    Loop(recipe(), run).run_all()
    assert sent == [("iter-00", 0), ("iter-01", 1), ("report", 1)]


def test_a_bad_tracker_name_is_refused_naming_the_field(tmp_path):
    with pytest.raises(RecipeError, match=r"loop\.report_to must be names from none, all, tensorboard.*'tensorbord'"):
        parse_recipe(None, ["--loop.report_to", "tensorbord"])
    with pytest.raises(RecipeError, match=r"loop\.report_to must be .*\(none alone\), got \['none', 'wandb'\]"):
        parse_recipe(None, ["--loop.report_to", "none", "wandb"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"loop": {"report_to": "tensorboard"}}))  # one name, as TRL's field takes it
    assert parse_recipe(path).loop.report_to == ["tensorboard"]
    assert parse_recipe(None).loop.report_to == ["none"]


def test_a_missing_tracker_package_stops_the_loop_in_one_line(tmp_path, monkeypatch, capsys):
    from spc_train.cli import main

    monkeypatch.setattr(trackers, "installed", lambda name: name == "tensorboard")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"loop": {"report_to": ["tensorboard", "wandb"]}}))
    assert main(["loop", "--config", str(path), "--run_dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "loop.report_to" in error and "pip install wandb" in error
    assert not (tmp_path / "run" / "trackers").exists()
    assert trackers.resolve(["all"]) == ["tensorboard"]  # `all`: the installed ones
    assert trackers.check_trackers(["none"]) == "trackers: none"
