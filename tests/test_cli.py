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


def _finished(folder: Path, rows: list[dict]) -> None:
    from spc_train.runs import save_rows

    save_rows(rows, folder)
    (folder / "stage.json").write_text('{"fingerprint": "f"}')


def _conversation(k: int, i: int) -> dict:
    return {
        "pair_id": f"pair-{i}",
        "user1_persona": [f"I have {i} cats."],
        "user2_persona": ["I swim."],
        "turns": [{"speaker": 1, "text": f"hi {k}"}, {"speaker": 2, "text": "hello"}],
        "source": f"generated:iter-{k:02d}",
        "iteration": k,
        "scores": {"faithfulness": 0.1 * i},
    }


def test_export_writes_the_selection_of_the_last_or_every_iteration(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    for k in (0, 1):
        _finished(run / f"iter-{k:02d}" / "selected", [_conversation(k, i) for i in range(3)])
        _finished(run / f"iter-{k:02d}" / "train", [{"prompt": f"p{k}", "completion": "c"}])
    (run / "iter-02" / "selected").mkdir(parents=True)  # started, not finished: not exported

    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "spc.csv")]) == 0
    assert "wrote 3 selected rows of iter-01" in capsys.readouterr().out
    records = read_seed(str(tmp_path / "spc.csv")).records
    assert [(r["user1_persona"], [t["text"] for t in r["turns"]]) for r in records] == [
        ([f"I have {i} cats."], ["hi 1", "hello"]) for i in range(3)
    ]

    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "all.jsonl"), "--iteration", "all"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["pair_id"]) for r in rows] == [(k, f"pair-{i}") for k in (0, 1) for i in range(3)]
    assert rows[2]["scores"] == {"faithfulness": 0.2}  # JSON Lines keep the stage columns

    sft = tmp_path / "sft.jsonl"
    assert main(["export", "--run_dir", str(run), "--output", str(sft), "--what", "sft", "--iteration", "0"]) == 0
    assert [json.loads(line) for line in sft.read_text().splitlines()] == [{"prompt": "p0", "completion": "c"}]
    capsys.readouterr()


def test_export_errors_name_what_exists(tmp_path, capsys):
    run = tmp_path / "run"
    _finished(run / "iter-00" / "selected", [_conversation(0, 0)])
    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "x.csv"), "--iteration", "2"]) == 2
    assert "iterations [0]" in capsys.readouterr().err
    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "x.csv"), "--what", "sft"]) == 2
    assert "no finished `train` stage" in capsys.readouterr().err
    _finished(run / "iter-00" / "train", [{"prompt": "p", "completion": "c"}])
    assert main(["export", "--run_dir", str(run), "--output", str(tmp_path / "x.csv"), "--what", "sft"]) == 2
    assert "export .jsonl or a folder" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_check_reports_what_a_run_would_use_and_writes_nothing(tiny_models, tmp_path, monkeypatch, capsys):
    import yaml

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    generator = str(tiny_models / "generator")
    recipe.write_text(yaml.safe_dump({"seed": {"path": str(SAMPLE)}, "model": {"name_or_path": generator}}))
    assert main(["check", "--config", str(recipe)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("recipe checked:\n")
    assert f"generator: {generator}" in printed and "'No', 'Yes'] are single tokens" in printed
    assert f"seed: {SAMPLE} (spc-csv)" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # no run directory, no manifest

    # What a queued job would fail on, at once: a seed that is not there, a judge that cannot answer, a typo.
    bad_seed = ["--seed.path", "data/missing.csv"]
    assert main(["check", "--config", str(recipe), *bad_seed]) == 2
    assert "seed.path: data/missing.csv is not an existing file" in capsys.readouterr().err
    assert main(["check", "--config", str(recipe), "--judge.name_or_path", str(tiny_models / "nope")]) == 2
    assert "The judge model was not found" in capsys.readouterr().err
    assert main(["check", "--config", str(recipe), "--critic.experts", "[faithfulness, toxicty]"]) == 2
    assert "toxicty" in capsys.readouterr().err
    no_seed = tmp_path / "no-seed.yaml"
    no_seed.write_text(yaml.safe_dump({"model": {"name_or_path": generator}}))
    assert main(["check", "--config", str(no_seed)]) == 2
    assert "set `seed.path`" in capsys.readouterr().err


def test_every_command_takes_the_run_dir_in_both_spellings(tmp_path, capsys):
    """TRL's parser takes `--run_dir` and `--run-dir`; so does every command that reads a run, in the same form."""
    from spc_train.cli import STAGES, make_parser

    run = tmp_path / "run"
    _finished(run / "iter-00" / "selected", [_conversation(0, i) for i in range(2)])
    assert main(["export", "--run-dir", str(run), "--output", str(tmp_path / "x.jsonl")]) == 0
    assert "wrote 2 selected rows" in capsys.readouterr().out
    parser = make_parser()
    for command in [*STAGES, "loop", "status", "push", "export", "reproduce"]:
        args, _ = parser.parse_known_args(
            [command, "--run-dir", "R", "--config", "c", "--repo_id", "o/n", "--output", "x", "--iteration", "0"]
        )
        assert args.run_dir == "R", command


def test_version_and_recipe_help(capsys):
    import pytest

    from spc_train import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"spc-train {__version__}"
    assert main(["recipe-help"]) == 0
    listed = capsys.readouterr().out
    assert "--critic.faithfulness_threshold  (default" in listed and "--loop.report_to" in listed
    assert "training: TRL's SFTConfig" in listed and "--training.learning_rate" not in listed
    assert main(["recipe-help", "training"]) == 0
    assert "--training.learning_rate  (default 2e-05)" in capsys.readouterr().out
