"""Recipes: every shipped recipe parses; typos name their key and section; overrides reach the right field."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from spc_train.configs import SECTIONS, RecipeError, parse_recipe, save_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=[p.parent.name + "/" + p.name for p in RECIPES])
def test_every_recipe_parses(path):
    recipe = parse_recipe(path)
    assert recipe.model.name_or_path
    assert recipe.seed.path
    assert recipe.loop.iterations >= 1
    assert recipe.generation.top_k == 40 and recipe.generation.temperature == 0.7  # the paper's sampling


def test_recipes_exist():
    names = {p.parent.name for p in RECIPES}
    assert {"tiny", "qwen2.5-1.5b-instruct"} <= names


def test_unknown_key_names_key_section_and_file(tmp_path):
    path = write(tmp_path, "generation:\n  temprature: 0.9\n")
    with pytest.raises(RecipeError) as error:
        parse_recipe(path)
    message = str(error.value)
    assert "'temprature'" in message and "'generation'" in message and str(path) in message
    assert "temperature" in message  # the suggestion


def test_unknown_section(tmp_path):
    with pytest.raises(RecipeError, match="section 'genration'.*Did you mean 'generation'"):
        parse_recipe(write(tmp_path, "genration:\n  top_k: 4\n"))


def test_training_unknown_field_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="'max_seq_length' in section 'training'"):
        parse_recipe(write(tmp_path, "training:\n  max_seq_length: 3\n"))
    recipe = parse_recipe(write(tmp_path, "training:\n  max_length: 321\n  learning_rate: 0.5\n  bf16: false\n"))
    assert recipe.training["max_length"] == 321 and recipe.training["learning_rate"] == 0.5
    assert recipe.sft_config(output_dir="x").max_length == 321


def test_command_line_overrides(tmp_path):
    path = write(tmp_path, "generation:\n  top_k: 10\nmodel:\n  lora_r: 4\n")
    recipe = parse_recipe(
        path, ["--generation.top_k", "20", "--lora_alpha", "64", "--critic.experts", "toxicity", "depth"]
    )
    assert recipe.generation.top_k == 20
    assert recipe.model.lora_r == 4 and recipe.model.lora_alpha == 64
    assert recipe.critic.experts == ["toxicity", "depth"]
    assert parse_recipe(path, ["--generation.top_k=7"]).generation.top_k == 7


def test_ambiguous_and_unknown_overrides(tmp_path):
    path = write(tmp_path, "{}\n")
    with pytest.raises(RecipeError, match="several sections .*training.*loop"):
        parse_recipe(path, ["--seed", "3"])
    assert parse_recipe(path, ["--loop.seed", "3"]).loop.seed == 3
    with pytest.raises(RecipeError, match="key 'top_kk' in section 'generation'"):
        parse_recipe(path, ["--generation.top_kk", "3"])
    with pytest.raises(RecipeError, match="Unexpected argument"):
        parse_recipe(path, ["stray"])


def test_bad_value_names_section(tmp_path):
    with pytest.raises(RecipeError, match="section 'generation'"):
        parse_recipe(write(tmp_path, "{}\n"), ["--generation.num_candidates", "many"])


@pytest.mark.parametrize(
    ("section", "field", "value", "choices"),
    [("generation", "backend", "continous", "generate, continuous"), ("loop", "update", "restart", "continue, fresh")],
)
def test_a_choice_outside_its_options_names_them(tmp_path, section, field, value, choices):
    with pytest.raises(RecipeError, match=f"section '{section}'.*{field} must be .*{choices}.*'{value}'"):
        parse_recipe(write(tmp_path, f"{section}:\n  {field}: {value}\n"))


def test_gpu_recipe_parses_on_cpu_but_builds_where_it_trains(tmp_path):
    recipe = parse_recipe(write(tmp_path, "training:\n  bf16: true\n"))
    assert recipe.training["bf16"] is True  # kept as written, not silently switched off
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16"):
            recipe.sft_config(output_dir=str(tmp_path))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="Recipe not found"):
        parse_recipe(tmp_path / "nope.yaml")


def test_saved_recipe_round_trips(tmp_path):
    recipe = parse_recipe(RECIPES[0], ["--generation.top_p", "0.9"])
    save_recipe(recipe, tmp_path / "resolved.yaml")
    assert parse_recipe(tmp_path / "resolved.yaml").to_dict() == recipe.to_dict()


def test_judge_defaults_to_generator_base(tmp_path):
    recipe = parse_recipe(write(tmp_path, "model:\n  name_or_path: some/model\n  adapter: some/adapter\n"))
    assert recipe.judge_spec().name_or_path == "some/model" and recipe.judge_spec().adapter is None
    other = parse_recipe(write(tmp_path, "model:\n  name_or_path: a/b\njudge:\n  name_or_path: c/d\n"))
    assert other.judge_spec().name_or_path == "c/d"


# -- values checked where they are parsed ---------------------------------------------------------------------------

# Bad values for every field of every section but `training` (TRL's own). A new field needs a row here.
BAD_VALUES = {
    "generation.truncated": ["drop"],
    "generation.repetition_penalty": [0],
    "generation.no_repeat_ngram_size": [-1],
    "critic.embedder": [""],
    "critic.persona_grounding_threshold": [-0.1, 1.5],
    "critic.persona_grounding_role": ["rank"],
    "critic.faithfulness_phrasing": ["contradicts", "Consistent"],
    "seed.path": [3],
    "seed.format": ["csv"],
    "seed.split": [["train"]],
    "seed.max_conversations": [0, 2.5],
    "seed.strict": [3],
    "seed.normalize_names": [3],
    **{
        f"{section}.{name}": values
        for section in ("model", "judge", "referee")
        for name, values in {
            "name_or_path": [3],
            "revision": [1.5],
            "dtype": ["fp16"],
            "attn_implementation": [3],
            "load_in_4bit": [3],
            "adapter": [["a", "b"]],
            "trust_remote_code": [3],
            "gguf_file": [3],
        }.items()
    },
    "model.lora_r": [0],
    "model.lora_alpha": [0, -16],
    "model.lora_dropout": [-0.1, 1.0],
    "model.lora_target_modules": [[], "q_proj"],
    "personas.distance_threshold": [0, 2.5],
    "personas.attributes_per_query_prompt": [0],
    "personas.query_bootstrap_steps": [-1],
    "personas.queries_per_prompt": [0],
    "personas.attributes_per_persona_prompt": [0],
    "personas.target_new_attributes": [-1],
    "personas.max_bootstrap_steps": [-1],
    "personas.dedup_threshold": [0, 1.5],
    "personas.min_words": [0],
    "personas.max_words": [2],  # below the default min_words (3)
    "personas.batch_size": [0],
    "personas.source": ["all"],
    "personas.num_pairs": [0],
    "personas.embedder": [""],
    "personas.nli_model": [3],
    "personas.num_profiles": [0],
    "personas.profile_size": [0],
    "personas.redundancy_threshold": [-0.1, 1.1],
    "personas.entailment_threshold": [1.5],
    "personas.max_attempts": [0],
    "personas.min_shared": [-1],
    "personas.partners_per_user": [0],
    "personas.max_new_tokens": [0],
    "generation.num_candidates": [0],
    "generation.few_shot_examples": [-1],
    "generation.zero_shot_with_adapter": [3],
    "generation.max_new_tokens": [0],
    "generation.temperature": [0, -0.7],
    "generation.top_k": [0, 4.5],
    "generation.top_p": [0, 1.5],
    "generation.max_prompt_tokens": [0],
    "generation.batch_tokens": [0],
    "generation.shard_size": [0],
    "generation.min_turns": [0],
    "generation.backend": ["continous"],
    "critic.experts": [["depth", "depth"], "depth"],
    "critic.faithfulness_threshold": [-0.1],
    "critic.nli_model": [3],
    "critic.faithfulness_nli_threshold": [-0.5],
    "critic.toxicity_threshold": [-1],
    "critic.toxicity_model": [3],
    "critic.judge_context": [0],
    "critic.batch_tokens": [0],
    "critic.shard_size": [0],
    "critic.min_option_mass": [-0.1, 1.5],
    "critic.probe_informative": [0.5, 1.2],  # under probe_weak (0.6), over 1
    "critic.probe_weak": [-0.1],
    "critic.probe_conversations": [1],
    "evaluation.measurements": [["statistics", "detektion"]],
    "evaluation.judged_conversations": [0],
    "evaluation.llm_judge_families": [["g_eval", "gpt4"]],
    "evaluation.extraction_threshold": [1.5],
    "evaluation.ir_candidates": [1],
    "loop.iterations": [0],
    "loop.seed": [-1, 2**32],
    "loop.train": [3],
    "loop.update": ["restart"],
    "loop.grow_pool": [3],
    "loop.replay_seed": [-1, 2.5],
    "loop.replay_max_tokens": [0, 2.5],
    "loop.tiny_models_dir": [3],
    "loop.on_blind_judge": ["ignore"],
    "loop.report_to": [["tensorbord"], ["none", "wandb"], 3],
    "hub.repo_id": ["justname", "a/b/c"],
    "hub.model_repo_id": ["bad id/x"],
    "hub.private": [3],
    "hub.include_candidates": [3],
    "referee.held_out_pairs": [-1, 2.5],
    "referee.criteria": [[], ["naturalness", "fluency"]],
    "referee.mode": ["both"],
    "referee.margin": [-0.1, 1.0],
}
# Bounds owned by the critic registry, which `check_experts` applies (at `spc-train check` and before any work).
CHECKED_BY_THE_CRITIC = {"critic.faithfulness_examples"}
FIELDS = [f"{s}.{f.name}" for s, cls in SECTIONS.items() if cls for f in dataclasses.fields(cls)]


def test_every_field_has_bad_values():
    assert set(FIELDS) == set(BAD_VALUES) | CHECKED_BY_THE_CRITIC


@pytest.mark.parametrize(
    ("key", "value"), [(key, value) for key in FIELDS for value in BAD_VALUES.get(key, [])], ids=str
)
def test_a_bad_value_is_refused_in_one_line_naming_field_value_and_range(tmp_path, key, value):
    section, name = key.split(".")
    with pytest.raises(RecipeError) as error:
        parse_recipe(write(tmp_path, yaml.safe_dump({section: {name: value}})))
    message = str(error.value)
    assert "\n" not in message and f"section '{section}'" in message
    assert f"{key} must be " in message and message.endswith(f", got {value!r}.")


@pytest.mark.parametrize(("key", "value"), [("generation.top_k", 0), ("loop.iterations", 0), ("hub.repo_id", "x")])
def test_bad_values_on_the_command_line_too(key, value):
    with pytest.raises(RecipeError, match=f"{key} must be .*, got '?{value}'?"):
        parse_recipe(None, [f"--{key}", str(value)])


def test_values_on_the_edges_of_their_ranges_parse(tmp_path):
    edges = {
        "seed": {"max_conversations": 1},
        "model": {"lora_dropout": 0.0, "lora_r": 1, "dtype": "bfloat16"},
        "personas": {
            "min_shared": 0,
            "min_words": 4,
            "max_words": 4,
            "query_bootstrap_steps": 0,
            "target_new_attributes": 0,
            "dedup_threshold": 1,
        },
        "generation": {"few_shot_examples": 0, "top_p": 1.0, "top_k": 1, "temperature": 2, "max_prompt_tokens": None},
        "critic": {"faithfulness_threshold": 0.0, "toxicity_threshold": 1.01, "experts": []},  # above 1: off
        "evaluation": {"measurements": [], "ir_candidates": 2},
        "loop": {"seed": 0, "iterations": 1, "tiny_models_dir": ""},  # "": unset, as on the command line
        "hub": {"repo_id": "org/spc-data.v2"},
    }
    recipe = parse_recipe(write(tmp_path, yaml.safe_dump(edges)))
    assert recipe.section("generation")["top_p"] == 1.0 and recipe.personas.min_shared == 0
    assert recipe.critic.experts == [] and recipe.hub.repo_id == "org/spc-data.v2"


def test_the_critic_checks_its_own_bounds():
    from spc_train.configs import CriticConfig
    from spc_train.critic.registry import ExpertCheckError, check_experts

    with pytest.raises(ExpertCheckError, match="between 0 and 4"):
        check_experts(CriticConfig(experts=["faithfulness"], faithfulness_examples=5))
    with pytest.raises(ExpertCheckError, match="humour"):
        check_experts(CriticConfig(experts=["humour"]))


def test_option_lists_match_the_code_that_uses_them():
    from spc_train import configs
    from spc_train.data import FORMATS
    from spc_train.evaluation.llm_judge import FAMILIES
    from spc_train.models import torch_dtype

    assert configs.SEED_FORMATS == FORMATS and configs.LLM_JUDGE_FAMILIES == FAMILIES
    for name in configs.DTYPES:
        torch_dtype(name)


def test_a_wrongly_typed_command_line_value_is_one_line_not_usage(tmp_path, capsys):
    with pytest.raises(RecipeError) as error:
        parse_recipe(None, ["--generation.num_candidates", "many"])
    assert str(error.value) == (
        "Invalid value in section 'generation' of the recipe: generation.num_candidates: invalid int value: 'many'"
    )
    with pytest.raises(RecipeError, match=r"training.lr_scheduler_type: invalid choice: 'warmup' \(choose from"):
        parse_recipe(None, ["--training.lr_scheduler_type", "warmup"])
    with pytest.raises(RecipeError, match=r"section 'training'.*warmup is not a valid SchedulerType") as error:
        parse_recipe(write(tmp_path, "training:\n  lr_scheduler_type: warmup\n"))  # TRL's own check, one line
    assert "\n" not in str(error.value)
    assert "usage:" not in capsys.readouterr().err


def test_an_sft_config_error_is_one_line(tmp_path):
    text = "training:\n  load_best_model_at_end: true\n  save_strategy: steps\n  eval_strategy: epoch\n"
    with pytest.raises(RecipeError, match="section 'training'.*save and eval strategy to match") as error:
        parse_recipe(write(tmp_path, text))
    assert "\n" not in str(error.value)


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    path = write(tmp_path, "generation:\n  top_k: 40\n   temperature: 0.7\n")
    with pytest.raises(RecipeError) as error:
        parse_recipe(path)
    message = str(error.value)
    assert message == f"Invalid YAML in {path} at line 3, column 15: mapping values are not allowed here."
    path = write(tmp_path, "critic:\n  experts: [depth, likable\n")
    with pytest.raises(RecipeError, match=r"at line 3, column 1: expected ',' or '\]'.*flow sequence") as error:
        parse_recipe(path)
    assert "\n" not in str(error.value)
