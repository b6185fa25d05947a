"""Recipe sections as thin dataclasses, parsed from a sectioned YAML file by TRL's `TrlParser`.

A recipe is a YAML mapping of sections (`seed`, `model`, `judge`, `personas`, `generation`, `critic`, `training`,
`evaluation`, `loop`, `hub`, `referee`); `training` takes TRL's own `SFTConfig` fields. Each section is parsed by its
own `TrlParser`, so a typo is reported with the key *and* the section it sits in, and any field can be overridden on
the command line as `--section.field value` (or `--field value` when the name is unique across sections).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# -- range rules ---------------------------------------------------------------------------------------------------
# Each section lists its rules next to its fields (`_rules`), so `spc-train check` refuses a bad value where it is
# parsed, in one line, instead of a stage failing on it hours later. A rule is (predicate, what is allowed).

Rule = tuple[Callable[[Any], bool], str]

AT_LEAST_1: Rule = (lambda v: v >= 1, "at least 1")
AT_LEAST_0: Rule = (lambda v: v >= 0, "at least 0")
POSITIVE: Rule = (lambda v: v > 0, "above 0")
PROBABILITY: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")
# A hard filter fails a candidate whose probability is at least the threshold: above 1, it fails none (filter off).
FILTER_THRESHOLD: Rule = (lambda v: v >= 0, "at least 0 (a probability; above 1 turns the filter off)")
NOT_EMPTY: Rule = (lambda v: bool(v.strip()) if isinstance(v, str) else bool(v), "not empty")


def optional(rule: Rule, meaning: str) -> Rule:
    """`rule`, or null where null has a documented meaning (`meaning`: what null does). An empty string counts as
    null: it is how the command line unsets a field (`--loop.tiny_models_dir ""`), and the code reads it so."""
    return (lambda v: v is None or v == "" or rule[0](v)), f"{rule[1]}, or null for {meaning}"


def one_of(choices: tuple[str, ...]) -> Rule:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def each_of(choices: tuple[str, ...]) -> Rule:
    return (lambda v: all(name in choices for name in v)), "names from " + ", ".join(choices)


class FieldValueError(ValueError):
    """A field outside its range; `parse_recipe` prefixes the section, so the message reads `section.field ...`."""

    def __init__(self, name: str, value: Any, allowed: str):
        super().__init__(f"{name} must be {allowed}, got {value!r}.")
        self.field = name


def _type_problem(annotation: Any, value: Any) -> str | None:
    """What `value` should have been, when it is not of the field's type: YAML hands non-string values over as
    written (`top_k: 4.5`, `experts: depth`), and no parser converts them."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    nullable = type(None) in typing.get_args(annotation)
    kind = args[0] if nullable else annotation
    if value is None and nullable:
        return None
    if typing.get_origin(kind) is list:
        (inner,) = typing.get_args(kind)
        ok = isinstance(value, list) and all(isinstance(v, inner) for v in value)
        wanted = f"a list of {inner.__name__}"
    else:
        numbers = (int, float) if kind is float else (kind,)
        ok = isinstance(value, numbers) and (kind is bool or not isinstance(value, bool))
        wanted = f"{'an' if kind is int else 'a'} {kind.__name__}"
    return None if ok else f"{wanted} or null" if nullable else wanted


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Field types resolved from the annotations (strings here, and rewritten in place by HfArgumentParser)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class _Checked:
    """Checks every field's type, then the section's range rules, when the dataclass is built."""

    def _rules(self) -> dict[str, Rule]:
        return {}

    def __post_init__(self):
        for name, annotation in _field_types(type(self)).items():
            if problem := _type_problem(annotation, getattr(self, name)):
                raise FieldValueError(name, getattr(self, name), problem)
        for name, (predicate, allowed) in self._rules().items():
            if not predicate(getattr(self, name)):
                raise FieldValueError(name, getattr(self, name), allowed)


# The readers' formats (`spc_train.data.FORMATS`; a test keeps the two equal without importing `datasets` here).
SEED_FORMATS = ("spc-csv", "personachat", "jsonl", "dataset", "hub")
DTYPES = ("auto", "float32", "bfloat16", "float16")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
HUB_REPO: Rule = (lambda v: bool(_HUB_REPO.match(v)), "a Hub id ORG/NAME")


