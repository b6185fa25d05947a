"""Run directory: fingerprints, atomic stage folders, manifest."""

import json

import pytest

from spc_train.runs import RunDir, fingerprint, read_stage


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
