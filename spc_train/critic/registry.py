"""Experts by name, as the recipe lists them (`critic.experts`), and the `critique` stage that runs them all.

Like open-r1's reward registry: a string key in YAML picks a constructor. Models are loaded once, lazily, and only
if an expert that needs them is asked for. `check_experts` runs at start-up, before any stage: it needs only the
judge's tokenizer and the classifiers' config.json files, so a judge that cannot write "Yes" as one token, or an NLI
model without a contradiction label, fails in seconds instead of after generation. An embedder is checked only for
being there (its folder, or the Hub cache), and a model shipped in a Python package (alt-profanity-check) for being
installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..configs import RecipeError
from ..console import progress
from ..health.option_mass import recording, summary, warn_if_low
from ..judge import Judge, JudgeError, option_token_ids
from ..models import PROFANITY_CHECK, check_available
from . import faithfulness, fed, toxicity
from .faithfulness import FaithfulnessExpert, faithfulness_examples
from .faithfulness_nli import NliFaithfulnessExpert, contradiction_label
from .fed import POLICIES, FedPolicyExpert
from .persona_grounding import PersonaGroundingExpert, sentence_embed
from .toxicity import ToxicityExpert, profanity_check, toxic_label

logger = logging.getLogger(__name__)


class ExpertCheckError(JudgeError, RecipeError):
    """The recipe's critic cannot run with its models: an answer option, a label or a model field is missing.

    A `RecipeError` too, so the CLI reports it in one line, as it does a wrong recipe key.
    """


def _faithfulness(name, critic, judge, classifier):
    return FaithfulnessExpert(
        name, judge(), critic.faithfulness_threshold, critic.faithfulness_examples, critic.faithfulness_phrasing
    )


def _faithfulness_nli(name, critic, judge, classifier):
    if not critic.nli_model:
        raise ExpertCheckError(f"The {name} expert needs an NLI classifier: set critic.nli_model.")
    model, tokenizer = classifier(critic.nli_model)
    return NliFaithfulnessExpert(name, critic.faithfulness_nli_threshold, model, tokenizer)


def _toxicity(name, critic, judge, classifier):
    if critic.toxicity_model == PROFANITY_CHECK:
        return ToxicityExpert(name, critic.toxicity_threshold, predict=profanity_check())
    if critic.toxicity_model:
        model, tokenizer = classifier(critic.toxicity_model)
        return ToxicityExpert(name, critic.toxicity_threshold, classifier=model, tokenizer=tokenizer)
    return ToxicityExpert(name, critic.toxicity_threshold, judge=judge())


def _policy(name, critic, judge, classifier):
    return FedPolicyExpert(name, judge())


def _persona_grounding(name, critic, judge, classifier):
    from ..models import load_embedder

    embed = sentence_embed(load_embedder(critic.embedder))
    return PersonaGroundingExpert(
        name, embed, role=critic.persona_grounding_role, threshold=critic.persona_grounding_threshold
    )


EXPERTS: dict[str, Callable] = {
    "faithfulness": _faithfulness,
    "faithfulness_nli": _faithfulness_nli,
    "toxicity": _toxicity,
    "persona_grounding": _persona_grounding,
    **{policy: _policy for policy in POLICIES},
}


@dataclass(frozen=True)
class Needs:
    """What an expert asks of its models: single-token answer options of the judge, or a classifier label."""

    options: tuple[str, ...] = ()
    model_field: str | None = None  # the CriticConfig field naming the classifier
    label: Callable | None = None  # finds the needed label in the classifier's config, or raises JudgeError
    embedder_field: str | None = None  # the CriticConfig field naming a sentence embedder
    package_field: str | None = None  # the CriticConfig field naming a model shipped in a Python package


def needs(name: str, critic) -> Needs:
    if name == "faithfulness":
        return Needs(options=tuple(faithfulness.OPTIONS))
    if name == "faithfulness_nli":
        return Needs(model_field="nli_model", label=contradiction_label)
    if name == "toxicity":
        if critic.toxicity_model == PROFANITY_CHECK:
            return Needs(package_field="toxicity_model")
        if critic.toxicity_model:
            return Needs(model_field="toxicity_model", label=toxic_label)
        return Needs(options=tuple(toxicity.OPTIONS))
    if name == "persona_grounding":
        return Needs(embedder_field="embedder")
    if name in POLICIES:
        return Needs(options=tuple(fed.OPTIONS))
    raise KeyError(name)


def _check_names(critic) -> None:
    unknown = [name for name in critic.experts if name not in EXPERTS]
    if unknown:
        raise ExpertCheckError(f"Unknown critic expert(s) {unknown}; available: {', '.join(EXPERTS)}.")


def judge_options(critic) -> dict[str, tuple[str, ...]]:
    """The answer options each configured judge (LLM) expert reads; empty when no expert prompts the judge."""
    _check_names(critic)
    return {name: needs(name, critic).options for name in critic.experts if needs(name, critic).options}


def check_experts(
    critic, judge_tokenizer=None, load_config: Callable | None = None, find_embedder: Callable | None = None
) -> None:
    """Fail before any work if a configured expert cannot run: unknown name, bad example count, an answer option
    that is not a single token of `judge_tokenizer`, a classifier without its label (only config.json is read), a
    missing embedder or model package (`critic.toxicity_model: profanity-check`), or a grounding filter without its
    threshold.
    """
    _check_names(critic)
    try:
        faithfulness_examples(critic.faithfulness_examples)
    except ValueError as error:
        raise ExpertCheckError(str(error)) from None
    if (
        "persona_grounding" in critic.experts
        and critic.persona_grounding_role == "filter"
        and critic.persona_grounding_threshold is None
    ):
        raise ExpertCheckError(
            "The persona_grounding expert is a filter (critic.persona_grounding_role) without a threshold: "
            "set critic.persona_grounding_threshold, or make it a voter."
        )
    options = judge_options(critic)
    if options and judge_tokenizer is None:
        raise ExpertCheckError(f"Critic experts {sorted(options)} prompt the judge, but no judge tokenizer was given.")
    for name, answers in options.items():
        for option in answers:
            try:
                option_token_ids(judge_tokenizer, option)
            except JudgeError as error:
                raise ExpertCheckError(f"Critic expert '{name}': {error}") from None
    for name in critic.experts:
        need = needs(name, critic)
        if need.embedder_field is not None:
            (find_embedder or _embedder_available)(getattr(critic, need.embedder_field), f"{name} embedder")
        if need.package_field is not None:
            check_available(getattr(critic, need.package_field), f"{name} backend")
        if need.model_field is None:
            continue
        path = getattr(critic, need.model_field)
        if not path:
            raise ExpertCheckError(f"The {name} expert needs a classifier: set critic.{need.model_field}.")
        config = (load_config or _classifier_config)(path, f"{name} classifier")
        try:
            need.label(config)
        except JudgeError as error:
            raise ExpertCheckError(f"Critic expert '{name}' ({path}): {error}") from None


def _classifier_config(path: str, role: str):
    from transformers import AutoConfig

    from ..models import check_available

    check_available(path, role)
    return AutoConfig.from_pretrained(path)


def _embedder_available(name_or_path: str, role: str) -> None:
    from ..models import check_available, resolve_embedder

    check_available(resolve_embedder(name_or_path), role)


def build_experts(critic, judge: Callable[[], Judge], classifier: Callable) -> list:
    """Experts named in the recipe; `judge()` and `classifier(path)` load their models on first use."""
    _check_names(critic)
    return [EXPERTS[name](name, critic, judge, classifier) for name in critic.experts]


def _full_matrices(candidates: list[dict], asked: list[int], matrices: list[list[float]]) -> list[list[float]]:
    """A policy's pairwise rows over the asked candidates, widened to every candidate of each pair, NaN where one
    was not asked: `pairwise[i][j]` is candidate i against its pair's j-th candidate in candidate order, which is
    how selection reads it. A policy orders the candidates it is given the same way, so the asked ones keep their
    relative places."""
    members: dict[str, list[int]] = {}
    for index, candidate in enumerate(candidates):
        members.setdefault(candidate["pair_id"], []).append(index)
    for group in members.values():
        group.sort(key=lambda i: candidates[i]["candidate"])
    asked_set = set(asked)
    full = [[float("nan")] * len(members[c["pair_id"]]) for c in candidates]
    for index, matrix in zip(asked, matrices):
        group = members[candidates[index]["pair_id"]]
        places = [place for place, member in enumerate(group) if member in asked_set]
        for place, value in zip(places, matrix):
            full[index][place] = value
    return full


def _row_option_mass(log, count: int) -> list[dict | None]:
    """Per shown candidate: its own figure when the expert asked one question per candidate, in order (faithfulness,
    toxicity); otherwise (FED policies ask about ordered pairs) the figure of the whole call, the same for each."""
    if not log.masses:
        return [None] * count
    if len(log.masses) == count and log.calls == 1:
        return [
            {"mean": m, "min": m, "top_tokens": [t] if t else []}
            for m, t in zip(log.masses, log.top_tokens or [""] * count)
        ]
    whole = summary(log.masses, log.top_tokens)
    return [{key: whole[key] for key in ("mean", "min", "top_tokens")}] * count


def critique(candidates: list[dict], experts: list, min_option_mass: float | None = None) -> list[dict]:
    """Every parsed candidate scored by every expert; FED policies also keep their pairwise matrices.

    `reasons[name]` holds what an expert that can explain itself found (e.g. faithfulness_nli: the contradicting
    utterance and attribute); experts that give no reasons are absent from it.

    `option_mass[name]` (experts that ask the judge LLM) holds the raw probability the judge put on the answer
    options before renormalisation, {"mean", "min", "top_tokens"}: the candidate's own question's, or for the FED
    policies the whole call's (`_row_option_mass`). With `min_option_mass`, an expert whose mean is under it is
    named in a WARNING (`health.option_mass.warn_if_low`).

    An unparsed candidate (`parsed` false: no conversation, or refused by `generation.candidates.parse_candidate`)
    is shown to no expert, so no judge call is spent on it and no score of text that is not a conversation is
    stored: its scores are NaN (which fails every filter), its pairwise rows all NaN (the pair's n x n matrix keeps
    its shape), and `reasons["parse"]` is `"unparsed: <reject_reason>"`. Selection already refuses it.

    The judges' prefix stores (`Judge.clear_prefix_cache`) start empty, so the scores depend on these candidates
    alone, not on what was scored before: a resumed critique, or one on more processes, gives the same bits.
    """
    for judge in {id(e.judge): e.judge for e in experts if isinstance(getattr(e, "judge", None), Judge)}.values():
        judge.clear_prefix_cache()
    nan = float("nan")
    rows = [{**c, "scores": {}, "pairwise": {}, "reasons": {}, "option_mass": {}} for c in candidates]
    asked = [i for i, c in enumerate(candidates) if c.get("parsed", True)]
    shown = [candidates[i] for i in asked]
    for row, candidate in zip(rows, candidates):
        if not candidate.get("parsed", True):
            row["reasons"]["parse"] = f"unparsed: {candidate.get('reject_reason') or 'no conversation'}"
    for expert in progress(experts, desc="critique", unit="expert", leave=False):
        logger.debug("Expert %s scores %d of %d candidates (parsed).", expert.name, len(shown), len(rows))
        with recording(getattr(expert, "judge", None)) as log:
            values = expert.score(shown) if shown else []
        for row in rows:
            row["scores"][expert.name] = nan
        for index, value in zip(asked, values):
            rows[index]["scores"][expert.name] = value
        if log.masses:
            for row in rows:
                row["option_mass"][expert.name] = None
            for index, figures in zip(asked, _row_option_mass(log, len(shown))):
                rows[index]["option_mass"][expert.name] = figures
            if min_option_mass is not None:
                warn_if_low({f"critic expert '{expert.name}'": log.summary()}, min_option_mass)
        if expert.kind == "policy":
            matrices = expert.pairwise if shown else []
            for row, matrix in zip(rows, _full_matrices(candidates, asked, matrices)):
                row["pairwise"][expert.name] = matrix
        reasons = getattr(expert, "reasons", None) if shown else None
        if reasons and any(reason is not None for reason in reasons):
            for row in rows:
                row["reasons"][expert.name] = None
            for index, reason in zip(asked, reasons):
                rows[index]["reasons"][expert.name] = reason
    return rows
