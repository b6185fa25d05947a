"""LoRA SFT on critic-selected conversations moves the generator toward the critic (the loop's whole point).

The critic here has a preference the tiny generator can learn in one iteration: the length of its utterances
(words per turn, as a filter score in [0, 1]: lower is better). Tried first and too weak for the tiny generator:
a persona word (too rare in its samples for 16 selected conversations to teach it), ending early (it almost
always runs to the token budget) and who opens the conversation (iteration 1 drifted the same way under both
critics, so that move was not the selection's). Everything else is the real loop: generation, the expert
registry, selection, TRL SFT of a LoRA adapter, generation with that adapter, and the evaluate stage's mean critic
score. Prompts are zero-shot at both iterations and the few-shot pool does not grow, so only the adapter differs
between them; and under the opposite critic the same loop does not shorten utterances, so it is the selection,
not SFT as such, that steers.
"""

import pytest
from conftest import REPO

import spc_train.critic.registry as registry
from spc_train.configs import parse_recipe
from spc_train.loop import Loop
from spc_train.runs import read_stage

pytestmark = pytest.mark.slow

WORDS = 30  # words per turn that score 1.0
# Measured on the test's tiny models (mean words per turn / 30): 0.386 -> 0.296 under the short-preferring critic;
# 0.386 -> 0.404 under the long-preferring one; the two iteration-1 means are 0.108 apart.
MARGIN = 0.03


class UtteranceLengthCritic:
    """A filter expert: mean words per turn / WORDS (capped at 1), or its complement when `reverse`."""

    kind = "filter"

    def __init__(self, name: str, reverse: bool = False):
        self.name, self.reverse = name, reverse

    def score(self, candidates: list[dict]) -> list[float]:
        scores = []
        for candidate in candidates:
            turns = candidate["turns"] if candidate["parsed"] else []
            share = min(1.0, sum(len(t["text"].split()) for t in turns) / len(turns) / WORDS) if turns else 1.0
            scores.append(1.0 - share if self.reverse else share)
        return scores


def run_loop(tiny_models, run_dir, monkeypatch, reverse: bool) -> list[float]:
    """Two iterations with the length critic standing in for faithfulness; its mean score per iteration."""
    monkeypatch.setitem(registry.EXPERTS, "faithfulness", lambda name, *_: UtteranceLengthCritic(name, reverse))
    overrides = {
        "model.name_or_path": tiny_models / "generator",
        "critic.toxicity_model": tiny_models / "toxicity",
        "personas.nli_model": tiny_models / "nli",
        "evaluation.measurements": "statistics",  # the critic's mean is what this test reads
        "personas.source": "seed",
        "generation.num_candidates": 8,
        "generation.few_shot_examples": 0,
        "critic.experts": "faithfulness",
        "critic.faithfulness_threshold": 1.01,  # every candidate passes: the critic ranks, selection keeps the best
        "training.learning_rate": 5e-3,
        "training.max_steps": 60,
        "training.save_strategy": "no",
        "loop.grow_pool": "false",
        "loop.tiny_models_dir": "",
    }
    args = [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
    recipe = parse_recipe(str(REPO / "recipes" / "tiny" / "loop.yaml"), args)
    Loop(recipe, run_dir).run_all()
    return [read_stage(run_dir / f"iter-{k:02d}" / "eval")["metrics"]["faithfulness_mean"] for k in (0, 1)]


def test_lora_sft_moves_the_generator_toward_the_critic(tiny_models, tmp_path, monkeypatch):
    before, after = run_loop(tiny_models, tmp_path / "prefers-short", monkeypatch, reverse=False)
    assert after < before - MARGIN, f"mean critic score (lower is better) {before:.3f} -> {after:.3f}"

    # Control: the same loop under the opposite critic does not shorten utterances: it is the selection that steers.
    long_before, long_after = run_loop(tiny_models, tmp_path / "prefers-long", monkeypatch, reverse=True)
    assert long_before == pytest.approx(1.0 - before)  # the same samples at iteration 0: only the critic differs
    assert long_after <= long_before, f"mean critic score (lower is better) {long_before:.3f} -> {long_after:.3f}"
    assert (1.0 - long_after) - after > 2 * MARGIN  # words per turn at iteration 1: long critic vs short critic
