"""Model roles: which recipe fields make each model, its identity, and loaders that any stage can use.

A stage names its roles (`Stage.roles`); a role brings its own reads into the stage's selection, so a stage that
samples through the generator (`completion`) reads the sampling settings, and a stage that asks the judge reads the
judge's truncation (`critic.judge_context`), without listing them itself. Below every room (DESIGN.md's one-way
imports): personas, critic and evaluation load through here, never through another stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .configs import ModelSpec, Recipe

_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))
GENERATOR_READS = tuple(f"model.{name}" for name in _SPEC_FIELDS)
# The judge is the generator's base unless `judge.name_or_path` is set (`Recipe.judge_spec`).
JUDGE_READS = GENERATOR_READS + tuple(f"judge.{name}" for name in _SPEC_FIELDS)
# `Models.complete`: one sample per prompt with the paper's sampling (persona expansion, negation).
COMPLETION_READS = (
    "generation.temperature",
    "generation.top_k",
    "generation.top_p",
    "generation.batch_tokens",
    "personas.max_new_tokens",
    "loop.seed",
)
# The referee: its own model, never the generator's or the judge's fallback (`Recipe.referee_spec`).
REFEREE_READS = tuple(f"referee.{name}" for name in _SPEC_FIELDS) + ("critic.batch_tokens", "critic.judge_context")
CLASSIFIER_DTYPE_READS = ("model.dtype", "judge.name_or_path", "judge.dtype")  # classifiers load in the judge's dtype


@dataclass(frozen=True)
class Role:
    reads: tuple[str, ...]
    identity: Callable[[Recipe], Any]


def _spec(recipe: Recipe) -> Any:
    from .models import spec_identity

    return spec_identity(recipe.model)


def _path(get: Callable[[Recipe], str | None], embedder: bool = False) -> Callable[[Recipe], Any]:
    def identity_of(recipe: Recipe) -> Any:
        from .models import identity, resolve_embedder

        path = get(recipe)
        return identity(resolve_embedder(path) if embedder and path else path)

    return identity_of


def _judge(recipe: Recipe) -> Any:
    from .models import spec_identity

    return spec_identity(recipe.judge_spec())


def _referee(recipe: Recipe) -> Any:
    from .models import spec_identity

    return spec_identity(recipe.referee_spec()) if recipe.referee.name_or_path else None


ROLES: dict[str, Role] = {
    "generator": Role(GENERATOR_READS, _spec),
    "completion": Role(GENERATOR_READS + COMPLETION_READS, _spec),
    "judge": Role(JUDGE_READS + ("critic.batch_tokens", "critic.judge_context"), _judge),
    "referee": Role(REFEREE_READS, _referee),
    "toxicity": Role(("critic.toxicity_model",) + CLASSIFIER_DTYPE_READS, _path(lambda r: r.critic.toxicity_model)),
    "nli": Role(("personas.nli_model",), _path(lambda r: r.personas.nli_model)),
    "critic nli": Role(("critic.nli_model",) + CLASSIFIER_DTYPE_READS, _path(lambda r: r.critic.nli_model)),
    "embedder": Role(("personas.embedder",), _path(lambda r: r.personas.embedder, embedder=True)),
    "critic embedder": Role(("critic.embedder",), _path(lambda r: r.critic.embedder, embedder=True)),
}


class Models:
    """The models of a stage's selection, each loaded on first use and once."""

    def __init__(self, config: Recipe):
        self.config = config
        self.loaded: dict[str, Any] = {}

    def _once(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self.loaded:
            self.loaded[key] = load()
        return self.loaded[key]

    def generator(self, adapter: str | None = None):
        """`(model, tokenizer)` of the generator, with `adapter` (an earlier iteration's) on top."""
        from .models import load_causal_lm, load_tokenizer

        spec = self.config.model
        return self._once(
            f"generator:{adapter}", lambda: (load_causal_lm(spec, adapter=adapter), load_tokenizer(spec))
        )

    def judge(self, data_parallel: bool = False):
        """The judge; `data_parallel`: each call is split across processes (stages every process runs whole)."""
        from .judge import DataParallelJudge, Judge
        from .models import load_causal_lm, load_tokenizer

        spec, critic = self.config.judge_spec(), self.config.critic
        kind = DataParallelJudge if data_parallel else Judge
        return self._once(
            "judge",
            lambda: kind(load_causal_lm(spec), load_tokenizer(spec), critic.batch_tokens, critic.judge_context),
        )

    def referee(self):
        """The referee (`recipe.referee`), a judge of its own."""
        from .judge import Judge
        from .models import load_causal_lm, load_tokenizer

        spec, critic = self.config.referee_spec(), self.config.critic
        return self._once(
            "referee",
            lambda: Judge(load_causal_lm(spec), load_tokenizer(spec), critic.batch_tokens, critic.judge_context),
        )

    def classifier(self, path: str):
        """`(model, tokenizer)` of a sequence classifier (toxicity, NLI), in the judge's dtype."""
        from .models import load_classifier, load_tokenizer

        role = "NLI classifier" if path == self.config.critic.nli_model else "toxicity classifier"
        spec = ModelSpec(name_or_path=path, dtype=self.config.judge_spec().dtype)
        return self._once(path, lambda: (load_classifier(spec, role), load_tokenizer(spec, padding_side="right")))

    def embedder(self, name_or_path: str):
        from .models import load_embedder

        return self._once(f"embedder:{name_or_path}", lambda: load_embedder(name_or_path))

    def embed(self) -> Callable:
        """`embed(texts) -> unit vectors` with the personas' sentence embedder."""
        embedder = self.embedder(self.config.personas.embedder)
        return lambda texts: embedder.encode(texts, normalize_embeddings=True, batch_size=128, convert_to_numpy=True)

    def complete(self) -> Callable[[list[str]], list[str]]:
        """The LLM as `complete(prompts) -> texts` (persona expansion, negation): one sample per prompt with the
        paper's sampling, each call seeded from its own counter, so the same calls give the same texts."""
        from .data.prompts import render
        from .generation.engine import sample_conversations

        args, personas, seed = self.config.generation, self.config.personas, self.config.loop.seed
        calls = [0]

        def complete(prompts: list[str]) -> list[str]:
            model, tokenizer = self.generator()
            calls[0] += 1
            samples = sample_conversations(
                model,
                tokenizer,
                [render(tokenizer, p) for p in prompts],
                [f"complete-{calls[0]}-{i}" for i in range(len(prompts))],
                n=1,
                generation_kwargs={
                    "do_sample": True,
                    "temperature": args.temperature,
                    "top_k": args.top_k,
                    "top_p": args.top_p,
                    "max_new_tokens": personas.max_new_tokens,
                },
                batch_tokens=args.batch_tokens,
                seed=seed,
            )
            return [group[0].text for group in samples]

        return complete
