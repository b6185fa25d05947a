"""A run's report and console summary, gathered from the run directory's stage outputs.

The seed conversations of the run's pairs are the first column, so every iteration is read against the human-seeded
data the way the paper compares SPC with Persona-Chat.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..health.card import at_chance, read_card
from ..runs import RunDir, load_rows, read_stage
from .header import run_header, shown_path
from .metrics import dataset_statistics
from .paper import PAPER_REFERENCES
from .report import write_report

SUMMARY_COLUMNS = [
    ("candidates", "candidates", "{:.0f}"),
    ("parse_rate", "parse rate", "{:.0%}"),
    ("stopped_rate", "stopped", "{:.0%}"),
    ("complete_rate", "parsed and stopped", "{:.0%}"),
    ("pass_rate", "pass rate", "{:.0%}"),
    ("selected", "selected", "{:.0f}"),
    ("faithfulness_mean", "P(contradiction)", "{:.3f}"),
    ("toxicity_mean", "P(toxic)", "{:.3f}"),
    ("sft_loss", "SFT loss", "{:.3f}"),
    ("detection_lose", "AI-detected", "{:.0%}"),
    ("extraction_precision", "extraction P", "{:.2f}"),
]


def iteration_rows(run: RunDir) -> dict[int, dict]:
    """Per finished iteration: its evaluation metrics plus the selection's counts."""
    rows = {}
    for k in sorted(set(run.finished("eval")) & set(run.finished("selected"))):
        evaluation = read_stage(run.stage_dir("eval", k))
        selection = read_stage(run.stage_dir("selected", k))
        if evaluation and selection:
            filters = {f"pass:{name}": rate for name, rate in selection["filter_pass_rates"].items()}
            rows[k] = {**evaluation["metrics"], "selected": selection["selected"], **filters}
    return rows


NO_CARD = (
    "Not measured: this run has no judge card (`{path}`), so nothing here says whether its judges can judge. "
    "Run `spc-train check --probe` with this recipe to measure one (docs/judge_health.md)."
)


def judge_card(run: RunDir) -> dict | None:
    """The run's judge card, written by its `probes` stage (`RUN/probes/card.json`), or None."""
    return read_card(run.stage_dir("probes"))


def _clean(value):
    return None if isinstance(value, float) and math.isnan(value) else value


def _relative(text: str, run: RunDir) -> str:
    """A message with the run directory's paths written relative to it (`verify_stage` names whole paths)."""
    for root in (str(run.root.resolve()), str(run.root)):  # the whole path first: the given one may be its tail
        text = text.replace(root.rstrip("/") + "/", "")
    return text


def write_run_report(run: RunDir, out: Path, thresholds: dict[str, float]) -> dict:
    """report.md, metrics.json and plots for every finished iteration, with the seed conversations first.

    The report names files relative to the run directory, so it reads the same wherever the run is copied to;
    `thresholds` (the critic's filter thresholds) are drawn on the score distributions and named in notes.
    """
    rows = iteration_rows(run)
    pair_ids = {pair["pair_id"] for pair in load_rows(run.stage_dir("pairs"))}
    seed = [record for record in load_rows(run.stage_dir("seed")) if record["pair_id"] in pair_ids]
    columns = ["seed"] + [f"iter-{k:02d}" for k in rows]
    seed_evaluation = read_stage(run.stage_dir("eval"))  # `evaluate-seed`; older runs: statistics only
    seed_metrics = seed_evaluation["metrics"] if seed_evaluation else dataset_statistics(seed)
    per_column = {"seed": seed_metrics} | {f"iter-{k:02d}": row for k, row in rows.items()}
    # Per-filter pass rates have their own table and plot in the report.
    names = [
        n for n in dict.fromkeys(n for values in per_column.values() for n in values) if not n.startswith("pass:")
    ]
    metrics = {name: {column: _clean(values.get(name)) for column, values in per_column.items()} for name in names}

    distributions, pass_rates, examples = {}, {}, {"seed": seed[:2]}
    notes = [f"User pairs: {len(pair_ids)}."]
    for k in rows:
        column = f"iter-{k:02d}"
        critiques = load_rows(run.stage_dir("critiques", k))
        experts = sorted({name for row in critiques for name in row["scores"]})
        distributions[column] = {
            name: [row["scores"][name] for row in critiques if _clean(row["scores"].get(name)) is not None]
            for name in experts
        }
        selection = read_stage(run.stage_dir("selected", k))
        pass_rates[column] = {"parsed": selection["parse_rate"], "all filters": selection["pass_rate"]}
        pass_rates[column] |= selection["filter_pass_rates"]
        examples[column] = load_rows(run.stage_dir("selected", k))[:2]
        missing = len(selection["pairs_without_survivor"])
        if missing:
            notes.append(f"{column}: {missing} pairs had no candidate passing the filters ({thresholds}).")
        adapter = read_stage(run.stage_dir("adapter", k)) if k in run.finished("adapter") else None
        if adapter:
            where = shown_path(run.stage_dir("adapter", k), run.root)
            notes.append(f"{column}: LoRA adapter `{where}`, train loss {adapter['train_loss']:.3f}.")
    notes += [f"Left out: {label} ({_relative(why, run)})." for label, why in run.left_out.items()]
    card = judge_card(run)
    path = write_report(
        out,
        title=f"spc_train report: {run.root.name}",
        columns=columns,
        metrics=metrics,
        score_distributions=distributions,
        pass_rates=pass_rates,
        examples=examples,
        notes=notes,
        paper=PAPER_REFERENCES,
        persona_sets=(read_stage(run.stage_dir("personas")) or {}).get("statistics"),
        judge_card=card,
        judge_card_missing=NO_CARD.format(path="probes/card.json"),
        header=run_header(run, columns, metrics, card),
        thresholds=thresholds,
    )
    return {"report": str(run.root / "report" / path.name), "iterations": list(rows)}


def format_summary(run: RunDir) -> str:
    """The table printed at the end of `spc-train loop`, and where to find what the run made."""
    rows = iteration_rows(run)
    filters = list(dict.fromkeys(key for row in rows.values() for key in row if key.startswith("pass:")))
    at = [key for key, _, _ in SUMMARY_COLUMNS].index("pass_rate") + 1
    columns = SUMMARY_COLUMNS[:at] + [(key, key, "{:.0%}") for key in filters] + SUMMARY_COLUMNS[at:]
    card = judge_card(run)
    blind = {key for key, _, _ in columns if at_chance(card, key)}
    header = ["iteration"] + [label + ("*" if key in blind else "") for key, label, _ in columns]
    table = [header]
    for k, row in rows.items():
        cells = [f"iter-{k:02d}"]
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append(
                "-" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
            )
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in table]
    lines.append("")
    if blind:
        lines.append(
            f"* judge at chance on its known-answer probe: read as noise (judge card: {run.stage_dir('probes')})"
        )
    for k in rows:
        lines.append(f"iter-{k:02d}: selected {run.stage_dir('selected', k)}")
        if read_stage(run.stage_dir("adapter", k)):
            lines.append(f"         adapter  {run.stage_dir('adapter', k)}")
    lines.append(f"report: {run.root / 'report' / 'report.md'}")
    lines.append(f"manifest: {run.root / 'manifest.json'}")
    return "\n".join(lines)
