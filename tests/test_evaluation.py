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
from spc_train.evaluation.report import write_report

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
    for name in ("metrics.png", "score_distributions.png", "pass_rates.png"):
        assert f"]({name})" in text
        data = (tmp_path / "report" / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5_000

    def reject(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    payload = json.loads((tmp_path / "report" / "metrics.json").read_text(), parse_constant=reject)
    assert payload["columns"] == ["seed", "iter-00", "iter-01"]
    assert list(payload["metrics"]["conversations"]) == ["seed", "iter-00", "iter-01"]
    assert payload["metrics"]["conversations"]["seed"] == 300
    assert payload["metrics"]["distinct_2"]["iter-01"] is None
    assert payload["metrics"]["faithfulness_mean"]["seed"] is None
    assert payload["pass_rates"]["iter-01"] == {"faithfulness": 0.75, "len|dup": 1.0, "toxicity": 0.95}

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
    assert "](metrics.png)" in text

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
