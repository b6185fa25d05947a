"""Stages as rooms: a stage's fingerprint follows from the fields it declares, and from nothing else.

The walk changes every field of every recipe section, one at a time, to another valid value and plans the loop
(`Loop.plan`, which loads no model): exactly the stages that read the field change fingerprint, plus the stages
downstream of them, and no others. Fields that make no output are listed in `stage.NO_OUTPUT`, with the reason.
"""

import dataclasses
from pathlib import Path

import pytest

from spc_train.configs import SECTIONS, FieldValueError, parse_recipe
from spc_train.loop import STAGES, Loop
from spc_train.stage import NO_OUTPUT, makes_no_output, selected

ROOT = Path(__file__).resolve().parents[1]
# The tiny demo recipe, with every kind of expert and measurement, so that every model role is scheduled.
OVERRIDES = [
    "--critic.experts",
    "faithfulness",
    "faithfulness_nli",
    "toxicity",
    "persona_grounding",
    "depth",
    "coherency",
    "--critic.nli_model",
    "tiny-models/nli",
    "--referee.held_out_pairs",
    "2",
    "--referee.name_or_path",
    "tiny-models/referee",
]
# Values for fields whose type alone does not give another valid one.
ALTERNATIVES = {
    "seed.format": "spc-csv",
    "critic.experts": ["faithfulness", "toxicity", "depth"],
    "evaluation.measurements": ["statistics", "embedding"],
    "evaluation.llm_judge_families": ["llm_eval"],
    "model.lora_target_modules": ["q_proj", "v_proj"],
    "critic.persona_grounding_threshold": 0.3,
    "personas.source": "seed",
    "generation.truncated": "reject",
    "generation.backend": "continuous",
    "critic.persona_grounding_role": "filter",
    "critic.faithfulness_phrasing": "consistent",
    "loop.update": "fresh",
    "referee.criteria": ["naturalness"],
    "referee.mode": "pointwise",
    "loop.on_blind_judge": "stop",
    "loop.report_to": ["tensorboard"],
    "hub.repo_id": "org/data",
    "hub.model_repo_id": "org/model",
    "model.load_in_4bit": None,  # with a GGUF file or on CPU it is refused: the spec's identity covers it anyway
}


@pytest.fixture(scope="module")
def recipe():
    return parse_recipe(ROOT / "recipes" / "tiny" / "loop.yaml", OVERRIDES)