@dataclass
class SeedConfig(_Checked):
    """Where the seed conversations come from (few-shot pool at iteration 0, seed pairs, evaluation reference)."""

    path: str | None = field(
        default=None,
        metadata={"help": "Seed data: SPC CSV, Persona-Chat txt, JSONL(.gz), a saved `datasets` folder, or a Hub id."},
    )
    format: str | None = field(
        default=None,
        metadata={"help": "One of spc-csv, personachat, jsonl, dataset, hub. Guessed from the path when not set."},
    )
    split: str | None = field(default=None, metadata={"help": "Split to read from a DatasetDict folder or Hub id."})
    max_conversations: int | None = field(
        default=None, metadata={"help": "Keep only the first N well-formed seed conversations."}
    )
    strict: bool = field(default=False, metadata={"help": "Fail on malformed seed rows instead of reporting them."})
    normalize_names: bool = field(
        default=False, metadata={"help": "Rewrite name placeholders like `[user 1's name]` to one canonical form."}
    )

    # `path` is checked by `check` (does it exist, which format is it), `split` by the reader.
    def _rules(self) -> dict[str, Rule]:
        return {
            "format": optional(one_of(SEED_FORMATS), "a guess from the path"),
            "max_conversations": optional(AT_LEAST_1, "all"),
        }


@dataclass
class ModelSpec(_Checked):
    """One model role (generator, judge, classifiers). Hub ids and local paths load through the same code."""

    name_or_path: str | None = field(default=None, metadata={"help": "Hub model id or local folder."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto, float32, bfloat16 or float16."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "Attention kernel, e.g. sdpa, eager, flash_attention_2."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the base weights in 4-bit NF4 (bitsandbytes)."})
    adapter: str | None = field(default=None, metadata={"help": "A PEFT adapter (folder or Hub id) to load on top."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow custom modelling code from the model repository (opt-in)."}
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "A .gguf file inside `name_or_path` (folder or Hub repo), loaded through transformers' GGUF "
            "support, dequantized (dtype auto: float32 on CPU, bfloat16 on a bf16 GPU); needs the `gguf` package. "
            "Not with load_in_4bit."
        },
    )

    # Names, paths and revisions are free text: typed here, found (or not) by `check` before any work.
    def _rules(self) -> dict[str, Rule]:
        return {"dtype": one_of(DTYPES)}


@dataclass
class GeneratorConfig(ModelSpec):
    """The generator, and the LoRA adapter that SFT trains on it (TRL `ModelConfig` naming)."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt; None lets PEFT pick the architecture's defaults."}
    )

    def _rules(self) -> dict[str, Rule]:
        return {
            **super()._rules(),
            "lora_r": AT_LEAST_1,
            "lora_alpha": POSITIVE,
            "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "lora_target_modules": optional(NOT_EMPTY, "PEFT's defaults"),
        }


@dataclass
class JudgeConfig(ModelSpec):
    """The LLM that the critic's experts prompt. Unset `name_or_path` means the generator, as in the paper."""


@dataclass
class PersonaExpansionConfig(_Checked):
    """Persona expansion (paper §3.1.1). Defaults follow the paper where it gives a number."""

    distance_threshold: float = field(
        default=0.65,
        metadata={
            "help": "Cosine distance below which average-linkage clusters merge. The paper's 0.1 (on BERT) gave 323 "
            "clusters on the 4,723 Persona-Chat attributes; with all-MiniLM-L6-v2, 0.65 gives 331 (0.1 gives 3,960)."
        },
    )
    attributes_per_query_prompt: int = field(
        default=3, metadata={"help": "Attributes sampled per cluster for query induction (paper: 3)."}
    )
    query_bootstrap_steps: int = field(
        default=100, metadata={"help": "Query-bootstrapping prompts, one new query each at most (paper: 100 steps)."}
    )
    queries_per_prompt: int = field(
        default=5, metadata={"help": "Example queries shown per query-bootstrapping prompt (paper: 5)."}
    )
    attributes_per_persona_prompt: int = field(
        default=5, metadata={"help": "Random attributes shown per persona-bootstrapping prompt (paper: 5)."}
    )
    target_new_attributes: int = field(
        default=5000, metadata={"help": "Stop persona bootstrapping after this many new attributes (paper: 5k)."}
    )
    max_bootstrap_steps: int = field(
        default=100,
        metadata={"help": "Most persona-bootstrapping steps; a step asks every query once (paper ablation: 100)."},
    )
    dedup_threshold: float = field(
        default=0.9,
        metadata={"help": "A new attribute is dropped when its cosine to any kept attribute is at least this."},
    )
    min_words: int = field(default=3, metadata={"help": "Shortest new attribute kept, in words."})
    max_words: int = field(default=30, metadata={"help": "Longest new attribute kept, in words."})
    batch_size: int = field(default=64, metadata={"help": "Prompts sent to `complete` per call."})

    def _rules(self) -> dict[str, Rule]:
        return {
            "distance_threshold": (lambda v: 0 < v <= 2, "in (0, 2] (a cosine distance)"),
            "attributes_per_query_prompt": AT_LEAST_1,
            "query_bootstrap_steps": AT_LEAST_0,  # 0: the induced queries only
            "queries_per_prompt": AT_LEAST_1,
            "attributes_per_persona_prompt": AT_LEAST_1,
            "target_new_attributes": AT_LEAST_0,  # 0: no new attributes
            "max_bootstrap_steps": AT_LEAST_0,
            "dedup_threshold": (lambda v: 0 < v <= 1, "in (0, 1] (a cosine similarity)"),
            "min_words": AT_LEAST_1,
            "max_words": (lambda v: v >= self.min_words, f"at least min_words ({self.min_words})"),
            "batch_size": AT_LEAST_1,
        }


