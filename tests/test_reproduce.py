"""`reproduce`: an untouched run reproduces, and a stage that does not match says which files, rows and fields differ,
and by how much."""

import json
import math
from importlib import metadata

import pytest
import torch
from safetensors.torch import save_file

from spc_train.reproduce import describe_difference, format_results, reproduce
from spc_train.runs import RunDir, StageInputError, load_rows, save_rows

NAN = float("nan")

ROWS = [
    {"pair_id": "a", "scores": {"faithfulness": 0.25, "toxicity": 0.01}, "passed": True, "text": "hi"},
    {"pair_id": "b", "scores": {"faithfulness": 0.75, "toxicity": 0.02}, "passed": False, "text": "yo"},
    {"pair_id": "c", "scores": {"faithfulness": 0.5, "toxicity": 0.03}, "passed": True, "text": "hey"},
]


def test_rows_that_differ_by_float_noise_name_the_field_and_the_gap(tmp_path):
    save_rows(ROWS, tmp_path / "recorded")
    noisy = [dict(r) for r in ROWS]
    noisy[1] = {**ROWS[1], "scores": {"faithfulness": 0.7503, "toxicity": 0.02}}
    save_rows(noisy, tmp_path / "redone")
    line = describe_difference(tmp_path / "recorded", tmp_path / "redone")
    assert line == (
        "3 rows recorded, 3 reproduced; 1 of the first 3 differ; in scores; largest numeric difference 0.0003"
    )


def test_missing_rows_and_text_changes_are_counted(tmp_path):
    save_rows(ROWS[1:], tmp_path / "recorded")
    save_rows([{**ROWS[0], "text": "hello"}, *ROWS[1:]], tmp_path / "redone")
    line = describe_difference(tmp_path / "recorded", tmp_path / "redone")
    assert line.startswith("2 rows recorded, 3 reproduced; 2 of the first 2 differ; in pair_id, passed, scores, text")


@pytest.mark.parametrize("shift", [0.0, 0.125])
def test_adapter_weights_report_how_many_tensors_differ_and_by_how_much(tmp_path, shift):
    weights = {"lora_A": torch.zeros(2, 3), "lora_B": torch.ones(3, 2)}
    for name, tensors in (("recorded", weights), ("redone", {**weights, "lora_B": weights["lora_B"] + shift})):
        (tmp_path / name).mkdir()
        save_file(tensors, tmp_path / name / "adapter_model.safetensors")
        (tmp_path / name / "stage.json").write_text(name)  # the record itself is not an output
        (tmp_path / name / "README.md").write_text("card" if shift else name)
    line = describe_difference(tmp_path / "recorded", tmp_path / "redone")
    assert line == ("1 of 2 adapter tensors differ, by at most 0.125" if shift else "files differ: README.md")


def test_nan_equals_nan_so_only_real_differences_count(tmp_path):
    """Pairwise matrices have NaN diagonals: a row equal but for those NaNs is equal."""
    rows = [{**row, "pairwise": {"depth": [[NAN, 0.5], [0.5, NAN]]}} for row in ROWS]
    save_rows(rows, tmp_path / "recorded")
    noisy = [dict(r) for r in rows]
    noisy[2] = {**rows[2], "pairwise": {"depth": [[NAN, 0.5], [0.5004, NAN]]}}
    save_rows(noisy, tmp_path / "redone")
    line = describe_difference(tmp_path / "recorded", tmp_path / "redone")
    assert (
        line
        == "3 rows recorded, 3 reproduced; 1 of the first 3 differ; in pairwise; largest numeric difference 0.0004"
    )
    noisy[2] = {**rows[2], "pairwise": {"depth": [[NAN, 0.5], [NAN, NAN]]}}
    save_rows(noisy, tmp_path / "redone-nan")
    assert describe_difference(tmp_path / "recorded", tmp_path / "redone-nan").endswith(
        "largest numeric difference inf"
    )


def test_files_only_on_one_side_are_named_from_the_stage_records(tmp_path):
    run = RunDir(tmp_path)

    def write(out):
        save_rows(ROWS, out)
        (out / "extra.json").write_text("{}")

    run.commit(run.stage_dir("recorded"), "fp", write)
    run.commit(run.stage_dir("redone"), "fp", lambda out: save_rows(ROWS, out))
    (tmp_path / "redone" / "extra.json").write_text("{}")  # on disk, but not written by the stage
    line = describe_difference(tmp_path / "recorded", tmp_path / "redone")
    assert line == "only in the record: extra.json; 3 rows recorded, 3 reproduced; 0 of the first 3 differ"


def test_format_results_prints_each_difference_under_the_table():
    results = [
        {"stage": "iter-01/candidates", "fingerprint": True, "output": True, "on_disk": True},
        {"stage": "iter-01/critiques", "fingerprint": True, "output": False, "on_disk": True, "difference": "X"},
    ]
    text = format_results(results)
    assert "  iter-01/critiques: X" in text
    assert text.splitlines()[-1] == "NOT reproduced: iter-01/critiques"


@pytest.fixture(scope="module")
def one_iteration(tiny_models, tmp_path_factory):
    from test_loop import write_recipe

    from spc_train.cli import main

    root = tmp_path_factory.mktemp("reproduce")
    recipe = write_recipe(
        root / "recipe.yaml",
        tiny_models,
        personas={"num_pairs": 4},
        generation={"num_candidates": 2, "max_new_tokens": 64},
        training={"max_steps": 2},
        loop={"iterations": 1},
    )
    assert main(["loop", "--config", str(recipe), "--run_dir", str(root / "run")]) == 0
    return root / "run"


@pytest.mark.slow
def test_an_untouched_run_reproduces_despite_a_datasets_cache_nans_and_other_packages(one_iteration, tmp_path, caplog):
    from datasets import load_from_disk

    run = one_iteration
    critiques = run / "iter-00" / "critiques"
    rows = load_rows(critiques)
    assert any(math.isnan(p) for row in rows for line in row["pairwise"].values() for p in line)  # NaN diagonals
    load_from_disk(str(critiques)).filter(lambda row: True)  # `datasets` writes its cache into the stage folder
    (run / "iter-00" / "candidates" / "cache-00000.arrow").write_bytes(b"a cache")
    caches = sorted(p.name for p in critiques.glob("cache-*.arrow"))
    assert caches
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["packages"]["trl"] = "0.0.1"
    (run / "manifest.json").write_text(json.dumps(manifest))

    with caplog.at_level("WARNING", logger="spc_train.reproduce"):
        results = reproduce(run, 0, tmp_path / "work")
    assert f"trl 0.0.1 -> {metadata.version('trl')}" in caplog.text
    text = format_results(results)
    assert text.splitlines()[-1] == "reproduced: every stage matches", text
    assert [r["stage"] for r in results] == [
        f"iter-00/{s}" for s in ("candidates", "critiques", "selected", "train", "adapter", "eval")
    ]
    assert f"  iter-00/critiques: not written by the stage, ignored: {', '.join(caches)}" in text
    assert "  iter-00/candidates: not written by the stage, ignored: cache-00000.arrow" in text


def test_an_iteration_that_does_not_exist_is_a_one_line_error(tmp_path):
    run = RunDir(tmp_path)
    run.commit(run.stage_dir("selected", 0), "fp", lambda out: save_rows(ROWS, out))
    with pytest.raises(StageInputError, match="has no finished iteration 3 to reproduce; finished iterations: 0[.]$"):
        reproduce(tmp_path, 3)
    with pytest.raises(StageInputError, match="finished iterations: none"):
        reproduce(tmp_path / "nothing-here", 0)
