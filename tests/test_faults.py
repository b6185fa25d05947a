"""Faults as users and machines cause them: a second writer, damaged stage files, stale results, bad values,
Ctrl-C, a read-only run directory and a full disk. Each ends in one line and loses nothing (docs/reliability.md)."""

import json
import subprocess
import sys
import time

import pytest
from test_loop import assert_same_rows, copy_run, load

from spc_train.cli import main
from spc_train.runs import StageInputError, read_stage

pytestmark = pytest.mark.slow

UP_TO_CRITIQUES = ["seed", "pairs", "eval", "iter-00/candidates", "iter-00/critiques"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "interrupted"))]
    assert len(lines) == 1, err
    return lines[0]


def test_a_second_writer_is_refused_and_the_first_finishes_intact(demo_run, tmp_path, capsys):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "eval"])
    first = subprocess.Popen(
        [sys.executable, "-m", "spc_train.cli", "generate", "--config", str(recipe), "--run_dir", str(copy)]
        + ["--iteration", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = copy / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and "PID" in lock.read_text()) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    # Another recipe (B) on the same run directory: refused before it touches anything.
    second = ["generate", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    assert main([*second, "--generation.temperature", "1.3"]) == 2
    assert f"PID {first.pid}" in one_line_error(capsys)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert load(copy / "iter-00" / "candidates") == load(run / "iter-00" / "candidates")
    assert main(["status", "--run_dir", str(copy)]) == 0  # readers need no lock, and the lock is free again
    assert main(second) == 0


def test_a_truncated_arrow_file_is_named_and_its_stage_runs_again(demo_run, tmp_path, caplog):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", [*UP_TO_CRITIQUES, "iter-00/selected"])
    arrow = next((copy / "iter-00" / "selected").glob("data-*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    assert main(["select", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]) == 0
    assert f"{arrow} is 100 bytes" in caplog.text
    assert_same_rows(load(copy / "iter-00" / "selected"), load(run / "iter-00" / "selected"))


def test_a_deleted_arrow_file_is_named_and_its_stage_runs_again(demo_run, tmp_path, caplog):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", UP_TO_CRITIQUES)
    arrow = next((copy / "iter-00" / "critiques").glob("data-*.arrow"))
    arrow.unlink()
    assert main(["critique", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]) == 0
    assert f"{arrow} is missing" in caplog.text
    assert_same_rows(load(copy / "iter-00" / "critiques"), load(run / "iter-00" / "critiques"))


def test_a_truncated_shard_is_named_and_generated_again(demo_run, tmp_path, caplog):
    from test_loop import run_killed

    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "eval"])
    command = ["generate", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    assert run_killed(tmp_path, ["spc_train.generation.candidates", "-", "write_shard", "1"], command) == -9
    (shard,) = (copy / "iter-00" / ".candidates.shards").glob("shard-*.jsonl")
    shard.write_text(shard.read_text()[:-40])  # a cut-off last line
    assert main(command) == 0
    assert f"Shard {shard} is unreadable" in caplog.text
    assert load(copy / "iter-00" / "candidates") == load(run / "iter-00" / "candidates")


def test_stale_results_are_shown_left_out_and_refused(demo_run, tmp_path, capsys):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "eval", "report", "iter-00", "iter-01", "recipe.yaml"])
    select = ["select", "--run_dir", str(copy), "--iteration", "0", "--critic.faithfulness_threshold", "0.995"]
    assert main(select) == 0
    capsys.readouterr()
    assert main(["status", "--run_dir", str(copy)]) == 0
    states = dict(line.split() for line in capsys.readouterr().out.splitlines()[:-1])
    assert states["iter-00/critiques"] == states["iter-00/selected"] == "done"
    assert states["iter-00/adapter"] == states["iter-00/eval"] == states["iter-01/candidates"] == "stale"

    # The next iteration's generator would load the stale adapter: refused, naming what to re-run.
    assert main(["generate", "--run_dir", str(copy), "--iteration", "1"]) == 2
    error = one_line_error(capsys)
    assert "iter-00/adapter is stale" in error and "spc-train train --iteration 0" in error

    assert main(["export", "--run_dir", str(copy), "--output", str(tmp_path / "x.jsonl"), "--iteration", "all"]) == 0
    out = capsys.readouterr().out
    assert "rows of iter-00 to" in out and "left out iter-01/selected: stale" in out
    assert main(["report", "--run_dir", str(copy)]) == 0
    report = (copy / "report" / "report.md").read_text()
    assert "Left out: iter-00/eval (stale" in report and "| iter-01" not in report


def test_fewer_iterations_leave_the_old_ones_out(demo_run, tmp_path, capsys):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "eval", "report", "iter-00", "iter-01", "recipe.yaml"])
    assert main(["loop", "--config", str(recipe), "--run_dir", str(copy), "--loop.iterations", "1"]) == 0
    out = capsys.readouterr().out
    assert "iter-00" in out and "iter-01" not in out.split("report:")[0]
    assert "Left out: iter-01/eval (not an iteration of the recipe now)" in (copy / "report" / "report.md").read_text()


def test_an_empty_selection_stops_the_loop_in_one_line(demo_run, tmp_path, capsys, caplog):
    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", UP_TO_CRITIQUES)
    command = ["loop", "--config", str(recipe), "--run_dir", str(copy), "--critic.faithfulness_threshold", "0"]
    assert main(command) == 2
    error = one_line_error(capsys)
    assert "Iteration 0 selected no conversation" in error and "`faithfulness` rejected 100%" in error
    assert "selected no conversation" in caplog.text  # the WARNING at the select stage
    assert not (copy / "iter-00" / "adapter").exists()