PERSONA_SOURCES = ("seed", "generated", "both")


@dataclass
class PersonasConfig(PersonaExpansionConfig):
    """Users: persona expansion (the fields above), profiles, pairing (PAPER.md §1.1-1.3)."""

    source: str = field(
        default="seed",
        metadata={"help": "User pairs: `seed` reuses seed pairs, `generated` builds new users, `both` takes both."},
    )
    num_pairs: int | None = field(default=None, metadata={"help": "Most user pairs from each source."})
    embedder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Sentence embedder for clustering, dedup and redundancy (offline: the gt package copy)."},
    )
    nli_model: str | None = field(
        default=None,
        metadata={"help": "NLI model for profile consistency: an MNLI-style classifier or a T5 TRUE-style seq2seq."},
    )
    num_profiles: int = field(default=100, metadata={"help": "User profiles to build."})
    profile_size: int = field(default=5, metadata={"help": "Attributes per profile (paper: 5)."})
    redundancy_threshold: float = field(
        default=0.9, metadata={"help": "Reject an attribute whose cosine to one in the profile is above this."}
    )
    entailment_threshold: float = field(
        default=0.5, metadata={"help": "NLI entailment probability at which attribute => negation counts."}
    )
    max_attempts: int | None = field(default=None, metadata={"help": "Candidate draws before giving up."})
    min_shared: int = field(
        default=2, metadata={"help": "Pair users sharing MORE than this many persona clusters (paper: 2)."}
    )
    partners_per_user: int | None = field(default=None, metadata={"help": "Most partners per user."})
    max_new_tokens: int = field(default=48, metadata={"help": "Tokens the LLM may write per query / attribute."})

    def _rules(self) -> dict[str, Rule]:
        return {
            **super()._rules(),
            "source": one_of(PERSONA_SOURCES),
            "num_pairs": optional(AT_LEAST_1, "all"),
            "embedder": NOT_EMPTY,
            "num_profiles": AT_LEAST_1,
            "profile_size": AT_LEAST_1,
            "redundancy_threshold": PROBABILITY,
            "entailment_threshold": PROBABILITY,
            "max_attempts": optional(AT_LEAST_1, "50 per attribute slot"),
            "min_shared": AT_LEAST_0,
            "partners_per_user": optional(AT_LEAST_1, "no cap"),
            "max_new_tokens": AT_LEAST_1,
        }


GENERATION_BACKENDS = ("generate", "continuous")
TRUNCATED_CANDIDATES = ("drop_last_turn", "reject", "keep")  # generation.truncated; see generation/candidates.py


