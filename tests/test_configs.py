"""Recipes: every shipped recipe parses; typos name their key and section; overrides reach the right field."""

from pathlib import Path

import pytest

from spc_train.configs import RecipeError, parse_recipe, save_recipe

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
    [("generation", "backend", "continous", "generate, continuous"), ("loop", "update", "restart", "`fresh`")],
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