@pytest.mark.parametrize(
    "override",
    [
        ["--generation.temperature", "0"],
        ["--generation.top_k", "0"],
        ["--generation.num_candidates", "-1"],
        ["--critic.faithfulness_threshold", "-0.5"],
        ["--generation.top_p", "1.5"],
        ["--loop.iterations", "0"],
        ["--loop.replay_max_tokens", "100000"],  # above generation.max_new_tokens: a value of the recipe's own
    ],
)
def test_check_names_a_bad_value_in_one_line(tiny_models, tmp_path, capsys, override):
    from conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_models)
    assert main(["check", "--config", str(recipe), *override]) == 2
    assert override[0][2:] in one_line_error(capsys)


def test_a_yaml_error_and_a_header_only_seed_are_one_line(tiny_models, tmp_path, capsys):
    from conftest import write_recipe

    broken = tmp_path / "broken.yaml"
    broken.write_text("loop:\n  iterations: 2\n seed: [\n")
    assert main(["check", "--config", str(broken)]) == 2
    assert "line" in one_line_error(capsys)

    header = tmp_path / "header.csv"
    header.write_text("user 1 personas,user 2 personas,Best Generated Conversation\n")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_models, seed={"path": str(header)})
    assert main(["loop", "--config", str(recipe), "--run_dir", str(tmp_path / "run")]) == 2
    assert "no usable" in one_line_error(capsys)
    assert read_stage(tmp_path / "run" / "seed") is None

    from conftest import SAMPLE

    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes(SAMPLE.read_text().encode("utf-16"))  # with its byte-order mark
    recipe = write_recipe(tmp_path / "r16.yaml", tiny_models, seed={"path": str(utf16), "max_conversations": 60})
    assert main(["seed", "--config", str(recipe), "--run_dir", str(tmp_path / "run16")]) == 0
    assert read_stage(tmp_path / "run16" / "seed")["rows"] == 60


def test_ctrl_c_is_one_line_and_the_same_command_resumes(demo_run, tmp_path, capsys, monkeypatch):
    from spc_train.generation import candidates

    recipe, run = demo_run
    copy = copy_run(run, tmp_path / "run", ["seed", "pairs", "eval"])
    command = ["generate", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    real_write, calls = candidates.write_shard, []

    def interrupted_on_second_shard(path, rows):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, rows)

    monkeypatch.setattr(candidates, "write_shard", interrupted_on_second_shard)
    assert main(command) == 130
    assert one_line_error(capsys) == "interrupted; re-run the same command to resume."
    monkeypatch.setattr(candidates, "write_shard", real_write)
    assert main(command) == 0
    assert read_stage(copy / "iter-00" / "candidates")["shards_generated"] == 1
    assert load(copy / "iter-00" / "candidates") == load(run / "iter-00" / "candidates")
    assert not list(copy.glob("**/.*.tmp-*"))  # nothing left behind


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (a disk that fills up, and can be made read-only); skipped where mounts are not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_resumes_once_space_returns(demo_run, small_disk, capsys):
    recipe, run = demo_run
    copy = copy_run(run, small_disk / "run", UP_TO_CRITIQUES)
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as handle:  # fill the disk to the last block
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    command = ["select", "--config", str(recipe), "--run_dir", str(copy), "--iteration", "0"]
    assert main(command) == 1
    assert "no space left" in one_line_error(capsys)
    filler.unlink()
    assert main(command) == 0
    assert_same_rows(load(copy / "iter-00" / "selected"), load(run / "iter-00" / "selected"))
    assert not [p.name for p in (copy / "iter-00").iterdir() if ".tmp-" in p.name]


def test_a_read_only_run_directory_still_reports_exports_and_shows_status(demo_run, small_disk, tmp_path, capsys):
    recipe, run = demo_run
    copy_run(run, small_disk / "run", ["seed", "pairs", "eval", "iter-00", "recipe.yaml"])
    copy = small_disk / "run"
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["report", "--run_dir", str(copy)]) == 0
    assert "| iter-00" in capsys.readouterr().out  # printed, not saved
    assert main(["export", "--run_dir", str(copy), "--output", str(tmp_path / "x.csv")]) == 0
    assert main(["status", "--run_dir", str(copy)]) == 0
    assert main(["select", "--run_dir", str(copy), "--iteration", "0", "--critic.faithfulness_threshold", "0.5"]) == 1
    assert "cannot write" in one_line_error(capsys)


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["status", "--run_dir", str(tmp_path / "no-run")]) == 2
    one_line_error(capsys)
    with pytest.raises(StageInputError):
        main(["status", "--run_dir", str(tmp_path / "no-run"), "--debug"])


@pytest.mark.parametrize(
    "override, named",
    [
        (["--training.bf16", "true"], "training.bf16"),
        (["--model.dtype", "bfloat16"], "model.dtype"),
    ],
)
def test_check_refuses_what_this_machine_cannot_run(tiny_models, tmp_path, capsys, override, named):
    import torch
    from conftest import write_recipe

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: bf16 is fine here")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_models)
    assert main(["check", "--config", str(recipe), *override]) == 2
    assert named in one_line_error(capsys)
    assert main(["loop", "--config", str(recipe), "--run_dir", str(tmp_path / "run"), *override]) == 2
    assert named in one_line_error(capsys)
    assert not (tmp_path / "run" / "seed").exists()  # before any work


def test_check_refuses_a_generator_without_a_chat_template(tiny_models, tmp_path, capsys):
    import shutil

    from conftest import write_recipe

    generator = shutil.copytree(tiny_models / "generator", tmp_path / "generator")
    (generator / "chat_template.jinja").unlink()
    config = json.loads((generator / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (generator / "tokenizer_config.json").write_text(json.dumps(config))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_models, model={"name_or_path": str(generator)})
    assert main(["check", "--config", str(recipe)]) == 2
    assert "has no chat template" in one_line_error(capsys)
