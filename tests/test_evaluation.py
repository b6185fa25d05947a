import json
import math

import pytest

from spc_train.evaluation.metrics import (
    dataset_statistics,
    distinct_n,
    persona_word_overlap,
    score_summary,
    tokenize,
)
from spc_train.evaluation.paper import PAPER_REFERENCES
from spc_train.evaluation.report import OTHER, SECTIONS, group_metrics, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def _record(pair_id, persona1, persona2, texts):
    """Turns alternate speakers 1, 2, 1, ..."""
    turns = [{"speaker": 1 + i % 2, "text": text} for i, text in enumerate(texts)]
    return {"pair_id": pair_id, "user1_persona": persona1, "user2_persona": persona2, "turns": turns}


# Record A: speaker 1 mentions "hiking" (1/1), speaker 2 never says "chef" (0/1) -> overlap 0.5.
RECORD_A = _record("a", ["I love hiking."], ["I am a chef."], ["I went hiking today.", "Nice, I cooked dinner."])
# Record B: speaker 1 says "guitar" (1/1), speaker 2 says "cats" (1/1) -> overlap 1.0. The bigram "i like" repeats.
RECORD_B = _record(
    "b", ["I play guitar."], ["I like cats."], ["Hello there", "I like cats", "I play guitar", "I like dogs"]
)


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("Don't STOP, 'me' now!") == ["don't", "stop", "me", "now"]


def test_distinct_n_hand_example():
    utterances = ["The cat sat.", "the CAT ran!"]
    # unigrams: the cat sat the cat ran -> 4 unique / 6
    assert distinct_n(utterances, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat) (cat sat) (the cat) (cat ran) -> 3 unique / 4
    assert distinct_n(utterances, 2) == pytest.approx(3 / 4)


def test_distinct_n_does_not_cross_utterances_and_handles_empty():
    # Within utterances: (x y), (x y) -> 1/2. Crossing the boundary would add (y x) and give 2/3.
    assert distinct_n(["x y", "x y"], 2) == pytest.approx(1 / 2)
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "!!"], 1) == 0.0
    assert distinct_n(["one"], 2) == 0.0


def test_persona_word_overlap_hand_example():
    record = _record(
        "p",
        # content words: {hiking, mountains} and {two, cats}; "love" is a stop word and must not match.
        ["I love hiking in the mountains.", "I love my two cats."],
        ["I am a chef."],
        ["I love the outdoors, we went hiking!", "My cats? No, I'm a chef."],
    )
    # Speaker 1: 1 of 2 attributes (speaker 2 saying "cats" does not count for speaker 1); speaker 2: 1 of 1.
    assert persona_word_overlap(record) == pytest.approx((1 / 2 + 1 / 1) / 2)


def test_persona_word_overlap_without_personas_is_nan():
    assert math.isnan(persona_word_overlap(_record("p", [], [], ["hello"])))
    # One speaker without persona is left out of the average instead of counting as 0.
    assert persona_word_overlap(_record("p", ["I love hiking."], [], ["hiking!"])) == 1.0


def test_dataset_statistics_exact_values():
    stats = dataset_statistics([RECORD_A, RECORD_B])
    assert list(stats) == [
        "conversations",
        "turns_per_conversation",
        "words_per_utterance",
        "distinct_1",
        "distinct_2",
        "persona_word_overlap",
    ]
    assert stats["conversations"] == 2
    assert stats["turns_per_conversation"] == pytest.approx(6 / 2)
    # words per utterance: 4, 4, 2, 3, 3, 3
    assert stats["words_per_utterance"] == pytest.approx(19 / 6)
    # 19 tokens; unique: i went hiking today nice cooked dinner hello there like cats play guitar dogs
    assert stats["distinct_1"] == pytest.approx(14 / 19)
    # bigrams 3 + 3 + 1 + 2 + 2 + 2 = 13, "i like" twice
    assert stats["distinct_2"] == pytest.approx(12 / 13)
    assert stats["persona_word_overlap"] == pytest.approx((0.5 + 1.0) / 2)


def test_dataset_statistics_empty():
    stats = dataset_statistics([])
    assert stats["conversations"] == 0
    assert len(stats) == 6
    assert all(math.isnan(value) for key, value in stats.items() if key != "conversations")


