"""The run report as something to share: its header, its paths, and what its plots show (axes, ranges, thresholds).

A small run directory is written by hand (stage records and `datasets` folders, no model), so these tests take
seconds; the figures are read as matplotlib objects, not pixels.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from spc_train.evaluation import plots, report
from spc_train.evaluation.header import change_lines, shown_path
from spc_train.evaluation.plots import (
    AT_CHANCE,
    metrics_figure,
    pass_rates_figure,
    score_distributions_figure,
)
from spc_train.evaluation.summary import write_run_report
from spc_train.runs import RunDir, save_rows, write_json_atomic

COLUMNS = ["seed", "iter-00", "iter-01"]
THRESHOLDS = {"faithfulness": 0.55, "toxicity": 0.5}
GENERATOR_SHA = "15a8ba99f7d6ca2dcdae"
TOXICITY_SHA = "79d52e55bf3fdfa1daa3"
PACKAGES = {
    "spc_train": "0.1.0",
    "torch": "2.13.0+cpu",
    "transformers": "5.24.0",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "datasets": "5.2.0",
    "python": "3.11.7",
}
# A card whose faithfulness judge is at chance: its numbers are marked wherever they are shown.
CARD = {
    "thresholds": {"informative": 0.7, "weak": 0.6, "min_option_mass": 0.5},
    "entries": [
        {"name": "faithfulness", "kind": "expert", "verdict": "at chance", "metrics": ["faithfulness_"],
         "figures": {"AUC": 0.5}, "probe": "p"},
        {"name": "toxicity", "kind": "expert", "verdict": "informative", "metrics": ["toxicity_"],
         "figures": {"AUC": 0.8}, "probe": "p"},
    ],
}  # fmt: skip


def _conversation(pair_id, candidate=None, scores=None):
    record = {
        "pair_id": pair_id,
        "user1_persona": ["I like dogs."],
        "user2_persona": ["I play guitar."],
        "turns": [{"speaker": 1, "text": "I walk my dogs."}, {"speaker": 2, "text": "I play guitar."}],
    }
    if candidate is not None:
        record |= {"candidate": candidate, "scores": scores, "parsed": True, "passed": True, "selected": True}
    return record


def _stage(folder: Path, rows=None, **record):
    folder.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        save_rows(rows, folder)
    write_json_atomic(folder / "stage.json", {"stage": folder.name, **record})


def _iteration_metrics(k):
    return {
        "candidates": 8,
        "parse_rate": 0.75 + 0.125 * k,
        "pass_rate": 0.5 + 0.25 * k,
        "selected": 2,
        "sft_loss": 1.4 - 0.1 * k,
        "faithfulness_mean": 0.5012 - 0.0003 * k,  # a tiny change: must not look like a cliff
        "depth_selected_win_rate": 0.501,
        "distinct_2": 0.3 + 0.1 * k,
        "conversations": 2,
    }


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A finished two-iteration run: manifest, recipe, seed, pairs, evaluations, selections, critiques, adapters."""
    root = tmp_path_factory.mktemp("report") / "run"
    pairs = ["p0", "p1"]
    (root / "recipe.yaml").parent.mkdir(parents=True)
    recipe = {"personas": {"embedder": "sentence-transformers/all-MiniLM-L6-v2"}, "critic": {"embedder": None}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    generator = {"model": {"path": str(root.parent / "models" / "generator"), "sha256": GENERATOR_SHA},
                 "adapter": None, "dtype": "float32", "load_in_4bit": False}  # fmt: skip
    manifest = {
        "models": {
            "generator": generator,
            "judge": generator,
            "toxicity": {"id": "org/toxic-bert", "revision": None, "commit": "a" * 40},
            "nli": None,
        },
        "packages": PACKAGES,
        "recipe": str(root.parent / "recipes" / "loop.yaml"),  # a machine path: the report shows its name only
        "seed": 42,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    _stage(root / "seed", [_conversation(p) for p in pairs])
    _stage(root / "pairs", [{"pair_id": p} for p in pairs])
    _stage(root / "eval", metrics={"distinct_2": 0.5, "conversations": 2}, finished_at="2026-11-29T10:00:00+0000")
    _stage(root / "probes")
    write_json_atomic(root / "probes" / "card.json", CARD)
    for k in (0, 1):
        iteration = root / f"iter-{k:02d}"
        scores = [{"faithfulness": 0.50 + 0.01 * c, "toxicity": 0.2 * c, "depth": 0.5} for c in range(4)]
        critiques = [_conversation(p, c, scores[c]) for p in pairs for c in range(4)]
        _stage(iteration / "critiques", critiques)
        _stage(iteration / "selected", critiques[:2], selected=2, parse_rate=0.75 + 0.125 * k,
               pass_rate=0.5 + 0.25 * k, filter_pass_rates={"faithfulness": 1.0, "toxicity": 0.75},
               pairs_without_survivor=[])  # fmt: skip
        _stage(iteration / "adapter", train_loss=1.4 - 0.1 * k)
        _stage(iteration / "eval", metrics=_iteration_metrics(k), finished_at=f"2026-11-30T1{k}:00:00+0000")
    return root


@pytest.fixture(scope="module")
def report_text(run_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("out")
    write_run_report(RunDir(run_root), out, THRESHOLDS)
    return (out / "report.md").read_text(encoding="utf-8")


# -- the header ----------------------------------------------------------------------------------------------------
def test_the_header_names_the_recipe_models_packages_and_date(run_root, report_text):
    header = report_text.split("## Judge card")[0]
    recipe_hash = hashlib.sha256((run_root / "recipe.yaml").read_bytes()).hexdigest()[:12]
    assert f"sha256 `{recipe_hash}`" in header and "`…/loop.yaml`" in header and "loop seed 42" in header
    assert f"generator: `…/generator` · sha256 `{GENERATOR_SHA[:12]}` · float32" in header
    assert "judge: the generator's base model (same identity)" in header
    assert f"toxicity: `org/toxic-bert` · commit `{'a' * 12}`" in header and "nli: not used" in header
    assert "embedder: `sentence-transformers/all-MiniLM-L6-v2` · named in the recipe, no revision" in header
    for name in ("spc_train", "transformers", "trl", "peft", "torch", "datasets"):
        assert f"{name} {PACKAGES[name]}" in header
    assert "**Date:** 2026-11-30" in header  # the last evaluation's day, not today's
    assert "Dashed lines: the filter thresholds (faithfulness 0.55, toxicity 0.5)" in report_text
    # The header, then the judge card right after it, then how to read the rest.
    assert report_text.index("## Run") < report_text.index("## Judge card") < report_text.index("## How to read")


def test_what_changed_is_computed_from_the_metrics(report_text):
    changed = report_text.split("**What changed**")[1].split("## Judge card")[0]
    assert "- Loop (iter-00 → iter-01): parse rate 75% → 88%; pass rate 50% → 75%; selected 2 → 2" in changed
    assert "SFT loss 1.400 → 1.300" in changed
    # The faithfulness judge is at chance on its probe: marked; distinct-2 runs from the seed.
    assert "- Persona (iter-00 → iter-01): P(contradiction) ⚠ 0.501 → 0.501." in changed
    assert "- Data (seed → iter-01): distinct-2 0.500 → 0.400." in changed
    assert "⚠ = its judge is at chance" in changed


def test_change_lines_leave_out_what_was_not_measured():
    metrics = {"parse_rate": {"iter-00": 0.5}, "distinct_2": {"seed": None, "iter-00": float("nan")}}
    assert change_lines(["seed", "iter-00"], metrics) == ["- Loop (iter-00): parse rate 50%."]
    assert change_lines(["seed"], {}) == []
    # Metrics of one line that span different columns each say which.
    metrics = {
        "faithfulness_mean": {"iter-00": 0.5, "iter-01": 0.4},
        "persona_embedding_coverage": {"seed": 0.4, "iter-00": 0.2, "iter-01": 0.1},
    }
    assert change_lines(COLUMNS, metrics) == [
        "- Persona: P(contradiction) 0.500 → 0.400 (iter-00 → iter-01); persona coverage 40% → 10% (seed → iter-01)."
    ]


# -- paths ---------------------------------------------------------------------------------------------------------
def test_the_report_names_no_machine_path(run_root, report_text, tmp_path, monkeypatch):
    assert str(run_root.parent) not in report_text and "/tmp" not in report_text
    assert "LoRA adapter `iter-00/adapter`" in report_text and "`probes/card.json`" not in report_text

    # Given as a relative path (`runs/demo`), with a damaged stage whose problem names a whole path.
    copy = tmp_path / "runs" / "demo"
    shutil.copytree(run_root, copy)
    record = json.loads((copy / "iter-01" / "eval" / "stage.json").read_text())
    record["files"] = {"gone.arrow": {"size": 1, "sha256": "0"}}
    (copy / "iter-01" / "eval" / "stage.json").write_text(json.dumps(record))
    (copy / "probes" / "card.json").unlink()
    monkeypatch.chdir(tmp_path)
    write_run_report(RunDir("runs/demo"), Path("runs/demo/report"), THRESHOLDS)
    text = (copy / "report" / "report.md").read_text(encoding="utf-8")
    assert "Left out: iter-01/eval (iter-01/eval/gone.arrow is missing)" in text
    assert "no judge card (`probes/card.json`)" in text
    assert "runs/demo" not in text and str(tmp_path) not in text


def test_shown_path():
    root = Path("/data/runs/demo")
    assert shown_path("/data/runs/demo/iter-00/adapter", root) == "iter-00/adapter"
    assert shown_path("tiny-models/generator", root) == "tiny-models/generator"
    assert shown_path("/home/someone/models/generator", root) == "…/generator"


# -- the plots -----------------------------------------------------------------------------------------------------
def _panels(figure):
    return {ax.get_title().split("\n")[0]: ax for ax in figure.axes if ax.get_visible()}


def _ticks(ax, axis="x"):
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [label.get_text() for label in labels]


def test_metric_panels_label_their_axes_and_keep_rates_on_zero_to_one():
    metrics = {
        "parse_rate": {"iter-00": 0.5012, "iter-01": 0.5009},
        "faithfulness_mean": {"iter-00": 0.5012, "iter-01": 0.5009},
        "distinct_2": {"seed": 0.5, "iter-00": 0.3, "iter-01": 0.2},
        "conversations": {"seed": 16, "iter-00": 21, "iter-01": 21},
        "sft_loss": {"iter-00": 1.4, "iter-01": 1.3},
        "some_score": {"iter-00": -2.0, "iter-01": 3.0},
    }
    panels = _panels(metrics_figure(COLUMNS, metrics, "t", blind={"faithfulness_mean"}))
    assert set(panels) == set(metrics)
    for name in ("parse_rate", "faithfulness_mean", "distinct_2"):
        assert panels[name].get_ylim() == (0.0, 1.0), name  # 0.5012 -> 0.5009 stays flat
    assert panels["parse_rate"].get_ylabel() == "rate"
    assert panels["faithfulness_mean"].get_ylabel() == "P(contradiction)"
    assert panels["conversations"].get_ylabel() == "count" and panels["conversations"].get_ylim()[0] == 0
    assert panels["sft_loss"].get_ylabel() == "loss" and panels["sft_loss"].get_ylim()[0] == 0
    # Negative values: not zero-based, and the axis says so.
    assert panels["some_score"].get_ylabel() == "value (axis not from 0)"
    # No empty slot: panels without a seed value have no seed tick.
    assert _ticks(panels["parse_rate"]) == ["iter-00", "iter-01"]
    assert _ticks(panels["distinct_2"]) == COLUMNS
    # Each point carries its value; a judge at chance is named on its panel.
    assert [t.get_text() for t in panels["parse_rate"].texts] == ["0.501", "0.501"]
    assert AT_CHANCE in panels["faithfulness_mean"].get_title()
    assert AT_CHANCE not in panels["parse_rate"].get_title()


def test_score_distributions_draw_the_filter_thresholds():
    scores = {
        "iter-00": {"faithfulness": [0.5, 0.51, 0.6], "toxicity": [0.0, 0.7], "depth": [0.49, 0.51]},
        "iter-01": {"faithfulness": [0.5, 0.52], "toxicity": [0.1], "depth": [0.5]},
    }
    figure = score_distributions_figure(COLUMNS, scores, THRESHOLDS, blind={"faithfulness"})
    panels = _panels(figure)
    assert set(panels) == {"depth", f"faithfulness {AT_CHANCE}", "toxicity"}
    faithfulness, toxicity, depth = panels[f"faithfulness {AT_CHANCE}"], panels["toxicity"], panels["depth"]
    for ax, cut in ((faithfulness, 0.55), (toxicity, 0.5)):
        lines = [line for line in ax.get_lines() if line.get_label().startswith("threshold")]
        assert len(lines) == 1 and list(lines[0].get_xdata()) == [cut, cut]
        assert lines[0].get_label() == f"threshold {cut:g}: fails at or above"
        assert any(text.get_text() == f"fails ≥ {cut:g}" for text in ax.texts)
    assert not [line for line in depth.get_lines() if line.get_label().startswith("threshold")]
    for ax in panels.values():
        assert ax.get_xlim() == (0.0, 1.0) and ax.get_xlabel() and ax.get_ylabel() == "iteration"
        assert "seed" not in _ticks(ax, "y")  # the seed has no candidates
    assert faithfulness.get_xlabel() == "P(contradiction)" and toxicity.get_xlabel() == "P(toxic)"


def test_pass_rates_are_on_zero_to_one_in_the_order_candidates_meet_them():
    rates = {"iter-00": {"all filters": 0.5, "toxicity": 0.9, "parsed": 0.8, "faithfulness": 1.0}}
    (ax,) = pass_rates_figure(COLUMNS, rates, blind={"faithfulness"}).axes
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel().startswith("pass rate")
    assert _ticks(ax) == ["parsed", "faithfulness ⚠", "toxicity", "all filters"]
    assert "⚠ = judge at chance" in ax.get_xlabel()


def test_every_figure_of_a_run_report_labels_its_axes(run_root, tmp_path, monkeypatch):
    """Every visible axis of every PNG the report writes has a y label; every rate panel sits on [0, 1]."""
    figures = {}

    def keep(figure, path):
        figures[Path(path).name] = figure
        return plots.save(figure, path)

    monkeypatch.setattr(report, "save", keep)
    write_run_report(RunDir(run_root), tmp_path, THRESHOLDS)
    assert {"metrics-critic.png", "metrics-statistics.png", "score_distributions.png", "pass_rates.png"} <= set(
        figures
    )
    for name, figure in figures.items():
        for ax in (ax for ax in figure.axes if ax.get_visible()):
            assert ax.get_ylabel(), (name, ax.get_title())
            metric = ax.get_title().split("\n")[0]
            if plots.axis_of(metric)[1] == plots.UNIT:
                assert ax.get_ylim() == (0.0, 1.0), (name, metric)
    critic = _panels(figures["metrics-critic.png"])
    assert all("seed" not in _ticks(ax) for ax in critic.values())
    assert AT_CHANCE in critic["faithfulness_mean"].get_title()