@dataclass
class GenerationArguments(_Checked):
    """Sampling candidate conversations (paper: top-k 40, temperature 0.7)."""

    num_candidates: int = field(default=4, metadata={"help": "Candidate conversations sampled per user pair."})
    few_shot_examples: int = field(
        default=5, metadata={"help": "Example conversations in the paper's few-shot prompt (paper: 5)."}
    )
    zero_shot_with_adapter: bool = field(
        default=False,
        metadata={
            "help": "Prompt a fine-tuned generator zero-shot (instruction + profiles), as its SFT rows are. Off by "
            "default: a weak real generator lost the format without its examples (SmolLM2-135M: 7 -> 1 of 16 parsed)."
        },
    )
    max_new_tokens: int = field(default=768, metadata={"help": "Most tokens generated per candidate."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (paper: 0.7)."})
    top_k: int = field(default=40, metadata={"help": "Top-k sampling (paper: 40)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 disables it."})
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "Prompt budget; examples are dropped to fit. Default: context length - max_new_tokens."},
    )
    batch_tokens: int = field(
        default=32768, metadata={"help": "Token budget of one generate batch (prompt + new tokens, all sequences)."}
    )
    shard_size: int = field(default=64, metadata={"help": "User pairs per shard, the unit of resume."})
    min_turns: int = field(default=4, metadata={"help": "A candidate parses when it has at least this many turns."})
    truncated: str = field(
        default="drop_last_turn",
        metadata={
            "help": "A candidate cut by max_new_tokens ends in a turn the model was still writing, which must not be "
            "selected or trained on as it is. `drop_last_turn`: drop that turn, then apply min_turns to the rest; "
            "`reject`: refuse the candidate; `keep`: keep it whole (the old behaviour)."
        },
    )
    repetition_penalty: float = field(
        default=1.0,
        metadata={
            "help": "transformers' repetition penalty over the prompt and the candidate (above 1 discourages the "
            "loops small models fall into; 1.0 disables it). The model's own generation_config never applies."
        },
    )
    no_repeat_ngram_size: int = field(
        default=0,
        metadata={
            "help": "Forbid repeating any n-gram of this many tokens of the prompt or the candidate (0 disables it). "
            "Every turn starts with `User N:`, and the few-shot examples are in the prompt: keep it large (>= 8)."
        },
    )
    backend: str = field(
        default="generate",
        metadata={
            "help": "`generate`: padded batches, each candidate with its own seeded noise. `continuous`: "
            "transformers' continuous batching (paged cache, no padding; for GPUs), seeded per shard."
        },
    )

    def _rules(self) -> dict[str, Rule]:
        return {
            "num_candidates": AT_LEAST_1,
            "few_shot_examples": AT_LEAST_0,  # 0: zero-shot
            "max_new_tokens": AT_LEAST_1,
            "temperature": POSITIVE,
            "top_k": AT_LEAST_1,
            "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "max_prompt_tokens": optional(AT_LEAST_1, "context length - max_new_tokens"),
            "batch_tokens": AT_LEAST_1,
            "shard_size": AT_LEAST_1,
            "min_turns": AT_LEAST_1,
            "truncated": one_of(TRUNCATED_CANDIDATES),
            "repetition_penalty": POSITIVE,
            "no_repeat_ngram_size": AT_LEAST_0,  # 0: off
            "backend": one_of(GENERATION_BACKENDS),
        }

    def __post_init__(self):
        super().__post_init__()
        if self.backend == "continuous" and (self.repetition_penalty != 1.0 or self.no_repeat_ngram_size):
            # transformers' continuous batching drops these processors with a warning: refuse, not ignore, them
            raise FieldValueError(
                "backend", self.backend, "`generate` when repetition_penalty or no_repeat_ngram_size is set"
            )


