"""The spc-train command: import-seed prints its accounting; errors are one clear line, exit code 2."""

from pathlib import Path

from spc_train.cli import main
from spc_train.data import read_seed

SAMPLE = Path(__file__).resolve().parents[1] / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"


def test_import_seed_writes_a_datasets_folder_and_reports_counts(tmp_path, capsys):
    out = tmp_path / "seed"
    assert main(["import-seed", "--input", str(SAMPLE), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rows read: 300, kept: 300, malformed: 0" in printed
    records = read_seed(str(out)).records
    assert len(records) == 300 and records[0]["turns"][0]["speaker"] == 1


def test_import_seed_reports_malformed_rows_and_strict_fails(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "user 1 personas,user 2 personas,Best Generated Conversation\r\n"
        '"I like tea.","I like cats.","User 1: hi\nUser 2: hello"\r\n'
        '"I like tea.","I like cats.",""\r\n'
    )
    assert main(["import-seed", "--input", str(bad), "--output", str(tmp_path / "out.jsonl")]) == 0
    assert "rows read: 2, kept: 1, malformed: 1" in capsys.readouterr().out
    assert main(["import-seed", "--input", str(bad), "--output", str(tmp_path / "o2"), "--strict"]) == 2
    assert "row 2" in capsys.readouterr().err


def test_recipe_typo_is_one_clear_error(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("generation:\n  num_candidate: 3\n")
    assert main(["loop", "--config", str(recipe), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "num_candidate" in err and "generation" in err and "num_candidates" in err
