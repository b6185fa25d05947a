"""The report's figures (see `report.write_report`): one per measurement section, plus critic scores and pass rates.

Every `*_figure` function builds a `matplotlib.figure.Figure`, or returns None when there is nothing to plot; `save`
writes it as a PNG. Building and saving are apart so that tests can read the axes (labels, limits, lines) instead of
pixels. Figures use `Figure` directly instead of pyplot: no global figure registry (nothing to close, no leak across
many iterations) and no backend switch imposed on the caller; PNGs are rendered with Agg.

So that a PNG can be shared on its own: every axis says what its number is (`axis_of`), rates, shares and
probabilities sit on [0, 1] and other non-negative numbers on a zero-based axis (a change of 0.0003 must not look
like a cliff), a panel shows only the columns that have a value, the critic's filter thresholds are drawn on the
score distributions, and what comes from a judge at chance on its known-answer probe (the judge card) is marked.
Each column (seed, iter-NN) keeps one color in every plot.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 110
# `vert=False` is deprecated since matplotlib 3.10 in favour of `orientation`, which older versions lack.
_HORIZONTAL = {"orientation": "horizontal"} if matplotlib.__version_info__ >= (3, 10) else {"vert": False}
AT_CHANCE = "⚠ judge at chance"
WARN_COLOR = "#b22222"
SUPXLABEL = "dataset: seed = the reference data, iter-NN = the selection of loop iteration NN"

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

UNIT = (0.0, 1.0)  # rates, shares, probabilities
FROM_ZERO = (0.0, None)  # counts and other non-negative numbers: zero-based, top from the data
# What a metric's number is: (patterns, y label, y range), the first match wins. Patterns as in `report.Section`:
# "x_" a prefix, "_x" a suffix, anything else an exact name.
AXES: list[tuple[tuple[str, ...], str, tuple[float, float | None]]] = [
    (("conversations", "candidates", "selected", "llm_judge_conversations", "_items"), "count", FROM_ZERO),
    (("turns_per_conversation",), "turns", FROM_ZERO),
    (("words_per_utterance",), "words", FROM_ZERO),
    (("sft_loss",), "loss", FROM_ZERO),
    (("option_mass_",), "P(answer options)", UNIT),
    (("toxicity_weak", "toxicity_medium", "toxicity_strong"), "share of conversations", UNIT),
    (("toxicity_mean",), "P(toxic)", UNIT),
    (("faithfulness_mean", "faithfulness_nli_mean"), "P(contradiction)", UNIT),
    (("detection_p_generated",), "P(generated one is AI)", UNIT),
    (("detection_lose", "detection_win", "detection_tie"), "share of user pairs", UNIT),
    (("extraction_p_yes_",), "P(yes)", UNIT),
    (("extraction_precision",), "precision", UNIT),
    (("extraction_recall",), "recall", UNIT),
    (("ir_",), "hit@1", UNIT),
    (("_selected_win_rate",), "win probability", UNIT),
    (("persona_grounding_",), "grounding score", UNIT),
    (("embedding_diversity_",), "cosine distance", FROM_ZERO),
    (("distinct_",), "share of unique n-grams", UNIT),
    (("persona_word_overlap", "persona_embedding_coverage", "persona_embedding_coverage_shuffled"), "share", UNIT),
    (("llm_eval_", "gpt_score_"), "score (0–100)", (0.0, 100.0)),
    (("g_eval_",), "score (1–5)", (1.0, 5.0)),
    (("_rate",), "rate", UNIT),
]
# What an expert's per-candidate score is (the x axis of its score distribution); policies: mean win probability.
SCORE_LABELS = {
    "faithfulness": "P(contradiction)",
    "faithfulness_nli": "P(contradiction)",
    "toxicity": "P(toxic)",
    "persona_grounding": "grounding score",
}
POLICY_SCORE = "P(wins against the pair's other candidates)"


def pattern_matches(pattern: str, name: str) -> bool:
    if pattern.endswith("_"):
        return name.startswith(pattern)
    if pattern.startswith("_"):
        return name.endswith(pattern)
    return name == pattern


def axis_of(name: str) -> tuple[str, tuple[float, float | None] | None]:
    """(y label, y range) of a metric; an unknown one is a "value" whose range comes from its data (`_set_ylim`)."""
    for patterns, label, limits in AXES:
        if any(pattern_matches(pattern, name) for pattern in patterns):
            return label, limits
    return "value", None


def is_measured(value: Any) -> bool:
    """None and NaN (also numpy's) both mean "not measured"."""
    return value is not None and not math.isnan(float(value))


def as_float(value: Any) -> float:
    return float(value) if is_measured(value) else float("nan")


def _measured_in(row: dict[str, Any], columns: list[str]) -> bool:
    return any(is_measured(row.get(column)) for column in columns)


def save(figure: Figure | None, path: Path) -> bool:
    """Write the figure as a PNG; False (nothing written) when there is no figure."""
    if figure is None:
        return False
    figure.savefig(path, dpi=DPI)
    return True


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


def _set_ylim(ax: Any, limits: tuple[float, float | None] | None, values: list[float]) -> bool:
    """Apply a metric's y range; returns False when the axis is not zero-based (so the panel must say so).

    A fixed top grows to fit a value above it rather than hide it; an open top leaves 15% room for value labels.
    """
    high = max(values)
    if limits is None:  # unknown metric: zero-based when it cannot be negative in the data
        limits = FROM_ZERO if min(values) >= 0 else None
    if limits is None:
        return False
    bottom, top = limits
    top = max(top, high) if top is not None else (high * 1.15 if high > 0 else 1.0)
    ax.set_ylim(bottom, top)
    return bottom == 0


def _title(ax: Any, text: str, warn: bool, joint: str, **kwargs: Any) -> None:
    """A panel title; a panel whose numbers come from a judge at chance says so, in red."""
    if warn:
        ax.set_title(text + joint + AT_CHANCE, color=WARN_COLOR, **kwargs)
    else:
        ax.set_title(text, **kwargs)


def _value_label(value: float, count: bool) -> str:
    """A point's value as the report's tables print it: counts whole, tiny numbers in e-notation, else 3 decimals."""
    if count:
        return f"{value:.0f}"
    return f"{value:.2e}" if value != 0 and abs(value) < 1e-3 else f"{value:.3f}"


def metrics_figure(
    columns: list[str], metrics: dict[str, dict[str, Any]], title: str, blind: Collection[str] = ()
) -> Figure | None:
    """One panel per measured metric, x = the columns that have a value for it, each point labelled with its value.

    The seed is a reference, not a step of the loop: its point stands alone and a line joins the iterations only.
    `blind`: metrics from a judge at chance on its probe; their panel titles say so.
    """
    names = [name for name, row in metrics.items() if _measured_in(row, columns)]
    if not names:
        return None
    colors = _column_colors(columns)
    nrows, ncols = _grid(len(names))
    fig = Figure(figsize=(max(5.0, 4.2 * ncols), 0.8 + 2.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, name in zip(axes, names):
        shown = [column for column in columns if is_measured(metrics[name].get(column))]
        values = [float(metrics[name][column]) for column in shown]
        steps = [i for i, column in enumerate(shown) if column != "seed"]
        ax.plot(steps, [values[i] for i in steps], color="#888888", zorder=1)
        ax.scatter(range(len(shown)), values, color=[colors[c] for c in shown], zorder=2, clip_on=False)
        count = all(v.is_integer() for v in values) and any(v > 1 for v in values)  # as the report's tables
        _set_xticks(ax, shown)
        ax.set_xlim(-0.5, len(shown) - 0.5)
        label, limits = axis_of(name)
        zero_based = _set_ylim(ax, limits, values)
        low, high = ax.get_ylim()
        for x, value in enumerate(values):  # above the point, or below it near the top of the axis
            offset = (0, -11) if (value - low) > 0.85 * (high - low) else (0, 5)
            text = _value_label(value, count)
            ax.annotate(text, (x, value), xytext=offset, textcoords="offset points", ha="center", fontsize="x-small")
        ax.set_ylabel(label if zero_based else f"{label} (axis not from 0)")
        _title(ax, name, name in blind, "\n", fontsize="medium")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.supxlabel(SUPXLABEL, fontsize="small")
    return fig


def detection_figure(
    columns: list[str], metrics: dict[str, dict[str, Any]], title: str, blind: Collection[str] = ()
) -> Figure | None:
    """Horizontal stacked bars of lose / win / tie shares, one bar per column with a measured outcome."""
    rows = {outcome: metrics.get(name, {}) for outcome, (name, *_) in DETECTION_OUTCOMES.items()}
    shown = [column for column in columns if any(is_measured(row.get(column)) for row in rows.values())]
    if not shown:
        return None
    fig = Figure(figsize=(7.5, 1.8 + 0.45 * len(shown)), layout="constrained")
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
    ax.set_ylabel("dataset")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside right upper", title="outcome")
    warn = any(name in blind for name, *_ in DETECTION_OUTCOMES.values())
    _title(ax, "AI detection: outcome per user pair, generated vs seed", warn, "\n", fontsize="medium")
    return fig


def llm_judge_figure(
    columns: list[str], metrics: dict[str, dict[str, Any]], title: str, blind: Collection[str] = ()
) -> Figure | None:
    """Grouped bars per criterion (one bar per column), one panel per judge family since their scales differ."""
    panels = []
    for prefix, (family, limits) in LLM_JUDGE_FAMILIES.items():
        names = [n for n, row in metrics.items() if n.startswith(prefix) and _measured_in(row, columns)]
        if names:
            panels.append((prefix, family, limits, names))
    if not panels:
        return None
    shown = [c for c in columns if any(is_measured(metrics[n].get(c)) for *_, names in panels for n in names)]
    colors = _column_colors(columns)
    most = max(len(names) for *_, names in panels)
    width = min(0.8 / len(shown), 0.3)
    # Wide enough for the longest criterion name under each slot, and for a legible bar per column.
    fig = Figure(figsize=(min(16.0, max(1.4 * most + 2.5, 0.28 * most * len(shown) + 3.0)), 0.8 + 2.7 * len(panels)))
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
        _title(ax, family, any(name in blind for name in names), " ", fontsize="medium", loc="left")
        ax.set_ylabel("mean score" + (f" (axis from {limits[0]:g})" if limits[0] else ""))
        ax.set_xlabel("criterion")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    handles = [Patch(facecolor=colors[column], label=column) for column in shown]
    fig.legend(handles=handles, loc="outside right center", title="dataset")  # clear of the centred title
    fig.suptitle(f"{title}: mean expected score per criterion")
    return fig


def score_distributions_figure(
    columns: list[str],
    score_distributions: dict[str, dict[str, list[float]]],
    thresholds: dict[str, float] | None = None,
    blind: Collection[str] = (),
) -> Figure | None:
    """A box plot per expert, one box per iteration; a filter's threshold is a dashed line with its failing side
    shaded (a candidate fails at or above it), so a reader sees how many candidates it removes."""

    def finite(column: str, expert: str) -> list[float]:
        return [float(v) for v in score_distributions.get(column, {}).get(expert) or [] if is_measured(v)]

    thresholds = thresholds or {}
    experts = sorted({expert for column in columns for expert in score_distributions.get(column, {})})
    experts = [expert for expert in experts if any(finite(column, expert) for column in columns)]
    if not experts:
        return None
    colors = _column_colors(columns)
    shown_columns = [column for column in columns if any(finite(column, expert) for expert in experts)]
    nrows, ncols = _grid(len(experts))
    height = max(3.0, 1.0 + (0.45 * len(shown_columns) + 0.9) * nrows)
    fig = Figure(figsize=(max(6.5, 4.2 * ncols + 1.2), height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, expert in zip(axes, experts):
        present = [column for column in shown_columns if finite(column, expert)]
        # Top-to-bottom in column order: the first column is drawn at the top.
        positions = [len(shown_columns) - shown_columns.index(column) for column in present]
        scores = [finite(column, expert) for column in present]
        boxes = ax.boxplot(
            scores, positions=positions, widths=0.6, patch_artist=True, medianprops={"color": "black"}, **_HORIZONTAL
        )
        ax.set_yticks(positions, present)
        for box, column in zip(boxes["boxes"], present):
            box.set_facecolor(colors[column])
            box.set_alpha(0.75)
        ax.set_ylim(0.4, len(shown_columns) + 0.6)
        everything = [v for values in scores for v in values]
        if 0 <= min(everything) and max(everything) <= 1:
            ax.set_xlim(0, 1)
        if expert in thresholds:
            cut = thresholds[expert]
            ax.axvspan(cut, max(1.0, ax.get_xlim()[1]), color=WARN_COLOR, alpha=0.08, lw=0)
            ax.axvline(cut, color=WARN_COLOR, ls="--", lw=1.2, label=f"threshold {cut:g}: fails at or above")
            ax.annotate(f"fails ≥ {cut:g}", (cut, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                        textcoords="offset points", va="top", fontsize="x-small", color=WARN_COLOR)  # fmt: skip
        _title(ax, expert, expert in blind, " ")
        ax.set_xlabel(SCORE_LABELS.get(expert, POLICY_SCORE), fontsize="small")
        ax.set_ylabel("iteration")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(experts) :]:
        ax.set_visible(False)
    handles = [Patch(facecolor=colors[column], alpha=0.75, label=column) for column in shown_columns]
    fig.legend(handles=handles, loc="outside right upper", title="iteration")
    fig.suptitle("Critic score distributions over all candidates (dashed: a filter's threshold)")
    return fig


def pass_order(names: Collection[str]) -> list[str]:
    """Pass-rate rows in the order a candidate meets them: parsed, each filter (by name), all filters."""
    ends = ("parsed", "all filters")
    middle = sorted(name for name in names if name not in ends)
    return (["parsed"] if "parsed" in names else []) + middle + (["all filters"] if "all filters" in names else [])


def pass_rates_figure(
    columns: list[str], pass_rates: dict[str, dict[str, float]], blind: Collection[str] = ()
) -> Figure | None:
    shown_columns = [c for c in columns if any(is_measured(v) for v in pass_rates.get(c, {}).values())]
    if not shown_columns:
        return None
    experts = pass_order({expert for column in shown_columns for expert in pass_rates[column]})
    colors = _column_colors(columns)
    width = min(0.8 / len(shown_columns), 0.3)  # a lone bar would otherwise fill the whole slot
    width_in = min(14.0, max(5.5, 0.35 * len(experts) * len(shown_columns) + 2.5))
    fig = Figure(figsize=(width_in, 4.4), layout="constrained")
    ax = fig.subplots()
    for i, column in enumerate(shown_columns):
        offsets = [x + width * (i - (len(shown_columns) - 1) / 2) for x in range(len(experts))]
        values = [as_float(pass_rates[column].get(expert)) for expert in experts]
        bars = ax.bar(offsets, values, width=width, color=colors[column], label=column)
        # Inside a bar, upright, so neighbours' labels cannot collide; above a bar too short to hold one.
        inside = [f"{v:.0%}" if is_measured(v) and v >= 0.15 else "" for v in values]
        above = [f"{v:.0%}" if is_measured(v) and v < 0.15 else "" for v in values]
        ax.bar_label(bars, labels=inside, label_type="center", rotation=90, fontsize="x-small")
        ax.bar_label(bars, labels=above, rotation=90, padding=2, fontsize="x-small")
    _set_xticks(ax, [expert + (" ⚠" if expert in blind else "") for expert in experts])
    for tick, expert in zip(ax.get_xticklabels(), experts):
        if expert in blind:
            tick.set_color(WARN_COLOR)
    ax.set_xlim(-0.6, len(experts) - 0.4)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter("{x:.0%}")
    ax.set_ylabel("pass rate (share of candidates)")
    ax.set_xlabel("expert / filter" + ("   (⚠ = judge at chance)" if any(e in blind for e in experts) else ""))
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside right upper", title="iteration")
    ax.set_title("Share of candidates passing each expert")
    return fig


# Section slug -> its figure; sections not listed get `metrics_figure`.
SECTION_FIGURES = {"detection": detection_figure, "llm_judge": llm_judge_figure}