@dataclass
class CriticConfig(_Checked):
    """The critic's experts (a registry keyed by name) and the selection rule."""

    experts: list[str] = field(
        default_factory=lambda: [
            "faithfulness",
            "toxicity",
            "depth",
            "coherency",
            "consistency",
            "diversity",
            "likable",
        ],
        metadata={
            "help": "Experts to run, by registry name: faithfulness, faithfulness_nli (needs nli_model), toxicity, "
            "persona_grounding (uses embedder), and the FED policies (depth, coherency, consistency, diversity, "
            "likable)."
        },
    )
    faithfulness_threshold: float = field(
        default=0.5, metadata={"help": "A candidate fails when P(contradiction) is at least this."}
    )
    faithfulness_examples: int = field(
        default=4,
        metadata={
            "help": "In-context answered examples shown to the faithfulness judge before its question (paper: 4, "
            "2 faithful + 2 unfaithful; ours, since the paper's are not published). 0 asks zero-shot."
        },
    )
    faithfulness_phrasing: str = field(
        default="contradict",
        metadata={
            "help": "The faithfulness question: `contradict` (the paper's: does it contradict either profile? "
            "P(contradiction) = P(Yes)) or `consistent` (is it consistent with both? P(contradiction) = P(No)). "
            "Small judges answer one far better; the judge card probes both."
        },
    )
    nli_model: str | None = field(
        default=None,
        metadata={
            "help": "NLI sequence classifier (local folder or Hub id) with a contradiction label, for the "
            "faithfulness_nli expert: each utterance against each of its speaker's persona attributes."
        },
    )
    faithfulness_nli_threshold: float = field(
        default=0.5,
        metadata={"help": "faithfulness_nli: a candidate fails when its worst P(contradiction) is at least this."},
    )
    toxicity_threshold: float = field(
        default=0.5, metadata={"help": "A candidate fails when P(toxic) is at least this."}
    )
    toxicity_model: str | None = field(
        default=None,
        metadata={
            "help": "Toxicity backend: a sequence classifier (path or Hub id), or `profanity-check` for the CPU "
            "model of alt-profanity-check (pip install alt-profanity-check==1.9.1); unset asks the judge LLM."
        },
    )
    embedder: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Sentence embedder of the persona_grounding expert (offline: the gt package copy)."},
    )
    persona_grounding_threshold: float | None = field(
        default=None,
        metadata={
            "help": "persona_grounding (0-1, HIGHER is better): a candidate fails when its score is below this. "
            "null: not a filter. Required when persona_grounding_role is `filter`."
        },
    )
    persona_grounding_role: str = field(
        default="vote",
        metadata={
            "help": "persona_grounding in selection: `vote` (one more vote beside the FED policies, for the best "
            "grounded survivor; a set threshold also filters) or `filter` (only the threshold)."
        },
    )
    judge_context: int | None = field(
        default=None,
        metadata={"help": "Judge context in tokens; longer prompts are truncated in the middle (logged)."},
    )
    batch_tokens: int = field(
        default=32768,
        metadata={
            "help": "Token budget of one judge forward pass. Batching pays off on a GPU (rows run in parallel); on a "
            "CPU it only adds padded attention, and 1 (one prompt per pass) was fastest in scripts/bench_critic.py."
        },
    )
    shard_size: int = field(
        default=64,
        metadata={"help": "User pairs per critique shard: the unit of data parallelism and of resume."},
    )
    min_option_mass: float = field(
        default=0.5,
        metadata={
            "help": "Judge health: a WARNING names an expert or measurement whose judge puts on average less than "
            "this share of its next-token probability on the answer options (before renormalisation)."
        },
    )
    probe_informative: float = field(
        default=0.7,
        metadata={
            "help": "Judge card: a probe figure (AUC, win rate, position consistency; 0.5 = chance) at least this "
            "is `informative` (docs/judge_health.md)."
        },
    )
    probe_weak: float = field(
        default=0.6,
        metadata={
            "help": "Judge card: a probe figure at least this (and under probe_informative) is `weak`; under it, "
            "`at chance`."
        },
    )
    probe_conversations: int = field(
        default=16,
        metadata={"help": "Judge probes: seed conversations each probe uses at most (their cost grows with it)."},
    )

    # Expert names and the example count are the critic registry's to check (`check_experts`, run by `check` and
    # before any work): the registry and its examples are where they are defined.
    def _rules(self) -> dict[str, Rule]:
        return {
            "experts": (lambda v: len(set(v)) == len(v), "a list of distinct expert names"),
            "faithfulness_threshold": FILTER_THRESHOLD,
            "faithfulness_nli_threshold": FILTER_THRESHOLD,
            "toxicity_threshold": FILTER_THRESHOLD,
            "embedder": NOT_EMPTY,
            "persona_grounding_threshold": optional(PROBABILITY, "no grounding filter"),
            "persona_grounding_role": one_of(("filter", "vote")),
            "faithfulness_phrasing": one_of(("contradict", "consistent")),
            "judge_context": optional(AT_LEAST_1, "the judge's own context length"),
            "batch_tokens": AT_LEAST_1,
            "shard_size": AT_LEAST_1,
            "min_option_mass": PROBABILITY,
            "probe_informative": (lambda v: self.probe_weak <= v <= 1, "in [critic.probe_weak, 1]"),
            "probe_weak": PROBABILITY,
            "probe_conversations": (lambda v: v >= 2, "at least 2 (a probe swaps personas between conversations)"),
        }


# `loop.report_to`: the trackers `spc_train.trackers` sends each iteration's metrics to (each named as its package).
TRACKER_CHOICES = ("none", "all", "tensorboard", "trackio", "wandb")


@dataclass
class LoopConfig(_Checked):
    """The iteration driver."""

    iterations: int = field(default=3, metadata={"help": "Generator-Critic iterations (paper: 3)."})
    seed: int = field(default=42, metadata={"help": "Seed for sampling, example choice and training."})
    train: bool = field(default=True, metadata={"help": "LoRA-train the generator on each iteration's selection."})
    update: str = field(
        default="continue",
        metadata={"help": "`continue` the previous adapter on new data, or train a `fresh` one on all selected."},
    )
    grow_pool: bool = field(
        default=True, metadata={"help": "Add selected conversations to the few-shot pool (paper's in-context mode)."}
    )
    replay_seed: int = field(
        default=0,
        metadata={
            "help": "Also train each iteration on this many seed conversations (none of the run's pairs), cut at a "
            "turn boundary to fit generation.max_new_tokens: real data that keeps a weak generator at the format "
            "(docs/real-models.md). 0: the selection only, as the paper."
        },
    )
    replay_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Tokens a replayed conversation is cut to, its end-of-turn token included (at most "
            "generation.max_new_tokens, the default). Sampled lengths spread around the trained ones: targets that "
            "fill the budget teach the generator conversations that often run past it and never end."
        },
    )
    tiny_models_dir: str | None = field(
        default=None, metadata={"help": "Build the tiny offline models here on first use (the CPU demo)."}
    )
    on_blind_judge: str = field(
        default="warn",
        metadata={
            "help": "What a judge whose probe is `at chance` does (the judge card, docs/judge_health.md): `warn` "
            "and go on, its numbers marked, or `stop` before its numbers are used."
        },
    )
    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={
            "help": "Experiment trackers that receive each iteration's metrics (step = iteration) and the report: "
            "none, tensorboard (in RUN/trackers), trackio, wandb, or all (every one installed). "
            "training.report_to is TRL's own, per training step."
        },
    )

    def __post_init__(self):
        if isinstance(self.report_to, str):  # `report_to: tensorboard`, as TRL's field takes it
            self.report_to = [self.report_to]
        super().__post_init__()

    def _rules(self) -> dict[str, Rule]:
        return {
            "iterations": AT_LEAST_1,
            "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32) (numpy's seed range)"),
            "update": one_of(("continue", "fresh")),
            "replay_seed": AT_LEAST_0,
            "replay_max_tokens": optional(AT_LEAST_1, "generation.max_new_tokens"),
            "on_blind_judge": one_of(("warn", "stop")),
            "report_to": (
                lambda v: all(name in TRACKER_CHOICES for name in v) and ("none" not in v or len(v) == 1),
                "names from " + ", ".join(TRACKER_CHOICES) + " (none alone)",
            ),
        }


