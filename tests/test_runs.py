"""Run directory: fingerprints, atomic stage folders, manifest, one writer, verified outputs, resumable shards."""

import json
import os
import subprocess
import sys

import pytest

from spc_train.models import folder_hash
from spc_train.runs import (
    RunDir,
    RunLockedError,
    StageInputError,
    fingerprint,
    pending_shards,
    read_shards,
    read_stage,
    shard_path,
    verify_stage,
    write_shard,
)

DEAD_PID = 999_999_999  # above any pid_max: no such process


def test_fingerprint_depends_on_everything_that_shapes_the_output():
    base = fingerprint("generate", {"top_k": 40, "t": 0.7}, ["a"], {"gen": "x"}, 1)
    assert base == fingerprint("generate", {"t": 0.7, "top_k": 40}, ["a"], {"gen": "x"}, 1)  # key order is irrelevant
    changed = [
        fingerprint("critique", {"top_k": 40, "t": 0.7}, ["a"], {"gen": "x"}, 1),
        fingerprint("generate", {"top_k": 41, "t": 0.7}, ["a"], {"gen": "x"}, 1),
        fingerprint("generate", {"top_k": 40, "t": 0.7}, ["b"], {"gen": "x"}, 1),
        fingerprint("generate", {"top_k": 40, "t": 0.7}, ["a"], {"gen": "y"}, 1),
        fingerprint("generate", {"top_k": 40, "t": 0.7}, ["a"], {"gen": "x"}, 2),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_commit_writes_stage_record_and_replaces_atomically(tmp_path):
    run = RunDir(tmp_path)
    folder = run.stage_dir("candidates", 0)
    assert folder == tmp_path / "iter-00" / "candidates"
    record = run.commit(folder, "fp1", lambda out: (out / "data.txt").write_text("v1") and {"rows": 1})
    assert record["fingerprint"] == "fp1" and record["rows"] == 1
    assert run.is_done(folder, "fp1") and not run.is_done(folder, "fp2")
    assert (folder / "data.txt").read_text() == "v1"

    def crash(out):
        (out / "data.txt").write_text("half")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        run.commit(folder, "fp2", crash)
    # The finished folder is untouched, and nothing half-written looks done.
    assert (folder / "data.txt").read_text() == "v1" and read_stage(folder)["fingerprint"] == "fp1"
    run.commit(folder, "fp2", lambda out: (out / "data.txt").write_text("v2") and None)
    assert (folder / "data.txt").read_text() == "v2" and run.is_done(folder, "fp2")
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["candidates"]


def test_unfinished_folder_is_not_done(tmp_path):
    run = RunDir(tmp_path)
    folder = run.stage_dir("pairs")
    folder.mkdir()
    (folder / "data.txt").write_text("no stage.json")
    assert not run.is_done(folder, "anything") and read_stage(folder) is None


def test_manifest_records_stages_and_merges(tmp_path):
    run = RunDir(tmp_path)
    run.update_manifest(seed=3, models={"generator": {"sha256": "abc"}})
    run.commit(run.stage_dir("seed"), "f-seed", lambda out: None)
    run.commit(run.stage_dir("selected", 1), "f-sel", lambda out: None)
    run.update_manifest(models={"judge": {"sha256": "def"}})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert manifest["models"] == {"generator": {"sha256": "abc"}, "judge": {"sha256": "def"}}
    assert manifest["stages"] == {"seed": "f-seed", "iter-01/selected": "f-sel"}
    assert run.iterations() == [1]


def write_two_files(out):
    (out / "data.txt").write_text("hello")
    (out / "sub").mkdir()
    (out / "sub" / "more.txt").write_text("more")
    return {"rows": 2}


def rewrite(path, text):
    """Same size, new content, and a time of its own (hashes are cached by size and time)."""
    path.write_text(text)
    os.utime(path, ns=(1, 1))


def test_commit_lists_its_files_and_a_damaged_file_makes_the_stage_run_again(tmp_path, caplog):
    run = RunDir(tmp_path)
    folder = run.stage_dir("candidates", 0)
    record = run.commit(folder, "fp", write_two_files)
    assert set(record["files"]) == {"data.txt", "sub/more.txt"}  # not stage.json
    assert record["files"]["data.txt"]["size"] == 5 and len(record["files"]["data.txt"]["sha256"]) == 64
    assert read_stage(folder)["files"] == record["files"]
    # A file nobody listed (a `datasets` cache written by a later `filter`) changes nothing.
    (folder / "cache-00000.arrow").write_bytes(b"cache")
    assert run.is_done(folder, "fp") and verify_stage(folder) is None and run.finished("candidates") == [0]
    assert folder_hash(folder, record["files"]) == record["output_hash"] != folder_hash(folder)

    damages = [
        (lambda: (folder / "data.txt").write_text("hel"), "data.txt is 3 bytes, 5 recorded"),
        (lambda: rewrite(folder / "data.txt", "HELLO"), "data.txt has changed since it was written"),
        (lambda: (folder / "sub" / "more.txt").unlink(), "sub/more.txt is missing"),
    ]
    for damage, problem in damages:
        run.commit(folder, "fp", write_two_files)
        damage()
        caplog.clear()
        with caplog.at_level("WARNING", logger="spc_train.runs"):
            assert not run.is_done(folder, "fp")
        assert verify_stage(folder).startswith(f"{folder}/{problem}")
        [message] = [r.getMessage() for r in caplog.records]
        assert message.startswith(f"{folder}/{problem}") and message.endswith(": the stage re-runs.")
        assert run.finished("candidates") == []


def test_a_stage_record_without_a_file_list_is_trusted_as_before(tmp_path):
    run = RunDir(tmp_path)
    folder = run.stage_dir("selected", 0)
    run.commit(folder, "fp", write_two_files)
    record = read_stage(folder)
    del record["files"]
    (folder / "stage.json").write_text(json.dumps(record))
    (folder / "data.txt").write_text("changed")
    assert run.is_done(folder, "fp") and verify_stage(folder) is None and run.finished("selected") == [0]
    assert "is not finished" in verify_stage(run.stage_dir("selected", 1))


HOLD_LOCK = """
import sys
from pathlib import Path
from spc_train.runs import RunDir

run = RunDir(sys.argv[1])
with run.lock():
    (run.root / "mine.txt").write_text("written by the holder")
    (run.root / ".stage.tmp-999999999").mkdir()  # a temporary as the holder leaves it: not the refused one's to clear
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_writer_is_refused_with_the_holders_pid_until_the_holder_exits(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run.root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(RunLockedError, match=f"is being written by PID {holder.pid} on .*: wait for it") as error:
            with run.lock():
                pytest.fail("the lock was taken twice")
        assert isinstance(error.value, StageInputError)  # the CLI prints it as a one-line error
        assert (run.root / "mine.txt").read_text() == "written by the holder"
        assert (run.root / ".stage.tmp-999999999").is_dir()
        assert f"PID {holder.pid} " in (run.root / ".lock").read_text()
        with run.lock(main_process=False):  # another process of the holder's own `accelerate launch` job
            pass
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with run.lock():  # released when its holder exits; the holder's temporary is stale now, and cleared
        assert not (run.root / ".stage.tmp-999999999").exists() and (run.root / "mine.txt").exists()
        assert (run.root / ".lock").read_text().startswith(f"PID {os.getpid()} ")
    with run.lock():  # released on exit from the block too
        pass


def test_stale_temporaries_are_removed_but_resume_state_and_live_temporaries_stay(tmp_path):
    run = RunDir(tmp_path)
    iteration = tmp_path / "iter-00"
    stale = [
        tmp_path / f".manifest.json.tmp-{DEAD_PID}",
        iteration / f".candidates.tmp-{DEAD_PID}",
        iteration / f".adapter.old-{DEAD_PID}",
        iteration / ".candidates.shards" / f".shard-00000.jsonl.tmp-{DEAD_PID}",
        tmp_path / "seed" / f".stage.json.tmp-{DEAD_PID}",
    ]
    kept = [
        iteration / ".candidates.shards" / "shard-00001.jsonl",
        iteration / ".critiques.shards" / "FINGERPRINT",
        iteration / ".adapter.checkpoints" / "checkpoint-2" / "adapter_model.safetensors",
        iteration / f".critiques.tmp-{os.getpid()}" / "data.arrow",  # this process is alive: still being written
        tmp_path / "seed" / "data-00000-of-00001.arrow",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.name.startswith((".candidates.tmp", ".adapter.old")):
            path.mkdir()
            (path / "data.arrow").write_text("half")
        else:
            path.write_text("x")
    assert sorted(run.remove_stale_temporaries()) == sorted(stale)
    assert not any(path.exists() for path in stale) and all(path.exists() for path in kept)


def test_an_unreadable_shard_is_deleted_and_written_again(tmp_path, caplog):
    shards = tmp_path / ".candidates.shards"
    shards.mkdir()
    for index in range(3):
        write_shard(shard_path(shards, index), [{"pair_id": f"p{index}", "text": "héllo"}, {"pair_id": "q"}])
    assert pending_shards(shards, 3) == [] and len(read_shards(shards, 3)) == 6
    truncated = shard_path(shards, 1)
    truncated.write_bytes(truncated.read_bytes()[:-8])  # a cut-off last line
    with caplog.at_level("WARNING", logger="spc_train.runs"):
        assert pending_shards(shards, 3) == [1]
    assert f"Shard {truncated} is unreadable" in caplog.text and not truncated.exists()
    write_shard(truncated, [{"pair_id": "p1"}])
    assert pending_shards(shards, 3) == []
    broken = shard_path(shards, 2)
    broken.write_bytes(broken.read_bytes().replace("é".encode(), b"\xc3"))  # not UTF-8
    assert read_shards(shards, 3) is None and not broken.exists()
    assert pending_shards(shards, 3) == [2]
