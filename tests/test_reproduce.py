"""`reproduce`'s account of a stage that does not match: which rows and fields differ, and by how much."""

import pytest
import torch
from safetensors.torch import save_file

from spc_train.reproduce import describe_difference, format_results
from spc_train.runs import save_rows

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


def test_format_results_prints_each_difference_under_the_table():
    results = [
        {"stage": "iter-01/candidates", "fingerprint": True, "output": True, "on_disk": True},
        {"stage": "iter-01/critiques", "fingerprint": True, "output": False, "on_disk": True, "difference": "X"},
    ]
    text = format_results(results)
    assert "  iter-01/critiques: X" in text
    assert text.splitlines()[-1] == "NOT reproduced: iter-01/critiques"