def test_score_summary_ignores_nan_and_missing():
    scores = [{"a": 0.2, "b": NAN}, {"a": 0.4}, {"b": 1.0, "c": NAN}, {}]
    summary = score_summary(scores)
    assert list(summary) == ["a_mean", "b_mean", "c_mean"]
    assert summary["a_mean"] == pytest.approx(0.3)
    assert summary["b_mean"] == pytest.approx(1.0)
    assert math.isnan(summary["c_mean"])
    assert score_summary([]) == {}


def _report_inputs():
    example = {
        "pair_id": "pair-7",
        "candidate": 2,
        "user1_persona": ["I like dogs.", "I am a nurse."],
        "user2_persona": ["I play guitar."],
        "turns": [
            {"speaker": 1, "text": "Hi! I walk my dogs\nevery day."},
            {"speaker": 2, "text": "Cool, I play guitar."},
        ],
        "scores": {"toxicity": 0.03, "faithfulness": 0.12},
    }
    return {
        "title": "Loop report",
        "columns": ["seed", "iter-00", "iter-01"],
        "metrics": {
            # keys deliberately not in column order: the table must follow `columns`
            "conversations": {"iter-01": 118, "seed": 300, "iter-00": 120},
            "distinct_2": {"seed": 0.5, "iter-00": 0.41234, "iter-01": NAN},
            "faithfulness_mean": {"iter-00": 0.12, "iter-01": None},
        },
        "score_distributions": {
            "iter-00": {"faithfulness": [0.1, 0.2, 0.3, 0.9], "toxicity": [0.0, 0.01, 0.2]},
            "iter-01": {"faithfulness": [0.05, 0.1, NAN], "toxicity": [0.0, 0.02]},
        },
        "pass_rates": {
            "iter-00": {"toxicity": 0.9, "faithfulness": 0.5, "len|dup": 1.0},
            "iter-01": {"toxicity": 0.95, "faithfulness": 0.75, "len|dup": 1.0},
        },
        "examples": {"iter-00": [example]},
        "notes": ["Generator: tiny-llama", "Judge: same model"],
    }