def candidates(value, choices=()):
    """Other values of `value`'s kind, most likely valid first."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, max(2, value // 2)]
    if isinstance(value, float):
        return [round(value * 0.9, 6), round(value + 0.01, 6), 0.5, 2.0]
    if isinstance(value, str):
        return [c for c in choices if c != value] + [value + "-other"]
    if isinstance(value, list):
        return [value[:-1], value + ["q_proj"]] if value else [["q_proj"]]
    return [1, 0.5, "other", True]  # None: any set value


def changed(recipe, section: str, name: str):
    """The recipe with `section.name` changed to another valid value (None if there is none)."""
    path = f"{section}.{name}"
    if section == "training":
        value = recipe.training[name]
        options = [ALTERNATIVES[path]] if path in ALTERNATIVES else candidates(value)
        for option in options:
            if option != value:
                return dataclasses.replace(recipe, training={**recipe.training, name: option})
        return None
    current = getattr(recipe, section)
    value = getattr(current, name)
    choices = ()
    if name in ("dtype",):
        choices = ("float32", "bfloat16", "float16", "auto")
    options = [ALTERNATIVES[path]] if path in ALTERNATIVES else candidates(value, choices)
    for option in options:
        if option is None or option == value:
            continue
        try:
            return dataclasses.replace(recipe, **{section: dataclasses.replace(current, **{name: option})})
        except (FieldValueError, TypeError, ValueError):
            continue
    return None


def every_field(recipe):
    for section, cls in SECTIONS.items():
        names = list(recipe.training) if cls is None else [f.name for f in dataclasses.fields(cls)]
        for name in names:
            yield section, name


def reads(entry: dict, path: str) -> bool:
    section = path.partition(".")[0]
    return not makes_no_output(path) and any(read in (path, section) for read in entry["reads"])


def expected_changes(before: dict, after: dict, path: str) -> set[str]:
    """The stages that read `path` (or appear or go), then, in loop order, every stage reading a changed one."""
    labels = list(dict.fromkeys([*before, *after]))
    changed = {label for label in labels if label not in before or label not in after}
    changed |= {
        label for label in labels if any(reads(plan[label], path) for plan in (before, after) if label in plan)
    }
    for label in labels:
        inputs = {i for plan in (before, after) if label in plan for i in plan[label]["inputs"]}
        if inputs & changed:
            changed.add(label)
    return changed


def test_every_field_changes_exactly_the_stages_that_read_it_and_those_downstream(recipe, tmp_path):
    before = Loop(recipe, tmp_path).plan()
    unread, untested = [], []
    for section, name in every_field(recipe):
        path = f"{section}.{name}"
        other = changed(recipe, section, name)
        if other is None:
            untested.append(path)
            continue
        after = Loop(other, tmp_path).plan()
        actual = {
            label
            for label in {*before, *after}
            if label not in before or label not in after or before[label]["fingerprint"] != after[label]["fingerprint"]
        }
        assert actual == expected_changes(before, after, path), path
        if not makes_no_output(path) and not actual:
            unread.append(path)
    assert unread == [], f"fields no stage reads and NO_OUTPUT does not list: {unread}"
    assert untested == ["model.load_in_4bit"]  # see ALTERNATIVES


def test_no_output_fields_are_fields_with_a_reason():
    sections = {**{name: cls for name, cls in SECTIONS.items()}}
    for path, reason in NO_OUTPUT.items():
        section, _, name = path.partition(".")
        assert section in sections and len(reason) > 20
        if name and sections[section] is not None:
            assert name in {f.name for f in dataclasses.fields(sections[section])}


def test_sampling_settings_re_run_the_users_built_with_the_generator(recipe, tmp_path):
    """Regression: persona expansion and the profiles' negations sample through the generator, and a new
    temperature or top-k re-ran only `generate`."""
    before = Loop(recipe, tmp_path).plan()
    generation = dataclasses.replace(recipe.generation, temperature=1.3, top_k=5)
    after = Loop(dataclasses.replace(recipe, generation=generation), tmp_path).plan()
    for label in ("personas", "profiles", "pairs", "iter-00/candidates"):
        assert before[label]["fingerprint"] != after[label]["fingerprint"], label
    assert before["seed"]["fingerprint"] == after["seed"]["fingerprint"]


def test_judge_context_re_runs_every_evaluation(recipe, tmp_path):
    """Regression: the evaluation's judges truncate at `critic.judge_context`, and changing it re-ran the critique
    but not `evaluate-seed`, so the report's seed column was measured under other judge settings."""
    before = Loop(recipe, tmp_path).plan()
    critic = dataclasses.replace(recipe.critic, judge_context=512)
    after = Loop(dataclasses.replace(recipe, critic=critic), tmp_path).plan()
    for label in ("eval", "iter-00/eval", "iter-01/eval", "iter-00/critiques"):
        assert before[label]["fingerprint"] != after[label]["fingerprint"], label
    assert before["iter-00/candidates"]["fingerprint"] == after["iter-00/candidates"]["fingerprint"]


def test_a_stage_sees_only_the_fields_it_declares(recipe):
    """The selection a stage's work receives: declared fields as in the recipe, every other at its default."""
    view = selected(recipe, STAGES["select"].reads)
    assert view.critic.faithfulness_threshold == recipe.critic.faithfulness_threshold == 0.55
    assert view.critic.judge_context is None and view.generation.temperature == 0.7  # defaults, not the recipe's
    assert view.loop.seed == 42 and view.model.name_or_path is None and view.training == {}
    view = selected(recipe, ("generation",))
    assert view.generation == recipe.generation


def test_thresholds_re_run_only_select_and_what_follows(recipe, tmp_path):
    before = Loop(recipe, tmp_path).plan()
    critic = dataclasses.replace(recipe.critic, faithfulness_threshold=0.6)
    after = Loop(dataclasses.replace(recipe, critic=critic), tmp_path).plan()
    moved = [label for label in before if before[label]["fingerprint"] != after[label]["fingerprint"]]
    # the judge card's selector probe selects with the recipe's thresholds; no judge is asked again downstream
    assert moved[:3] == ["probes", "iter-00/selected", "iter-00/train"]
    assert "iter-00/critiques" not in moved and "eval" not in moved


def test_the_cli_lists_every_stage_with_its_iteration_flag():
    from spc_train import cli

    assert cli.STAGES == {command: stage.per_iteration for command, stage in STAGES.items()}
