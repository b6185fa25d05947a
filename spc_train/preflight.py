"""What a run checks before any work (`spc-train check`, and the start of every run): that every model can be found,
the experts exist, the judge can write each answer option as one token, classifiers have their labels, the seed is
there and the Hub setting fits. A queued job would otherwise fail on these hours later, on a cluster."""

from __future__ import annotations

from pathlib import Path

from .configs import ModelSpec, Recipe, RecipeError
from .runs import StageInputError, read_stage


def check_recipe(recipe: Recipe, run_dir: str | Path | None = None) -> list[str]:
    """Every check, writing nothing and loading only tokenizers and config files; what the run would use, a line each.

    Models are looked for in local folders, the Hugging Face cache, or on the Hub when online; a GGUF model's file
    header is read, so a missing file or an architecture transformers cannot load from GGUF fails here. The seed path
    is not needed again once `run_dir` has imported it (a resumed or reproduced run).
    """
    from accelerate import PartialState

    from .critic.registry import check_experts, judge_options
    from .data import SeedDataError, guess_format
    from .evaluation.evaluate import answer_options
    from .judge import JudgeError, option_token_ids
    from .models import check_available, check_spec, load_tokenizer

    if recipe.loop.tiny_models_dir:
        from .tiny import tiny_models_ready

        if not tiny_models_ready(recipe.loop.tiny_models_dir):
            return [f"tiny models: not built yet; `spc-train loop` builds them in {recipe.loop.tiny_models_dir}"]
    check_spec(recipe.model, "generator")
    check_spec(recipe.judge_spec(), "judge")
    referee = check_referee(recipe)
    check_hardware(recipe)
    if (recipe.loop.replay_max_tokens or 0) > recipe.generation.max_new_tokens:
        raise RecipeError(
            f"loop.replay_max_tokens ({recipe.loop.replay_max_tokens}) is above generation.max_new_tokens "
            f"({recipe.generation.max_new_tokens}): the generator could not write such a replayed conversation. "
            "Lower it, or leave it unset for max_new_tokens."
        )
    toxicity_used = "toxicity" in recipe.critic.experts or "toxicity" in recipe.evaluation.measurements
    if recipe.critic.toxicity_model and toxicity_used:  # the critic's filter, and the evaluation's rate
        check_available(recipe.critic.toxicity_model, "toxicity classifier")
    if recipe.personas.source != "seed":
        from .nli import check_nli

        check_nli(ModelSpec(name_or_path=recipe.personas.nli_model))
    evaluation_options = answer_options(recipe.evaluation)
    critic_options = judge_options(recipe.critic)
    judge_tokenizer = load_tokenizer(recipe.judge_spec()) if critic_options or evaluation_options else None
    check_experts(recipe.critic, judge_tokenizer)
    if not load_tokenizer(recipe.model).chat_template:
        raise RecipeError(
            f"The generator {recipe.model.name_or_path} has no chat template, and the loop trains it on chat "
            "rows: use an instruct (chat) model, or give its tokenizer a chat_template."
        )
    for option in evaluation_options:
        try:
            option_token_ids(judge_tokenizer, option)
        except JudgeError as error:
            asked = recipe.evaluation.measurements
            raise RecipeError(f"{error} It is asked by evaluation.measurements: {asked}.") from None
    seed_path = recipe.seed.path
    seed_dir = Path(run_dir) / "seed" if run_dir else None
    if seed_dir and read_stage(seed_dir):  # imported already (a resumed or reproduced run): not read again
        seed = f"seed: imported in {seed_dir}"
    elif not seed_path:
        raise StageInputError("The recipe has no seed data: set `seed.path` (SPC CSV, JSONL, folder or Hub id).")
    else:
        try:
            seed = f"seed: {seed_path} ({recipe.seed.format or guess_format(seed_path)})"
        except SeedDataError as error:
            raise StageInputError(f"seed.path: {error}") from None
    if recipe.hub.repo_id:
        from .hub import HubOfflineError, hub_offline

        if hub_offline():
            raise HubOfflineError(
                f"hub.repo_id is {recipe.hub.repo_id!r} but HF_HUB_OFFLINE=1: unset hub.repo_id, or go online."
            )
    from .trackers import check_trackers

    trackers = check_trackers(recipe.loop.report_to)
    judge = recipe.judge.name_or_path or f"{recipe.model.name_or_path} (the generator)"
    options = sorted({o for asked in critic_options.values() for o in asked} | {*evaluation_options})
    return [
        f"generator: {recipe.model.name_or_path}"
        + (f" (GGUF {recipe.model.gguf_file}, dequantized)" if recipe.model.gguf_file else "")
        + (f" + adapter {recipe.model.adapter}" if recipe.model.adapter else ""),
        f"judge: {judge}; answer options {options} are single tokens",
        f"experts: {', '.join(recipe.critic.experts)}",
        f"evaluation: {', '.join(recipe.evaluation.measurements)}",
        f"{seed}; users: {recipe.personas.source}",
        f"processes: {PartialState().num_processes}; hub: {recipe.hub.repo_id or 'no push'}; {trackers}",
        *([referee] if referee else []),
    ]


