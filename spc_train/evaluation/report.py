"""A self-contained evaluation report: markdown, JSON and PNG plots in one folder.

The report compares "columns" (the seed data and each loop iteration) side by side so a reader can see at a glance
whether the Generator-Critic loop improves the dataset. Everything written is deterministic for the same input
(no timestamps, fixed orders), so reports can be diffed between runs.

Plots use `matplotlib.figure.Figure` directly instead of pyplot: no global figure registry (nothing to close, no
leak across many iterations) and no backend switch imposed on the caller; PNGs are rendered with Agg.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

MISSING = "–"
DPI = 110
# `vert=False` is deprecated since matplotlib 3.10 in favour of `orientation`, which older versions lack.
_HORIZONTAL = {"orientation": "horizontal"} if matplotlib.__version_info__ >= (3, 10) else {"vert": False}

HOW_TO_READ = (
    "Each column is one dataset: `seed` is the reference data the loop starts from, `iter-NN` is the dataset "
    "selected after loop iteration NN (best candidate per user pair). The metrics table compares them; "
    f"{MISSING} means not measured. `distinct_1`/`distinct_2` are corpus-level shares of unique uni-/bigrams "
    "(higher = more diverse wording), `persona_word_overlap` is the share of persona attributes whose content words "
    "the speaker actually uses (a lexical proxy for persona coverage). Critic score distributions and pass rates are "
    "over all generated candidates of an iteration, before selection; a pass rate is the share of candidates that "
    "an expert or filter accepted."
)


def _is_measured(value: Any) -> bool:
    """None and NaN (also numpy's) both mean "not measured"."""
    return value is not None and not math.isnan(float(value))


def _as_float(value: Any) -> float:
    return float(value) if _is_measured(value) else float("nan")


def _format_number(value: Any, as_int: bool = False) -> str:
    if not _is_measured(value):
        return MISSING
    if as_int:
        return str(int(round(value)))
    value = float(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}"


def _is_count_row(values: list[Any]) -> bool:
    """Counts print as ints: a row is a count when every measured value is integral and one exceeds 1.

    The "exceeds 1" guard keeps rates that happen to be exactly 0.0 or 1.0 in decimal form.
    """
    measured = [value for value in values if _is_measured(value)]
    if not measured:
        return False
    if all(isinstance(value, int) and not isinstance(value, bool) for value in measured):
        return True
    return all(float(value).is_integer() for value in measured) and any(abs(value) > 1 for value in measured)


def _cell(text: Any) -> str:
    """Make text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(name) for name in header) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
    lines.extend("| " + " | ".join(_cell(value) for value in row) + " |" for row in rows)
    return lines


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _render_example(index: int, record: dict[str, Any]) -> list[str]:
    heading = f"#### Example {index} — pair `{record.get('pair_id', '?')}`"
    if record.get("candidate") is not None:
        heading += f" (candidate {record['candidate']})"
    lines = [heading, ""]
    for speaker in (1, 2):
        lines += [f"**User {speaker} persona**", ""]
        persona = record.get(f"user{speaker}_persona") or ["(none)"]
        lines += [f"- {_one_line(attribute)}" for attribute in persona] + [""]
    for turn in record.get("turns") or []:
        lines += [f"**User {turn.get('speaker', '?')}:** {_one_line(turn.get('text', ''))}", ""]
    scores = record.get("scores") or {}
    if scores:
        shown = " · ".join(f"{name} {_format_number(scores[name])}" for name in sorted(scores))
        lines += [f"*Scores:* {shown}", ""]
    return lines


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(max_cols, n)
    return math.ceil(n / ncols), ncols


def _column_colors(columns: list[str]) -> dict[str, Any]:
    """One fixed color per column (by position), shared by all plots so a column reads the same everywhere."""
    if len(columns) <= 10:
        palette = colormaps["tab10"].colors
    else:  # tab20 pairs dark/light shades: use all dark ones first so neighbouring columns stay distinct.
        palette = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]
    return {column: palette[i % len(palette)] for i, column in enumerate(columns)}


def _set_xticks(ax: Any, labels: list[str]) -> None:
    """Tick labels that stay legible: slanted when there are many or long ones."""
    longest = max((len(label) for label in labels), default=0)
    rotation = 45 if len(labels) > 6 else 30 if len(labels) > 4 or longest > 10 else 0
    ax.set_xticks(range(len(labels)), labels, rotation=rotation, ha="right" if rotation else "center")
    ax.tick_params(axis="x", labelsize="small" if len(labels) > 6 else "medium")


def _plot_metrics(path: Path, columns: list[str], metrics: dict[str, dict[str, Any]]) -> bool:
    names = [name for name, row in metrics.items() if any(_is_measured(row.get(column)) for column in columns)]
    if not names:
        return False
    nrows, ncols = _grid(len(names))
    fig = Figure(figsize=(max(5.0, 4.2 * ncols), 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    positions = list(range(len(columns)))
    for ax, name in zip(axes, names):
        ax.plot(positions, [_as_float(metrics[name].get(column)) for column in columns], marker="o")
        _set_xticks(ax, columns)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle("Dataset metrics (gaps = not measured)")
    fig.savefig(path, dpi=DPI)
    return True


def _plot_score_distributions(
    path: Path, columns: list[str], score_distributions: dict[str, dict[str, list[float]]]
) -> bool:
    def finite(column: str, expert: str) -> list[float]:
        return [float(v) for v in score_distributions.get(column, {}).get(expert) or [] if _is_measured(v)]

    experts = sorted({expert for column in columns for expert in score_distributions.get(column, {})})
    experts = [expert for expert in experts if any(finite(column, expert) for column in columns)]
    if not experts:
        return False
    colors = _column_colors(columns)
    shown_columns = [column for column in columns if any(finite(column, expert) for expert in experts)]
    nrows, ncols = _grid(len(experts))
    height = max(2.8, 0.8 + (0.45 * len(shown_columns) + 0.6) * nrows)
    fig = Figure(figsize=(max(6.5, 4.2 * ncols + 1.2), height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, expert in zip(axes, experts):
        present = [column for column in shown_columns if finite(column, expert)]
        # Top-to-bottom in column order: the first column is drawn at the top.
        positions = [len(shown_columns) - shown_columns.index(column) for column in present]
        boxes = ax.boxplot(
            [finite(column, expert) for column in present],
            positions=positions,
            widths=0.6,
            patch_artist=True,
            medianprops={"color": "black"},
            **_HORIZONTAL,
        )
        ax.set_yticks(positions, present)
        for box, column in zip(boxes["boxes"], present):
            box.set_facecolor(colors[column])
            box.set_alpha(0.75)
        ax.set_ylim(0.4, len(shown_columns) + 0.6)
        ax.set_title(expert)
        ax.set_xlabel("score")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(experts) :]:
        ax.set_visible(False)
    handles = [Patch(facecolor=colors[column], alpha=0.75, label=column) for column in shown_columns]
    fig.legend(handles=handles, loc="outside right upper", title="column")
    fig.suptitle("Critic score distributions over all candidates")
    fig.savefig(path, dpi=DPI)
    return True


def _plot_pass_rates(path: Path, columns: list[str], pass_rates: dict[str, dict[str, float]]) -> bool:
    shown_columns = [c for c in columns if any(_is_measured(v) for v in pass_rates.get(c, {}).values())]
    experts = sorted({expert for column in shown_columns for expert in pass_rates[column]})
    if not shown_columns:
        return False
    colors = _column_colors(columns)
    width = min(0.8 / len(shown_columns), 0.3)  # a lone bar would otherwise fill the whole slot
    width_in = min(14.0, max(5.0, 0.3 * len(experts) * len(shown_columns) + 2.5))
    fig = Figure(figsize=(width_in, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, column in enumerate(shown_columns):
        offsets = [x + width * (i - (len(shown_columns) - 1) / 2) for x in range(len(experts))]
        values = [_as_float(pass_rates[column].get(expert)) for expert in experts]
        ax.bar(offsets, values, width=width, color=colors[column], label=column)
    _set_xticks(ax, experts)
    ax.set_xlim(-0.6, len(experts) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass rate")
    ax.set_xlabel("expert / filter")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", title="column")
    ax.set_title("Share of candidates passing each expert")
    fig.savefig(path, dpi=DPI)
    return True


def _json_safe(value: Any) -> Any:
    """NaN is not valid JSON: write it (and None) as null."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):  # numpy ints too
        return int(value)
    number = float(value)
    return number if math.isfinite(number) else None


def write_report(
    report_dir: str | Path,
    *,
    title: str,
    columns: list[str],
    metrics: dict[str, dict[str, float | None]],
    score_distributions: dict[str, dict[str, list[float]]],
    pass_rates: dict[str, dict[str, float]],
    examples: dict[str, list[dict]],
    notes: list[str] | None = None,
) -> Path:
    """Write `report.md`, `metrics.json` and the PNG plots into `report_dir`; return the path of `report.md`.

    `columns` is the source of truth for what is shown and in which order: values keyed by other columns are
    ignored. Metric rows keep the given order; expert/filter names are sorted. A plot without data is neither written
    nor linked (a stale PNG of that name from an earlier run is removed).
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    columns = list(columns)

    plots = {
        "metrics.png": _plot_metrics(report_dir / "metrics.png", columns, metrics),
        "score_distributions.png": _plot_score_distributions(
            report_dir / "score_distributions.png", columns, score_distributions
        ),
        "pass_rates.png": _plot_pass_rates(report_dir / "pass_rates.png", columns, pass_rates),
    }
    for name, written in plots.items():
        if not written:
            (report_dir / name).unlink(missing_ok=True)

    lines = [f"# {title}", "", HOW_TO_READ, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {_one_line(note)}" for note in notes] + [""]

    lines += ["## Metrics", ""]
    if metrics:
        rows = []
        for name, row in metrics.items():
            values = [row.get(column) for column in columns]
            as_int = _is_count_row(values)
            rows.append([name] + [_format_number(value, as_int) for value in values])
        lines += _table(["metric", *columns], rows) + [""]
    else:
        lines += ["No metrics were measured.", ""]
    if plots["metrics.png"]:
        lines += ["![Dataset metrics per column](metrics.png)", ""]

    if plots["score_distributions.png"]:
        lines += ["## Critic scores", "", "![Critic score distributions](score_distributions.png)", ""]

    pass_columns = [column for column in columns if pass_rates.get(column)]
    lines += ["## Pass rates", ""]
    if pass_columns:
        experts = sorted({expert for column in pass_columns for expert in pass_rates[column]})
        rows = [[expert] + [_format_number(pass_rates[c].get(expert)) for c in pass_columns] for expert in experts]
        lines += _table(["expert / filter", *pass_columns], rows) + [""]
    else:
        lines += ["No pass rates were recorded.", ""]
    if plots["pass_rates.png"]:
        lines += ["![Pass rates per expert](pass_rates.png)", ""]

    example_columns = [column for column in columns if examples.get(column)]
    if example_columns:
        lines += ["## Examples", ""]
        for column in example_columns:
            lines += [f"### {column}", ""]
            for index, record in enumerate(examples[column], start=1):
                lines += _render_example(index, record)

    report_path = report_dir / "report.md"
    report_path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")

    payload = {
        "columns": columns,
        "metrics": {name: {column: row.get(column) for column in columns} for name, row in metrics.items()},
        "pass_rates": {
            column: {e: pass_rates[column][e] for e in sorted(pass_rates[column])} for column in pass_columns
        },
    }
    (report_dir / "metrics.json").write_text(
        json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return report_path
