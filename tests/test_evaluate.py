"""The evaluate stage's orchestration: which measurements run, on what, with which models (loaded only when used)."""

import math

import pytest

from spc_train.configs import EvaluationConfig, RecipeError, parse_recipe
from spc_train.evaluation.evaluate import Evaluators, answer_options, evaluate_dataset, toxicity_metrics


def record(pair_id: str, *lines: str, persona=("I love dogs.", "I am a nurse.")) -> dict:
    turns = [{"speaker": 1 + i % 2, "text": line} for i, line in enumerate(lines)]
    return {"pair_id": pair_id, "user1_persona": list(persona), "user2_persona": list(persona), "turns": turns}


SEED = [record(f"p{i}", f"hello number {i}", f"my dogs are {i} years old", f"a nurse at night {i}") for i in range(8)]
GENERATED = [record(f"p{i}", f"hi there {i}", f"i love my {i} dogs", f"nursing is hard {i}") for i in range(8)]


class Never:
    """A loader that fails the test if a measurement that was not asked for loads its model."""

    def __init__(self, what: str):
        self.what = what

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"{self.what} was loaded but not asked for")


def test_toxicity_buckets_hand_example():
    metrics = toxicity_metrics([0.1, 0.15, 0.5, 0.9, float("nan")], threshold=0.5)
    assert (
        metrics["toxicity_weak"] == 0.5 and metrics["toxicity_medium"] == 0.25 and metrics["toxicity_strong"] == 0.25
    )
    assert metrics["toxicity_rate"] == 0.5  # 0.5 and 0.9 reach the threshold; NaN (not scored) is not counted
    assert metrics["toxicity_mean"] == pytest.approx((0.1 + 0.15 + 0.5 + 0.9) / 4)
    assert all(math.isnan(v) for v in toxicity_metrics([], 0.5).values())


def test_only_asked_measurements_run_and_load_models():
    config = EvaluationConfig(measurements=["statistics", "next_utterance"], ir_candidates=5)
    evaluators = Evaluators(judge=Never("judge"), embed=Never("embedder"), toxicity=Never("toxicity"))
    metrics = evaluate_dataset(GENERATED, config=config, evaluators=evaluators, reference=SEED)
    assert metrics["conversations"] == 8 and metrics["turns_per_conversation"] == 3
    assert {k for k in metrics if k.startswith("ir_")} == {
        "ir_seed_to_self_none",
        "ir_seed_to_self_persona",
        "ir_self_to_seed_none",
        "ir_self_to_seed_persona",
    }
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.startswith("ir_"))
    assert not any(k.startswith(("detection", "extraction", "llm_", "gpt_", "g_eval", "toxicity")) for k in metrics)


def test_too_little_data_for_next_utterance_prediction_is_nan_not_a_crash(caplog):
    config = EvaluationConfig(measurements=["next_utterance"], ir_candidates=50)
    metrics = evaluate_dataset(GENERATED, config=config, evaluators=Evaluators(), reference=SEED)
    assert all(math.isnan(metrics[k]) for k in metrics) and len(metrics) == 4
    assert "not measured" in caplog.text


def test_stored_critic_toxicity_scores_are_used_instead_of_a_second_pass():
    config = EvaluationConfig(measurements=["toxicity"])
    evaluators = Evaluators(toxicity=Never("toxicity backend"))
    metrics = evaluate_dataset(GENERATED[:2], config=config, evaluators=evaluators, toxicity_scores=[0.1, 0.95])
    assert metrics["toxicity_rate"] == 0.5 and metrics["toxicity_strong"] == 0.5
    seen = []
    evaluators = Evaluators(toxicity=lambda records: seen.append(len(records)) or [0.0] * len(records))
    evaluate_dataset(SEED, config=config, evaluators=evaluators)
    assert seen == [8]  # the seed has no stored scores: the backend scores it once


class FixedJudge:
    """Answers every question with the same distribution over however many options it is asked for."""

    def __init__(self):
        self.questions = 0

    def option_probabilities(self, questions, options, examples=()):
        self.questions += len(questions)
        return [[1.0] + [0.0] * (len(options) - 1) for _ in questions]


def test_detection_needs_a_reference_and_judged_conversations_are_capped():
    judge = FixedJudge()
    config = EvaluationConfig(measurements=["detection"], judged_conversations=4)
    metrics = evaluate_dataset(GENERATED, config=config, evaluators=Evaluators(judge=lambda: judge), reference=SEED)
    assert metrics["detection_items"] == 4 and judge.questions == 8  # both orders of 4 capped pairs
    # Always "1" = position bias only: every pair is a tie.
    assert metrics["detection_tie"] == 1.0
    assert "detection_lose" not in evaluate_dataset(SEED, config=config, evaluators=Evaluators(judge=lambda: judge))


def test_recipe_rejects_an_unknown_measurement_and_lists_answers_to_check():
    with pytest.raises(RecipeError, match="detektion"):
        parse_recipe(None, ["--evaluation.measurements", "statistics", "detektion"])
    options = answer_options(EvaluationConfig(measurements=["detection", "extraction"]))
    assert options == ["1", "2", "Yes", "No"]
    assert answer_options(EvaluationConfig(measurements=["statistics", "embedding"])) == []