@dataclass
class HubConfig(_Checked):
    """Push each iteration's selected data and adapter to the Hub as the loop goes (`spc-train push` does it later)."""

    repo_id: str | None = field(
        default=None, metadata={"help": "ORG/NAME to push to after each iteration; unset: none."}
    )
    model_repo_id: str | None = field(
        default=None, metadata={"help": "Adapter repo (default: repo_id, a model repo)."}
    )
    private: bool = field(default=True, metadata={"help": "Create private repositories."})
    include_candidates: bool = field(default=False, metadata={"help": "Also push every candidate with its scores."})

    def _rules(self) -> dict[str, Rule]:
        return {"repo_id": optional(HUB_REPO, "no push"), "model_repo_id": optional(HUB_REPO, "repo_id")}


MEASUREMENTS = ("statistics", "embedding", "toxicity", "next_utterance", "detection", "extraction", "llm_judge")


LLM_JUDGE_FAMILIES = ("llm_eval", "gpt_score", "g_eval")


@dataclass
class EvaluationConfig(_Checked):
    """The paper's measurements (PAPER.md §3), per iteration and for the seed data: the `evaluate` stage."""

    measurements: list[str] = field(
        default_factory=lambda: list(MEASUREMENTS),
        metadata={
            "help": "Any of: statistics (distinct-n, turns, words), embedding (diversity, persona coverage), "
            "toxicity (critic backend), next_utterance (tf-idf IR hit@1, seed vs generated), detection (judge "
            "Turing test vs seed), extraction (profile-extraction faithfulness), llm_judge (LLM-Eval, GPT-Score, "
            "G-Eval)."
        },
    )
    judged_conversations: int = field(
        default=200,
        metadata={"help": "Conversations per dataset the judge measurements use (the paper's studies: 200 pairs)."},
    )
    llm_judge_families: list[str] = field(
        default_factory=lambda: list(LLM_JUDGE_FAMILIES),
        metadata={"help": "LLM-judge families of the paper's Table 15: llm_eval, gpt_score, g_eval."},
    )
    extraction_threshold: float = field(
        default=0.5, metadata={"help": "Profile extraction: an option counts as inferred when P(Yes) exceeds this."}
    )
    ir_candidates: int = field(
        default=20, metadata={"help": "Next-utterance prediction: candidates per context (1 true + distractors)."}
    )

    def _rules(self) -> dict[str, Rule]:
        return {
            "measurements": each_of(MEASUREMENTS),  # empty: evaluate nothing
            "judged_conversations": AT_LEAST_1,
            "llm_judge_families": each_of(LLM_JUDGE_FAMILIES),
            "extraction_threshold": PROBABILITY,
            "ir_candidates": (lambda v: v >= 2, "at least 2 (1 true + distractors)"),
        }


REFEREE_CRITERIA = ("persona_consistency", "naturalness", "coherence")
REFEREE_MODES = ("pairwise", "pointwise")