def _same_model(a: ModelSpec, b: ModelSpec) -> bool:
    def where(spec: ModelSpec) -> tuple:
        path = Path(spec.name_or_path or "")
        name = str(path.resolve()) if path.exists() else spec.name_or_path
        return name, spec.gguf_file, spec.revision, spec.adapter

    return where(a) == where(b)


def check_referee(recipe: Recipe) -> str | None:
    """With held-out pairs, a referee model that exists, is not the critic's judge (whose preferences the loop
    optimises) and writes its answers ("1" / "2", or "Yes" / "No" pointwise) as single tokens; returns the line
    `check` prints, None without a referee."""
    from .evaluation.referee import OPTIONS, YES_NO
    from .judge import JudgeError, option_token_ids
    from .models import check_spec, load_tokenizer

    count = recipe.referee.held_out_pairs
    if not count:
        return None
    spec = recipe.referee_spec()
    if not spec.name_or_path:
        raise RecipeError(
            f"referee.held_out_pairs is {count} but no referee is named: set referee.name_or_path to a model other "
            "than the critic's judge, or referee.held_out_pairs: 0."
        )
    if _same_model(spec, recipe.judge_spec()):
        raise RecipeError(
            f"The referee ({spec.name_or_path}) is the critic's judge: the loop optimises that judge's preferences, "
            "so it cannot referee the result. Name another model in referee.name_or_path."
        )
    check_spec(spec, "referee")
    tokenizer = load_tokenizer(spec)
    for option in YES_NO if recipe.referee.mode == "pointwise" else OPTIONS:
        try:
            option_token_ids(tokenizer, option)
        except JudgeError as error:
            raise RecipeError(f"referee: {error}") from None
    criteria = ", ".join(recipe.referee.criteria)
    return f"referee: {spec.name_or_path}, {recipe.referee.mode}, on {count} held-out pairs ({criteria})"


def check_hardware(recipe: Recipe) -> None:
    """bf16 training and bfloat16 / float16 weights need an accelerator: on a CPU-only machine they fail late (TRL
    refuses bf16 at training, after generation and critique) or run very slowly, so they are refused here."""
    import torch

    if torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return
    if recipe.training.get("bf16") or recipe.training.get("fp16"):
        flag = "bf16" if recipe.training.get("bf16") else "fp16"
        raise RecipeError(
            f"training.{flag} is true but this machine has no GPU: set training.{flag}: false and training.use_cpu: "
            "true for a CPU run (or check the recipe on the machine that runs it)."
        )
    for role, spec in (("model", recipe.model), ("judge", recipe.judge)):
        if spec.dtype in ("bfloat16", "float16"):
            raise RecipeError(
                f"{role}.dtype is {spec.dtype} but this machine has no GPU: set {role}.dtype: float32 (or auto) for a "
                "CPU run (or check the recipe on the machine that runs it)."
            )
