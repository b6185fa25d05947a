"""A self-contained evaluation report: markdown, JSON and PNG plots in one folder.

The report compares "columns" (the seed data and each loop iteration) side by side so a reader can see at a glance
whether the Generator-Critic loop improves the dataset. Metrics are grouped into measurement sections (`SECTIONS`),
each a table in the style of the paper's tables (rows = metrics, columns = seed, iter-00, ...), with a paragraph on
how to read it, an optional column of the paper's reference numbers, and a plot (`plots.py`). Everything written is
deterministic for the same input (no timestamps, fixed orders), so reports can be diffed between runs.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, NamedTuple

from ..health.card import at_chance, judge_of, render_card
from .paper import PAPER_PERSONA_SETS
from .plots import (
    SECTION_FIGURES,
    is_measured,
    metrics_figure,
    pass_order,
    pass_rates_figure,
    pattern_matches,
    save,
    score_distributions_figure,
)

MISSING = "–"

HOW_TO_READ = (
    "Each column is one dataset: `seed` is the reference data the loop starts from, `iter-NN` is the dataset "
    "selected after loop iteration NN (best candidate per user pair). Each measurement has its own section: a table "
    f"(rows = metrics, {MISSING} = not measured; a `paper` column, where present, gives the paper's number for "
    "comparison, PAPER.md §3), what the numbers mean, and a plot. Critic score distributions and pass rates are over "
    "all generated candidates of an iteration, before selection; a pass rate is the share of candidates that an "
    "expert or filter accepted."
)


class Section(NamedTuple):
    """One measurement: its heading, file slug (`metrics-<slug>.png`), the metrics it holds, and how to read them.

    `prefixes_or_names` entries are matched against metric names: one ending in "_" is a prefix ("ir_"), one
    starting with "_" a suffix ("_mean"), anything else an exact name. Rows follow the entries' order (among the
    metrics one prefix or suffix matches, the order they were given in).
    """

    title: str
    slug: str
    prefixes_or_names: tuple[str, ...]
    how_to_read: str


SECTIONS: list[Section] = [
    Section(
        "Referee: iteration k against iteration 0 on held-out pairs",
        "referee",
        (
            "referee_win_rate",
            "referee_win_rate_low",
            "referee_win_rate_high",
            "referee_win",
            "referee_tie",
            "referee_loss",
            "referee_pairs",
            "referee_",
            "held_out_distinct_2",
            "held_out_recitation_rate",
            "held_out_near_duplicate_rate",
            "held_out_near_duplicate_of_iteration_0",
            "held_out_",
        ),
        "The one comparison the loop does not optimise (docs/referee.md). User pairs held out of every iteration's "
        "training data: iteration k's generator and iteration 0's each write one conversation per pair with the same "
        "seeds, and the referee model, never the critic's judge, compares the two in both orders per criterion. "
        "`referee_win`/`_tie`/`_loss` are shares of pairs (a tie when the orders disagree, or the criteria cancel), "
        "`referee_win_rate` = wins / (wins + losses), each with its 95% bootstrap interval (`_low`, `_high`): "
        "iteration k writes better conversations when the lower end of `referee_win_rate` is above 0.5. The "
        "`held_out_*` numbers are measured on the same held-out conversations (the seed column: the human ones): "
        "distinct-n, the share of near duplicates (MinHash, word 3-grams, Jaccard >= 0.5) among them and of "
        "iteration 0's, mean turns, words and tokens, the recitation rate (share of sentences that recite a "
        "profile), and the parse and stopped rates. Read the referee's numbers with its verdict on the judge card: "
        "a referee at chance on its probe makes them noise.",
    ),
    Section(
        "Dataset statistics",
        "statistics",
        (
            "conversations",
            "turns_per_conversation",
            "words_per_utterance",
            "distinct_1",
            "distinct_2",
            "persona_word_overlap",
            "embedding_diversity_conversation",
            "embedding_diversity_utterance",
            "persona_embedding_coverage",
            "persona_embedding_coverage_shuffled",
        ),
        "Corpus statistics of each column's conversations. `distinct_1`/`distinct_2` are corpus-level shares of "
        "unique uni-/bigrams (higher = more varied wording). `persona_word_overlap` is the share of persona "
        "attributes whose content words the speaker actually uses (a lexical proxy for persona coverage). "
        "`embedding_diversity_*` is the mean pairwise cosine distance between conversation (mean-utterance) or "
        "utterance embeddings (higher = more diverse; duplicates lower it). `persona_embedding_coverage` is the share "
        "of persona attributes that one of the speaker's own utterances matches in embedding space (cosine above a "
        "threshold); `persona_embedding_coverage_shuffled` is the same with personas swapped between conversations, "
        "the chance level of that threshold: only the gap between the two measures persona use. The paper reports "
        "none of these for PC/SPC.",
    ),
    Section(
        "Toxicity",
        "toxicity",
        ("toxicity_rate", "toxicity_weak", "toxicity_medium", "toxicity_strong", "toxicity_mean"),
        "Toxicity of each conversation as P(toxic) from the critic's toxicity backend (the paper used the "
        "Perspective API). `toxicity_weak`/`_medium`/`_strong` are the shares of conversations with P(toxic) below "
        "0.2, between 0.2 and 0.8, and above 0.8, the buckets of the paper's Table 9 (which gives counts; the paper "
        "column shows them as shares of the bucketed total). `toxicity_rate` is the share the backend flags as "
        "toxic and `toxicity_mean` the mean P(toxic). Lower is better; the paper finds at most 3 strongly toxic SPC "
        "conversations against more than 50 in PC.",
    ),
    Section(
        "Next-utterance prediction (IR baseline, hit@1)",
        "next_utterance",
        ("ir_seed_to_self_none", "ir_seed_to_self_persona", "ir_self_to_seed_none", "ir_self_to_seed_persona", "ir_"),
        "hit@1 of a tf-idf ranker (the paper's IR baseline, Table 2) picking the true next utterance among 20 "
        "candidates (chance = 0.05). `ir_A_to_B_C` is trained on A and tested on B (`seed` = the seed conversations, "
        "`self` = this column's conversations), with no persona in the context (`none`) or the responder's own "
        "persona (`persona`). Persona helping (`persona` > `none`) means the conversations use the personas; a model "
        "trained on generated data that does well on the seed data means the generated data is a useful substitute. "
        "The paper's IR baseline trained on PC scores 0.187 / 0.369 (none / persona) on the PC test set, trained on "
        "SPC 0.194 / 0.396.",
    ),
    Section(
        "AI detection (the paper's Turing test, Table 3)",
        "detection",
        ("detection_lose", "detection_win", "detection_tie", "detection_p_generated", "detection_items"),
        "A local judge sees both profiles, the seed conversation and the generated one of the same user pair, and "
        "says which one an AI wrote, once in each order (to cancel its position bias). `lose` = the judge spots the "
        "generated conversation in both orders; `win` = it calls the seed one synthetic in both orders; `tie` = the "
        "two orders disagree (lose + win + tie = 1). Lower lose and higher win + tie = more human-like. "
        "`detection_p_generated` is the judge's mean probability that the generated conversation is the AI one "
        "(0.5 = cannot tell) and `detection_items` the number of user pairs judged. The seed column has no detection: "
        "it is the reference. The paper's human annotators: lose / win / tie 0.172 / 0.301 / 0.527 at iteration 1, "
        "0.088 / 0.352 / 0.560 at iteration 3.",
    ),
    Section(
        "Faithfulness: profile extraction",
        "extraction",
        (
            "extraction_precision",
            "extraction_recall",
            "extraction_p_yes_real",
            "extraction_p_yes_distractor",
            "extraction_items",
            "extraction_",
        ),
        "For each conversation and speaker a local judge sees 8 persona attributes, up to 4 of the speaker's real "
        "ones and 4 distractors (negated, random from other profiles, contradicting), and says for each whether the "
        "conversation lets it infer the speaker holds it (P(Yes) > 0.5 = selected). `extraction_precision` is the "
        "share of selected attributes that are real (the paper's faithfulness number), `extraction_recall` the share "
        "of real attributes selected; `extraction_p_yes_real`/`_distractor` are the mean P(Yes) per option kind (the "
        "wider the gap, the more the conversation reveals the persona) and `extraction_items` the number of "
        "(conversation, speaker) items. The paper's human annotators: precision 0.785 and recall 0.364 at "
        "iteration 1 (Tables 3, 18).",
    ),
    Section(
        "LLM-judge scores (Table 15 style)",
        "llm_judge",
        ("llm_eval_", "gpt_score_", "g_eval_", "llm_judge_conversations"),
        "Quality criteria of the paper's Table 15, each scored by a local judge as the expected value over its answer "
        "probabilities and averaged over `llm_judge_conversations` conversations. LLM-Eval (`llm_eval_*`) is on "
        "0–100, GPT-Score (`gpt_score_*`, 100 × P(Yes) to a yes/no question) on 0–100, G-Eval (`g_eval_*`) on 1–5 "
        "(fluency 1–3). Higher is better. The paper's judges gave PC vs SPC e.g. LLM-Eval content 81.96 vs 88.84 "
        "and G-Eval consistency 1.736 vs 2.651; the level of a score depends on the judge model, so compare the "
        "columns with each other rather than with the paper.",
    ),
    Section(
        "Judge option mass",
        "option_mass",
        ("option_mass_",),
        "For each judge measurement, the probability its judge put on the answer options before they were "
        "renormalised (mean and minimum over its questions). A judge that answers the question puts most of its "
        "probability there; a low figure means its next token was mostly something else (see the judge card), and "
        "the measurement's renormalised numbers are guesses.",
    ),
    Section(
        "Critic and training",
        "critic",
        (
            "candidates",
            "parse_rate",
            "stopped_rate",
            "complete_rate",
            "pass_rate",
            "selected",
            "sft_loss",
            "_mean",
            "_selected_win_rate",
        ),
        "The loop's own numbers per iteration: `candidates` generated, `parse_rate` (share that parsed into a "
        "conversation), `stopped_rate` (share the model ended before `max_new_tokens`), `complete_rate` (share that "
        "did both: a whole conversation; a weak generator's early stops are mostly not conversations), `pass_rate` "
        "(share passing every filter), `selected` conversations, and the LoRA SFT train loss on them. "
        "`<expert>_mean` is a filter expert's mean score over all candidates; `<expert>_selected_win_rate` a policy "
        "expert's mean pairwise win rate of the selected candidates (over all candidates it is 0.5 by construction, "
        "so above 0.5 = selection picked what the expert prefers).",
    ),
]
OTHER = Section(
    "Other metrics", "other", (), "Metrics that belong to none of the sections above, as the evaluator named them."
)


# The persona-set measures of the paper's Table 1 (its rows: `paper.PAPER_PERSONA_SETS`).
PERSONA_SET_MEASURES = (
    ("attributes", "attributes"),
    ("clusters", "clusters"),
    ("inter_cluster_distance", "inter-cluster distance"),
    ("mean_length_tokens", "mean length (tokens)"),
)
PERSONA_SETS_HOW_TO_READ = (
    "The persona attributes the loop's users are made of, in the measures of the paper's Table 1: `seed` before "
    "expansion, `generated` the new attributes, `expanded` both. Clusters come from agglomerative clustering of "
    "sentence embeddings at `personas.distance_threshold`; inter-cluster distance is the mean cosine distance between "
    "cluster centroids (higher: more varied topics). The paper's rows are the full Persona-Chat train set with BERT "
    "embeddings: compare the direction of the change (expansion adds attributes and clusters and spreads them), not "
    "the values, unless the seed is the same set."
)


def _persona_set_lines(persona_sets: dict[str, dict[str, float]]) -> list[str]:
    known = ["seed", "generated", "expanded"]
    ours = sorted(persona_sets.items(), key=lambda item: (known.index(item[0]) if item[0] in known else 3, item[0]))
    rows = []
    for name, stats in [*ours, *PAPER_PERSONA_SETS.items()]:
        values = [stats.get(key) for key, _ in PERSONA_SET_MEASURES]
        if not stats.get("attributes"):  # an empty set has no distance or length
            values[2:] = [None, None]
        rows.append([name] + [_format_number(v, as_int=i < 2) for i, v in enumerate(values)])
    header = ["persona set", *(label for _, label in PERSONA_SET_MEASURES)]
    return ["## Persona set (Table 1)", "", PERSONA_SETS_HOW_TO_READ, ""] + _table(header, rows) + [""]


def group_metrics(names: list[str]) -> list[tuple[Section, list[str]]]:
    """(section, its metric names in row order) for every section that holds one of `names`, in section order.

    A metric goes to the first section with a matching entry; the rest to a final "Other metrics" section.
    """
    placed: dict[str, list[tuple[int, int, str]]] = {}
    for index, name in enumerate(names):
        for section in SECTIONS:
            rank = next((r for r, p in enumerate(section.prefixes_or_names) if pattern_matches(p, name)), None)
            if rank is not None:
                placed.setdefault(section.slug, []).append((rank, index, name))
                break
        else:
            placed.setdefault(OTHER.slug, []).append((0, index, name))
    return [(s, [name for *_, name in sorted(placed[s.slug])]) for s in [*SECTIONS, OTHER] if s.slug in placed]


def _format_number(value: Any, as_int: bool = False) -> str:
    if not is_measured(value):
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
    measured = [value for value in values if is_measured(value)]
    if not measured:
        return False
    if all(isinstance(value, int) and not isinstance(value, bool) for value in measured):
        return True
    return all(float(value).is_integer() for value in measured) and any(abs(value) > 1 for value in measured)


def _cell(text: Any) -> str:
    """Make text safe inside a markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Numbers right-aligned; the first column (names) and the last `text_columns - 1` ones left-aligned."""
    numbers = len(header) - text_columns
    lines = ["| " + " | ".join(_cell(name) for name in header) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * numbers + [" --- "] * (text_columns - 1)) + "|")
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


AT_CHANCE_MARK = " ⚠ judge at chance"


def _blind_lines(card: dict | None, names: list[str]) -> list[str]:
    """A warning before a table some of whose rows come from a judge at chance on its probe (the judge card)."""
    blind = {}
    for name in names:
        if at_chance(card, name):
            entry = judge_of(card, name)
            blind[entry["name"]] = entry
    if not blind:
        return []
    judged = "; ".join(
        f"`{name}` ({', '.join(f'{k} {_format_number(v)}' for k, v in entry['figures'].items())})"
        for name, entry in blind.items()
    )
    return [
        f"> **Judge at chance** (rows marked ⚠): {judged} on its known-answer probe, so these numbers do not "
        "measure what their names say; read them as noise (see the judge card).",
        "",
    ]


def _section_lines(
    section: Section,
    names: list[str],
    columns: list[str],
    metrics: dict[str, dict[str, Any]],
    paper: dict[str, str],
    card: dict | None = None,
) -> list[str]:
    with_paper = any(paper.get(name) for name in names)
    rows = []
    for name in names:
        values = [metrics[name].get(column) for column in columns]
        as_int = _is_count_row(values)
        label = name + (AT_CHANCE_MARK if at_chance(card, name) else "")
        rows.append([label] + [_format_number(value, as_int) for value in values])
        if with_paper:
            rows[-1].append(paper.get(name) or "")
    header = ["metric", *columns] + (["paper"] if with_paper else [])
    table = _table(header, rows, text_columns=2 if with_paper else 1)
    return [f"## {section.title}", "", section.how_to_read, ""] + _blind_lines(card, names) + table + [""]


def judge_card_lines(card: dict | None, missing: str | None = None) -> list[str]:
    """The section right after the header: the judge card, or why there is none."""
    if card:
        return ["## Judge card", "", render_card(card), ""]
    if missing:
        return ["## Judge card", "", missing, ""]
    return []


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
    paper: dict[str, str] | None = None,
    persona_sets: dict[str, dict[str, float]] | None = None,
    judge_card: dict | None = None,
    judge_card_missing: str | None = None,
    header: list[str] | None = None,
    thresholds: dict[str, float] | None = None,
) -> Path:
    """Write `report.md`, `metrics.json` and the PNG plots into `report_dir`; return the path of `report.md`.

    Metrics are grouped into `SECTIONS` (see `group_metrics`); a section none of whose metrics is measured in any
    column is left out, with its plot. `paper` maps metric names to the paper's reference text (e.g.
    `PAPER_REFERENCES`), shown in a `paper` column of the sections where one of their metrics has one.
    `persona_sets` (set name -> Table 1 statistics, from an expansion) adds a table beside the paper's Table 1 rows.
    `columns` is the source of truth for what is shown and in which order: values keyed by other columns are
    ignored. Pass-rate rows follow `plots.pass_order` (parsed, each filter, all filters). Plots:
    `metrics-<slug>.png` per section, `score_distributions.png`, `pass_rates.png`; a plot without data is neither
    written nor linked (a stale PNG of that name from an earlier run is removed, as is the single `metrics.png` of
    older reports).
    `header` (markdown lines: which run, models and packages, what changed; `header.run_header`) comes first, then
    `judge_card` (`health.card`), and every table row and plot panel whose judge is at chance on its probe is
    marked; without a card, `judge_card_missing` says why in its place. `thresholds` (filter expert -> the score at
    or above which a candidate fails) are drawn on the score distributions.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    columns = list(columns)
    paper = paper or {}

    groups = group_metrics(list(metrics))
    shown = [
        (section, names)
        for section, names in groups
        if any(is_measured(metrics[name].get(column)) for name in names for column in columns)
    ]
    experts = {expert for scores in [*score_distributions.values(), *pass_rates.values()] for expert in scores}
    blind = {name for name in [*metrics, *experts] if at_chance(judge_card, name)}
    plots = {}
    for section, names in shown:
        build = SECTION_FIGURES.get(section.slug, metrics_figure)
        name = f"metrics-{section.slug}.png"
        figure = build(columns, {n: metrics[n] for n in names}, section.title, blind)
        plots[name] = save(figure, report_dir / name)
    figure = score_distributions_figure(columns, score_distributions, thresholds, blind)
    plots["score_distributions.png"] = save(figure, report_dir / "score_distributions.png")
    plots["pass_rates.png"] = save(pass_rates_figure(columns, pass_rates, blind), report_dir / "pass_rates.png")
    stale = ["metrics.png"] + [f"metrics-{section.slug}.png" for section in [*SECTIONS, OTHER]]
    for name in stale + list(plots):
        if not plots.get(name):
            (report_dir / name).unlink(missing_ok=True)

    lines = [f"# {title}", ""] + (header or []) + judge_card_lines(judge_card, judge_card_missing)
    lines += ["## How to read this report", "", HOW_TO_READ, ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {_one_line(note)}" for note in notes] + [""]

    for section, names in shown:
        lines += _section_lines(section, names, columns, metrics, paper, judge_card)
        if plots[f"metrics-{section.slug}.png"]:
            lines += [f"![{section.title} per column](metrics-{section.slug}.png)", ""]
    if not shown:
        lines += ["## Metrics", "", "No metrics were measured.", ""]
    if persona_sets:
        lines += _persona_set_lines(persona_sets)

    if plots["score_distributions.png"]:
        lines += ["## Critic scores", ""]
        if thresholds:
            cuts = ", ".join(f"{name} {value:g}" for name, value in sorted(thresholds.items()))
            lines += [f"Dashed lines: the filter thresholds ({cuts}); a candidate fails at or above one.", ""]
        lines += ["![Critic score distributions](score_distributions.png)", ""]

    pass_columns = [column for column in columns if pass_rates.get(column)]
    lines += ["## Pass rates", ""]
    if pass_columns:
        experts = pass_order({expert for column in pass_columns for expert in pass_rates[column]})
        rows = [
            [expert + (AT_CHANCE_MARK if at_chance(judge_card, expert) else "")]
            + [_format_number(pass_rates[c].get(expert)) for c in pass_columns]
            for expert in experts
        ]
        lines += _blind_lines(judge_card, experts)
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
        # Every metric in exactly one section, measured or not (the markdown shows only measured sections).
        "sections": {section.slug: names for section, names in groups},
    }
    if persona_sets:
        payload["persona_sets"] = persona_sets
    if judge_card:
        payload["judge_card"] = {entry["name"]: entry["verdict"] for entry in judge_card.get("entries", [])}
    (report_dir / "metrics.json").write_text(
        json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return report_path