@dataclass
class RefereeConfig(ModelSpec):
    """An independent measure of the loop's result: user pairs held out of every iteration's training data, on which
    each iteration's generator and iteration 0's write a conversation with the same seeds, and a referee model (never
    the critic's judge, so nothing the loop optimises) compares the two in both orders (docs/referee.md)."""

    held_out_pairs: int = field(
        default=0,
        metadata={
            "help": "Seed conversations held out (sharing no user with the run's pairs, never generated from, "
            "replayed or used as a few-shot example) on which the referee compares the generators. 0: no referee."
        },
    )
    criteria: list[str] = field(
        default_factory=lambda: list(REFEREE_CRITERIA),
        metadata={"help": "What the referee compares: persona_consistency, naturalness, coherence."},
    )
    mode: str = field(
        default="pairwise",
        metadata={
            "help": "`pairwise`: both conversations in one prompt, asked in both orders (a tie when they disagree). "
            "`pointwise`: each conversation alone, a Yes/No question per criterion; iteration k wins a criterion "
            "when its P(Yes) is higher by more than referee.margin (no position to be biased by)."
        },
    )
    margin: float = field(
        default=0.05, metadata={"help": "pointwise: the least difference in P(Yes) that is a win or a loss."}
    )

    def _rules(self) -> dict[str, Rule]:
        return {
            **super()._rules(),
            "held_out_pairs": AT_LEAST_0,
            "mode": one_of(REFEREE_MODES),
            "margin": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "criteria": (
                lambda v: bool(v) and set(v) <= set(REFEREE_CRITERIA),
                "names from " + ", ".join(REFEREE_CRITERIA),
            ),
        }


def _sft_config():
    from trl import SFTConfig

    return SFTConfig


SECTIONS: dict[str, Any] = {
    "seed": SeedConfig,
    "model": GeneratorConfig,
    "judge": JudgeConfig,
    "personas": PersonasConfig,
    "generation": GenerationArguments,
    "critic": CriticConfig,
    "training": None,  # trl.SFTConfig, imported lazily (heavy)
    "evaluation": EvaluationConfig,
    "loop": LoopConfig,
    "hub": HubConfig,
    "referee": RefereeConfig,
}

# SFTConfig fields not recorded in recipe.yaml or fingerprints: the run's own paths (set by the loop) and secrets.
_UNRECORDED_TRAINING_KEYS = {"output_dir", "logging_dir", "run_name", "hub_token", "push_to_hub_token"}


class RecipeError(ValueError):
    """A recipe that cannot be parsed: names the file, section and key."""


@dataclass
class Recipe:
    seed: SeedConfig
    model: GeneratorConfig
    judge: JudgeConfig
    personas: PersonasConfig
    generation: GenerationArguments
    critic: CriticConfig
    training: dict[str, Any]  # resolved trl.SFTConfig fields; `sft_config()` builds the object where training runs
    loop: LoopConfig
    hub: HubConfig = field(default_factory=HubConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    referee: RefereeConfig = field(default_factory=RefereeConfig)
    path: str | None = None

    def section(self, name: str) -> dict[str, Any]:
        """A section as plain data: what goes into recipe.yaml and into stage fingerprints."""
        if name == "training":
            return {k: v for k, v in self.training.items() if k not in _UNRECORDED_TRAINING_KEYS}
        return dataclasses.asdict(getattr(self, name))

    def sft_config(self, **changes: Any):
        """The `SFTConfig`, built on the machine that trains: its checks (bf16 needs a GPU) are about that machine."""
        return _sft_config()(**{**self.training, **changes})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: self.section(name) for name in SECTIONS}

    def judge_spec(self) -> ModelSpec:
        """The judge model: the generator's base unless the recipe names another (paper: the same LLM)."""
        if self.judge.name_or_path:
            return self.judge
        base = {f.name: getattr(self.model, f.name) for f in dataclasses.fields(ModelSpec)}
        return ModelSpec(**{**base, "adapter": None})

    def referee_spec(self) -> ModelSpec:
        """The referee's model as a plain `ModelSpec` (its identity and loading ignore the held-out settings)."""
        return ModelSpec(**{f.name: getattr(self.referee, f.name) for f in dataclasses.fields(ModelSpec)})


def _training_values(parser, args: list[str]) -> dict[str, Any]:
    """SFTConfig field values, checked by building an SFTConfig with the hardware-bound precision flags off.

    The recipe keeps the values as written: a bf16 GPU recipe parses (and is tested) on a CPU machine.
    """
    namespace, remaining = parser.parse_known_args(args=args)
    if remaining:
        raise ValueError(f"could not parse {remaining}")
    sft_config = _sft_config()
    names = {f.name for f in dataclasses.fields(sft_config) if f.init}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sft_config(**{**values, "bf16": False, "fp16": False, "output_dir": values.get("output_dir") or "unused"})
        # Deprecated aliases resolve to their new names; record only those.
        for old, new in (
            ("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"),
        ):
            if values.get(new) is None and values.get(old) is not None:
                values[new] = values[old]
            values.pop(old, None)
    return values


def _section_class(name: str):
    return _sft_config() if name == "training" else SECTIONS[name]