def test_write_report(tmp_path):
    path = write_report(tmp_path / "report", **_report_inputs())
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text(encoding="utf-8")

    assert text.startswith("# Loop report\n")
    assert "- Generator: tiny-llama" in text
    assert "| metric | seed | iter-00 | iter-01 |" in text
    assert "| conversations | 300 | 120 | 118 |" in text
    assert "| distinct_2 | 0.500 | 0.412 | – |" in text
    assert "| faithfulness_mean | – | 0.120 | – |" in text
    assert "| expert / filter | iter-00 | iter-01 |" in text
    assert "| faithfulness | 0.500 | 0.750 |" in text
    assert "| len\\|dup | 1.000 | 1.000 |" in text
    # example rendered readably; the newline inside a turn must not break the line
    assert "- I am a nurse." in text
    assert "**User 1:** Hi! I walk my dogs every day." in text
    assert "**User 2:** Cool, I play guitar." in text
    assert "faithfulness 0.120 · toxicity 0.030" in text
    # conversations and distinct_2 are dataset statistics, faithfulness_mean a critic score: one plot per section.
    assert [name for _, name in _sections(text)] == ["Dataset statistics", "Critic and training"]
    for name in ("metrics-statistics.png", "metrics-critic.png", "score_distributions.png", "pass_rates.png"):
        assert f"]({name})" in text
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == [
        "metrics-critic.png",
        "metrics-statistics.png",
        "pass_rates.png",
        "score_distributions.png",
    ]
    assert "| paper |" not in text

    def reject(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    payload = json.loads((tmp_path / "report" / "metrics.json").read_text(), parse_constant=reject)
    assert payload["columns"] == ["seed", "iter-00", "iter-01"]
    assert list(payload["metrics"]["conversations"]) == ["seed", "iter-00", "iter-01"]
    assert payload["metrics"]["conversations"]["seed"] == 300
    assert payload["metrics"]["distinct_2"]["iter-01"] is None
    assert payload["metrics"]["faithfulness_mean"]["seed"] is None
    assert payload["pass_rates"]["iter-01"] == {"faithfulness": 0.75, "len|dup": 1.0, "toxicity": 0.95}
    assert payload["sections"] == {"statistics": ["conversations", "distinct_2"], "critic": ["faithfulness_mean"]}

    # Same input, same markdown: no timestamps, stable orders.
    again = write_report(tmp_path / "again", **_report_inputs())
    assert again.read_text(encoding="utf-8") == text


def test_write_report_skips_plots_without_data(tmp_path):
    inputs = _report_inputs()
    write_report(tmp_path, **inputs)
    assert (tmp_path / "score_distributions.png").exists()

    # No scores and no pass rates this time: those plots are skipped and the stale PNGs removed.
    inputs.update(score_distributions={"iter-00": {"toxicity": []}, "iter-01": {"toxicity": [NAN]}}, pass_rates={})
    text = write_report(tmp_path, **inputs).read_text(encoding="utf-8")
    assert not (tmp_path / "score_distributions.png").exists()
    assert not (tmp_path / "pass_rates.png").exists()
    assert "score_distributions.png" not in text
    assert "pass_rates.png" not in text
    assert "](metrics-statistics.png)" in text

    # Nothing measured at all still writes a valid report.
    empty = write_report(
        tmp_path / "empty",
        title="Empty",
        columns=["seed"],
        metrics={"distinct_1": {"seed": None}},
        score_distributions={},
        pass_rates={},
        examples={},
    )
    assert ".png" not in empty.read_text(encoding="utf-8")
    assert not list((tmp_path / "empty").glob("*.png"))
    assert json.loads((tmp_path / "empty" / "metrics.json").read_text())["metrics"] == {"distinct_1": {"seed": None}}


def _sections(text):
    """(heading line index, heading) of the report's "## " headings, in order, for those with a metric table."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith("## ") and any(row.startswith("| metric |") for row in lines[index + 1 : index + 6]):
            found.append((index, line[3:]))
    return found


def _section_tables(text):
    """heading -> (table header cells, [row cells]) of each measurement section."""
    lines = text.splitlines()
    tables = {}
    for index, heading in _sections(text):
        start = next(i for i in range(index, len(lines)) if lines[i].startswith("| metric |"))
        rows = []
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        header = [cell.strip() for cell in lines[start].strip("|").split(" | ")]
        tables[heading] = (header, rows)
    return tables


# One metric per evaluator family, deliberately shuffled: rows must follow the sections, not this order.
SECTION_METRICS = {
    "held_out_words_mean": {"seed": 90.0, "iter-00": 60.0},  # before the critic's "_mean" suffix
    "gpt_score_fluency": {"seed": 40.0, "iter-00": 61.5},
    "referee_win_rate": {"iter-00": 0.75},
    "sft_loss": {"iter-00": 1.25},
    "detection_items": {"iter-00": 12},
    "my_new_metric": {"seed": 0.3, "iter-00": 0.4},
    "distinct_1": {"seed": 0.1, "iter-00": 0.2},
    "ir_self_to_seed_persona": {"seed": 0.3, "iter-00": 0.25},
    "toxicity_strong": {"seed": 0.01, "iter-00": 0.0},
    "faithfulness_selected_win_rate": {"iter-00": 0.6},
    "detection_lose": {"seed": None, "iter-00": 0.25},
    "extraction_recall": {"seed": 0.5, "iter-00": 0.4},
    "llm_eval_content": {"seed": 70.0, "iter-00": 75.5},
    "conversations": {"seed": 12, "iter-00": 12},
    "ir_seed_to_self_none": {"seed": 0.15, "iter-00": 0.2},
    "detection_tie": {"seed": None, "iter-00": 0.5},
    "toxicity_mean": {"seed": 0.05, "iter-00": 0.04},
    "extraction_precision": {"seed": 0.7, "iter-00": 0.8},
    "g_eval_coherent": {"seed": 2.5, "iter-00": 3.25},
    "detection_win": {"seed": None, "iter-00": 0.25},
    "llm_judge_conversations": {"seed": 12, "iter-00": 12},
    "candidates": {"iter-00": 48},
    "option_mass_llm_judge_mean": {"seed": 0.9, "iter-00": 0.85},  # before the critic's "_mean" suffix
    "toxicity_mean_unused": {"seed": 1.0},  # no prefix/suffix match: not a "_mean" suffix
}
EXPECTED_SECTIONS = {
    "Referee: iteration k against iteration 0 on held-out pairs": ["referee_win_rate", "held_out_words_mean"],
    "Dataset statistics": ["conversations", "distinct_1"],
    "Toxicity": ["toxicity_strong", "toxicity_mean"],
    "Next-utterance prediction (IR baseline, hit@1)": ["ir_seed_to_self_none", "ir_self_to_seed_persona"],
    "AI detection (the paper's Turing test, Table 3)": [
        "detection_lose",
        "detection_win",
        "detection_tie",
        "detection_items",
    ],
    "Faithfulness: profile extraction": ["extraction_precision", "extraction_recall"],
    "LLM-judge scores (Table 15 style)": [
        "llm_eval_content",
        "gpt_score_fluency",
        "g_eval_coherent",
        "llm_judge_conversations",
    ],
    "Judge option mass": ["option_mass_llm_judge_mean"],
    "Critic and training": ["candidates", "sft_loss", "faithfulness_selected_win_rate"],
    "Other metrics": ["my_new_metric", "toxicity_mean_unused"],
}


def _section_inputs(**overrides):
    inputs = {
        "title": "Sections",
        "columns": ["seed", "iter-00"],
        "metrics": SECTION_METRICS,
        "score_distributions": {},
        "pass_rates": {},
        "examples": {},
    }
    return inputs | overrides


def test_write_report_groups_metrics_into_sections_in_order(tmp_path):
    text = write_report(tmp_path, **_section_inputs()).read_text(encoding="utf-8")
    tables = _section_tables(text)
    assert list(tables) == list(EXPECTED_SECTIONS)  # SECTIONS order, "Other metrics" last
    assert {heading: [row[0] for row in rows] for heading, (_, rows) in tables.items()} == EXPECTED_SECTIONS
    # Every section comes before the critic score / pass-rate parts, with its own plot linked under its table.
    assert text.index("## Other metrics") < text.index("## Pass rates")
    slug_of = {section.title: section.slug for section in SECTIONS} | {OTHER.title: OTHER.slug}
    for heading, slug in ((heading, slug_of[heading]) for heading in tables):
        body = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
        assert f"](metrics-{slug}.png)" in body
        data = (tmp_path / f"metrics-{slug}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert not (tmp_path / "metrics.png").exists()

    header, rows = tables["AI detection (the paper's Turing test, Table 3)"]
    assert header == ["metric", "seed", "iter-00"]
    assert rows[0] == ["detection_lose", "–", "0.250"]
    assert rows[-1] == ["detection_items", "–", "12"]  # counts as integers
    assert tables["Dataset statistics"][1][0] == ["conversations", "12", "12"]
    assert tables["LLM-judge scores (Table 15 style)"][1][1] == ["gpt_score_fluency", "40.000", "61.500"]

    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["sections"] == {section.slug: EXPECTED_SECTIONS[section.title] for section in [*SECTIONS, OTHER]}
    assert list(payload["metrics"]) == list(SECTION_METRICS)  # unchanged shape and order


def test_group_metrics_first_match_wins_and_unknown_goes_to_other():
    groups = {section.slug: names for section, names in group_metrics(["toxicity_mean", "fed_mean", "zzz", "ir_x"])}
    # toxicity_mean is named by the toxicity section, which comes before the critic's "_mean" suffix.
    assert groups == {
        "toxicity": ["toxicity_mean"],
        "next_utterance": ["ir_x"],
        "critic": ["fed_mean"],
        "other": ["zzz"],
    }
    assert group_metrics([]) == []
    # Every paper reference names a metric of a real section.
    assert all(section.slug != "other" for section, _ in group_metrics(list(PAPER_REFERENCES)))


def test_write_report_omits_sections_without_measured_values(tmp_path):
    write_report(tmp_path, **_section_inputs())
    assert (tmp_path / "metrics-detection.png").exists()
    (tmp_path / "metrics.png").write_bytes(PNG_MAGIC)  # the single plot of older reports

    # Detection not measured this time (NaN, None, or a missing column): its section and PNG go.
    metrics = {name: row for name, row in SECTION_METRICS.items() if not name.startswith("detection_")}
    metrics |= {"detection_lose": {"seed": None, "iter-00": NAN}, "detection_win": {}}
    text = write_report(tmp_path, **_section_inputs(metrics=metrics)).read_text(encoding="utf-8")
    assert "## AI detection" not in text
    assert "metrics-detection.png" not in text
    assert not (tmp_path / "metrics-detection.png").exists()
    assert not (tmp_path / "metrics.png").exists()
    assert "## Toxicity" in text and (tmp_path / "metrics-toxicity.png").exists()
    # metrics.json still lists every metric, measured or not.
    assert json.loads((tmp_path / "metrics.json").read_text())["sections"]["detection"] == [
        "detection_lose",
        "detection_win",
    ]


def test_write_report_detection_plot_needs_outcomes(tmp_path):
    # Only the item count measured (no outcome shares): the section shows, but there is no bar to draw.
    metrics = {"detection_items": {"seed": None, "iter-00": 0}, "detection_lose": {"iter-00": NAN}}
    text = write_report(tmp_path, **_section_inputs(metrics=metrics)).read_text(encoding="utf-8")
    assert "## AI detection" in text
    assert not (tmp_path / "metrics-detection.png").exists()

    metrics["detection_lose"] = {"iter-00": 0.5}
    text = write_report(tmp_path, **_section_inputs(metrics=metrics)).read_text(encoding="utf-8")
    assert "](metrics-detection.png)" in text
    assert (tmp_path / "metrics-detection.png").read_bytes().startswith(PNG_MAGIC)


def test_write_report_paper_column_only_where_given(tmp_path):
    paper = {"detection_lose": "it.1 0.172 | T3", "distinct_9": "not a measured metric"}
    text = write_report(tmp_path, **_section_inputs(paper=paper)).read_text(encoding="utf-8")
    tables = _section_tables(text)
    for heading, (header, rows) in tables.items():
        if heading.startswith("AI detection"):
            assert header == ["metric", "seed", "iter-00", "paper"]
            assert rows[0][-1] == "it.1 0.172 \\| T3"  # escaped, still one cell
            assert all(len(row) == 4 for row in rows) and rows[1][-1] == ""
        else:
            assert header == ["metric", "seed", "iter-00"], heading
    assert "| --- | ---: | ---: | --- |" in text  # the paper text is left-aligned, numbers right-aligned

    # The module's references fill in the sections the paper covers, and no other.
    text = write_report(tmp_path, **_section_inputs(paper=PAPER_REFERENCES)).read_text(encoding="utf-8")
    with_paper = [heading for heading, (header, _) in _section_tables(text).items() if header[-1] == "paper"]
    assert with_paper == [
        "Toxicity",
        "Next-utterance prediction (IR baseline, hit@1)",
        "AI detection (the paper's Turing test, Table 3)",
        "Faithfulness: profile extraction",
        "LLM-judge scores (Table 15 style)",
    ]


def test_write_report_persona_sets_beside_the_papers_table_1(tmp_path):
    sets = {
        "seed": {"attributes": 481, "clusters": 91, "inter_cluster_distance": 0.7736, "mean_length_tokens": 7.69},
        "generated": {"attributes": 0, "clusters": 0, "inter_cluster_distance": 0.0, "mean_length_tokens": 0.0},
        "expanded": {"attributes": 481, "clusters": 91, "inter_cluster_distance": 0.7736, "mean_length_tokens": 7.69},
    }
    sets = dict(reversed(sets.items()))  # stored order (JSON keys sort) does not decide the rows
    text = write_report(tmp_path / "with", **_report_inputs(), persona_sets=sets).read_text(encoding="utf-8")
    lines = text.splitlines()
    start = lines.index("## Persona set (Table 1)")
    table = [line for line in lines[start:] if line.startswith("|")][: 2 + len(sets) + 2]
    header, _, *rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table]
    assert header == ["persona set", "attributes", "clusters", "inter-cluster distance", "mean length (tokens)"]
    assert rows == [
        ["seed", "481", "91", "0.774", "7.690"],
        ["generated", "0", "0", "–", "–"],
        ["expanded", "481", "91", "0.774", "7.690"],
        ["paper: Persona-Chat (seed)", "4723", "323", "0.836", "7.650"],
        ["paper: SPC (PC expanded)", "10371", "553", "0.863", "15.900"],
    ]
    payload = json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert payload["persona_sets"] == sets
    # A run that kept the seed users has no persona expansion, and no such section.
    text = write_report(tmp_path / "without", **_report_inputs()).read_text(encoding="utf-8")
    assert "Persona set" not in text
    assert "persona_sets" not in json.loads((tmp_path / "without" / "metrics.json").read_text())
