"""The report's PNG plots (see `report.write_report`): one per measurement section, plus critic scores and pass rates.

Every function writes one PNG and returns whether it did: False (nothing written) when there is nothing to plot.
Plots use `matplotlib.figure.Figure` directly instead of pyplot: no global figure registry (nothing to close, no
leak across many iterations) and no backend switch imposed on the caller; PNGs are rendered with Agg. Each column
(seed, iter-NN) keeps one color in every plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 110
# `vert=False` is deprecated since matplotlib 3.10 in favour of `orientation`, which older versions lack.
_HORIZONTAL = {"orientation": "horizontal"} if matplotlib.__version_info__ >= (3, 10) else {"vert": False}

# AI-detection outcomes, in the paper's Table 3 order, with their colors.
DETECTION_OUTCOMES = {
    "lose": ("detection_lose", "#d62728", "lose: generated caught\nin both orders"),
    "win": ("detection_win", "#2ca02c", "win: seed called AI\nin both orders"),
    "tie": ("detection_tie", "#b0b0b0", "tie: the orders\ndisagree"),
}
# LLM-judge families: metric-name prefix -> (panel title, y range). G-Eval's fluency is on 1-3, the others on 1-5.
LLM_JUDGE_FAMILIES = {
    "llm_eval_": ("LLM-Eval (0–100)", (0.0, 100.0)),
    "gpt_score_": ("GPT-Score: 100 × P(Yes) (0–100)", (0.0, 100.0)),
    "g_eval_": ("G-Eval (1–5; fluency 1–3)", (1.0, 5.0)),
}


def is_measured(value: Any) -> bool:
    """None and NaN (also numpy's) both mean "not measured"."""
    return value is not None and not math.isnan(float(value))


def as_float(value: Any) -> float:
    return float(value) if is_measured(value) else float("nan")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = 2 if n == 4 else min(max_cols, n)
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


def _measured_in(row: dict[str, Any], columns: list[str]) -> bool:
    return any(is_measured(row.get(column)) for column in columns)


def plot_metrics(path: Path, columns: list[str], metrics: dict[str, dict[str, Any]], title: str) -> bool:
    """One small line plot per measured metric, x = columns (gaps = not measured)."""
    names = [name for name, row in metrics.items() if _measured_in(row, columns)]
    if not names:
        return False
    nrows, ncols = _grid(len(names))
    fig = Figure(figsize=(max(5.0, 4.2 * ncols), 0.5 + 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    positions = list(range(len(columns)))
    for ax, name in zip(axes, names):
        ax.plot(positions, [as_float(metrics[name].get(column)) for column in columns], marker="o")
        _set_xticks(ax, columns)
        ax.set_xlim(-0.5, len(columns) - 0.5)
        ax.set_title(name, fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(f"{title} (gaps = not measured)")
    fig.savefig(path, dpi=DPI)
    return True


def plot_detection(path: Path, columns: list[str], metrics: dict[str, dict[str, Any]], title: str) -> bool:
    """Horizontal stacked bars of lose / win / tie shares, one bar per column with a measured outcome."""
    rows = {outcome: metrics.get(name, {}) for outcome, (name, *_) in DETECTION_OUTCOMES.items()}
    shown = [column for column in columns if any(is_measured(row.get(column)) for row in rows.values())]
    if not shown:
        return False
    fig = Figure(figsize=(7.5, 1.6 + 0.45 * len(shown)), layout="constrained")
    ax = fig.subplots()
    positions = [len(shown) - 1 - i for i in range(len(shown))]  # first column on top
    left = [0.0] * len(shown)
    for outcome, (_, color, label) in DETECTION_OUTCOMES.items():
        values = [as_float(rows[outcome].get(column)) for column in shown]
        widths = [0.0 if math.isnan(value) else value for value in values]
        bars = ax.barh(positions, widths, left=left, height=0.6, color=color, label=label, edgecolor="white")
        labels = [f"{value:.0%}" if value >= 0.08 else "" for value in widths]
        ax.bar_label(bars, labels=labels, label_type="center", fontsize="small")
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(positions, shown)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.xaxis.set_major_formatter("{x:.0%}")
    ax.set_xlabel("share of user pairs")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", title="outcome")
    ax.set_title("AI detection: outcome per user pair, generated vs seed", fontsize="medium")
    fig.savefig(path, dpi=DPI)
    return True


def plot_llm_judge(path: Path, columns: list[str], metrics: dict[str, dict[str, Any]], title: str) -> bool:
    """Grouped bars per criterion (one bar per column), one panel per judge family since their scales differ."""
    panels = []
    for prefix, (family, limits) in LLM_JUDGE_FAMILIES.items():
        names = [n for n, row in metrics.items() if n.startswith(prefix) and _measured_in(row, columns)]
        if names:
            panels.append((prefix, family, limits, names))
    if not panels:
        return False
    shown = [c for c in columns if any(is_measured(metrics[n].get(c)) for *_, names in panels for n in names)]
    colors = _column_colors(columns)
    most = max(len(names) for *_, names in panels)
    width = min(0.8 / len(shown), 0.3)
    # Wide enough for the longest criterion name under each slot, and for a legible bar per column.
    fig = Figure(figsize=(min(16.0, max(1.4 * most + 2.5, 0.28 * most * len(shown) + 3.0)), 0.6 + 2.6 * len(panels)))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False).flatten()
    for ax, (prefix, family, limits, names) in zip(axes, panels):
        for i, column in enumerate(shown):
            offsets = [x + width * (i - (len(shown) - 1) / 2) for x in range(len(names))]
            values = [as_float(metrics[name].get(column)) for name in names]
            ax.bar(offsets, [v - limits[0] for v in values], bottom=limits[0], width=width, color=colors[column])
        ax.set_xticks(range(len(names)), [name.removeprefix(prefix) for name in names])
        ax.set_xlim(-0.6, most - 0.4)  # same slot width in every panel
        ax.set_ylim(*limits)
        ax.set_title(family, fontsize="medium", loc="left")
        ax.set_ylabel("mean score")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles = [Patch(facecolor=colors[column], label=column) for column in shown]
    fig.legend(handles=handles, loc="outside right center", title="column")  # clear of the centred title
    fig.suptitle(f"{title}: mean expected score per criterion")
    fig.savefig(path, dpi=DPI)
    return True


def plot_score_distributions(
    path: Path, columns: list[str], score_distributions: dict[str, dict[str, list[float]]]
) -> bool:
    def finite(column: str, expert: str) -> list[float]:
        return [float(v) for v in score_distributions.get(column, {}).get(expert) or [] if is_measured(v)]

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


def plot_pass_rates(path: Path, columns: list[str], pass_rates: dict[str, dict[str, float]]) -> bool:
    shown_columns = [c for c in columns if any(is_measured(v) for v in pass_rates.get(c, {}).values())]
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
        values = [as_float(pass_rates[column].get(expert)) for expert in experts]
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


# Section slug -> its plot; sections not listed get `plot_metrics`.
SECTION_PLOTS = {"detection": plot_detection, "llm_judge": plot_llm_judge}