def _split_cli(args: list[str], section_flags: dict[str, set[str]]) -> dict[str, list[str]]:
    """Route `--section.field v` and unambiguous `--field v` overrides to their section's parser."""
    routed: dict[str, list[str]] = {name: [] for name in SECTIONS}
    current: list[str] | None = None
    for token in args:
        if token.startswith("--"):
            flag, eq, value = token[2:].partition("=")
            section, dot, key = flag.partition(".")
            if dot:
                if section not in SECTIONS:
                    raise RecipeError(_unknown("section '{name}'", section, SECTIONS, "the command line"))
                if key not in section_flags[section]:
                    raise RecipeError(
                        _unknown(
                            "key '{name}' in section '" + section + "'",
                            key,
                            section_flags[section],
                            "the command line",
                        )
                    )
            else:
                key = flag
                owners = [name for name, flags in section_flags.items() if key in flags]
                if not owners:
                    every = set().union(*section_flags.values())
                    raise RecipeError(_unknown("option '--{name}'", key, every, "the command line"))
                if len(owners) > 1:
                    raise RecipeError(
                        f"--{key} is a field of several sections ({', '.join(owners)}); "
                        f"write --{owners[0]}.{key} (or another section) to say which."
                    )
                section = owners[0]
            current = routed[section]
            current.append(f"--{key}")
            if eq:
                current.append(value)
        elif current is None:
            raise RecipeError(f"Unexpected argument {token!r}: overrides look like --section.field value.")
        else:
            current.append(token)
    return routed


def _unknown(what: str, name: str, known, where: str) -> str:
    """`what` reads like "key 'x' in section 'y'"; the message adds where and the closest known name."""
    hint = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f" Did you mean '{hint[0]}'?" if hint else ""
    return f"Unknown {what.format(name=name)} in {where}.{suggestion}"


def _load_yaml(path: Path) -> Any:
    """The recipe's YAML; a syntax error names the file, line and column (where to look), in one line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise RecipeError(f"{path} is not UTF-8 text (byte at offset {error.start}); save it as UTF-8.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        context = getattr(error, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise RecipeError(_one_line(f"Invalid YAML in {path}{at}: {detail}.")) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _ArgumentError(ValueError):
    """argparse's complaint about one option, raised instead of printing usage and exiting."""


def _raise_argument_error(message: str):
    raise _ArgumentError(message)


def _invalid(section: str, error: BaseException) -> str:
    """The one-line reason of a bad value, naming `section.field` where the error knows its field."""
    if isinstance(error, FieldValueError):
        return f"{section}.{error}"
    text = _one_line(str(error))
    if isinstance(error, _ArgumentError):  # "argument --top_k/--top-k: invalid int value: 'x'"
        text = re.sub(r"^argument --([\w.-]+)(?:/--[\w.-]+)*: ", lambda m: f"{section}.{m.group(1)}: ", text)
    return text


def parse_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe YAML (sections of fields) and apply `--section.field value` overrides."""
    from trl import TrlParser

    config: dict[str, Any] = {}
    where = str(path) if path else "the recipe"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"Recipe not found: {path}. Recipes live in recipes/<model>/loop.yaml.")
        config = _load_yaml(path) or {}
        if not isinstance(config, dict):
            raise RecipeError(f"{path} must hold a YAML mapping of sections ({', '.join(SECTIONS)}).")
    for name in config:
        if name not in SECTIONS:
            raise RecipeError(
                _unknown("section '{name}'", name, SECTIONS, where) + f" Sections are: {', '.join(SECTIONS)}."
            )

    parsers = {name: TrlParser([_section_class(name)]) for name in SECTIONS}
    for parser in parsers.values():
        parser.error = _raise_argument_error  # a bad value is a RecipeError, not usage text and exit status 2
    section_flags = {name: {a.dest for a in parser._actions if a.dest != "help"} for name, parser in parsers.items()}
    routed = _split_cli(list(overrides or []), section_flags)

    parsed = {}
    for name, parser in parsers.items():
        values = config.get(name) or {}
        if not isinstance(values, dict):
            raise RecipeError(f"Section '{name}' of {where} must be a mapping of fields, got {values!r}.")
        unused = [key for key in values if key not in section_flags[name]]
        if unused:
            raise RecipeError(
                _unknown("key '{name}' in section '" + name + "'", unused[0], section_flags[name], where)
            )
        parser.set_defaults_with_config(**values)
        try:
            if name == "training":
                parsed[name] = _training_values(parser, routed[name])
            else:
                (parsed[name],) = parser.parse_args_into_dataclasses(args=routed[name])
        except (SystemExit, ValueError, TypeError) as error:
            raise RecipeError(f"Invalid value in section '{name}' of {where}: {_invalid(name, error)}") from error
    return Recipe(**parsed, path=str(path) if path else None)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe; `parse_recipe` reads it back to the same values."""
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True))
