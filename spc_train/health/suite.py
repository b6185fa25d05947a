"""All probes of a recipe's judges, run on its own models: the judge card.

`run_probes` takes the models as the loop's critique stage does, as loaders (`judge()`, `classifier(path)`), so a
probe that is not needed loads nothing. The seed conversations are the run's (`seed_records`, as
`spc_train.data.read_seed` gives them); at most `critic.probe_conversations` of them, chosen by `seed`, keep the
cost bounded. Questions per conversation: faithfulness 2 per phrasing (+ the shipped examples once each), per FED
policy 2, detection 2, extraction up to 16, each LLM-judge criterion 2; the gaming probes 5 per scoring judge expert
and 8 per FED policy; the selector probe none (it reuses the gaming probes' answers). Toxicity asks its 20 fixture
conversations.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from ..critic.faithfulness import FaithfulnessExpert
from ..critic.fed import POLICIES
from ..critic.registry import EXPERTS
from ..critic.selection import GROUNDING
from . import probes
from .option_mass import warn_if_low
from .selector import selector_probe
from .verdicts import AT_CHANCE, verdict

logger = logging.getLogger(__name__)

CARD_VERSION = 2  # 2: length- and position-matched probes; `gaming` and `selector` entries
# Critic experts with a gaming probe: the filters, persona grounding, and the FED policies.
GAMED_EXPERTS = ("faithfulness", "faithfulness_nli", "toxicity", GROUNDING, *POLICIES)
JUDGED_MEASUREMENTS = ("detection", "extraction", "llm_judge")
PHRASING_MARGIN = 0.1  # AUC by which the other faithfulness phrasing must beat the recipe's to be suggested


def probe_conversations(seed_records: list[dict], count: int, seed: int) -> list[dict]:
    """Up to `count` seed conversations with two personas and at least two turns, a seeded choice in file order."""
    usable = [
        r for r in seed_records if len(r.get("turns") or []) >= 2 and r.get("user1_persona") and r.get("user2_persona")
    ]
    if len(usable) < 2:
        raise ValueError(
            f"Judge probes need at least 2 seed conversations with personas and turns, got {len(usable)}."
        )
    chosen = sorted(random.Random(seed).sample(range(len(usable)), min(count, len(usable))))
    return [{**usable[i], "pair_id": str(usable[i].get("pair_id", i))} for i in chosen]


def gaming_entries(critic, experts: list, conversations: list[dict], seed: int, thresholds) -> list[dict]:
    """One gaming entry per critic expert that has a gaming probe, then the selector entry (the critic as a whole).

    A critic expert is one `critic.experts` names (not the evaluation's toxicity backend). A selector at chance on
    a gaming kind is named in a WARNING: the loop's selection cannot tell that copy from a real conversation.
    """
    gamed = probes.gamed_versions(conversations, seed)
    critic_experts = [e for e in experts if e.name in critic.experts and e.name in GAMED_EXPERTS]
    entries, answers = [], {}
    for expert in critic_experts:
        logger.debug("Gaming probe of critic expert %s.", expert.name)
        entry, answers[expert.name] = probes.gaming_probe(expert, conversations, gamed, thresholds)
        entries.append(entry)
    if answers:
        entries.append(selector_probe(critic, critic_experts, conversations, answers, thresholds))
        gamed_kinds = [k for k, v in entries[-1]["figures"].items() if verdict(v, *thresholds) == AT_CHANCE]
        if gamed_kinds:
            logger.warning(
                "The critic does not prefer a real conversation to a gamed copy of the same length (%s): its "
                "selection can be gamed that way (judge card, entry 'selector'; docs/judge_health.md).",
                ", ".join(f"{k} {entries[-1]['figures'][k]:.2f}" for k in gamed_kinds),
            )
    return entries


def suggest_phrasing(used: dict, other: dict) -> None:
    """A WARNING when the judge answers the faithfulness phrasing the recipe does not use clearly better."""
    if round(other["figure"] - used["figure"], 9) >= PHRASING_MARGIN:  # False when either is NaN
        phrasing = other["details"]["phrasing"]
        logger.warning(
            "faithfulness: the judge answers the `%s` phrasing better (AUC %.2f vs %.2f): set "
            "critic.faithfulness_phrasing: %s",
            phrasing,
            other["figure"],
            used["figure"],
            phrasing,
        )


def run_probes(
    recipe,
    judge: Callable,
    classifier: Callable,
    seed_records: list[dict],
    seed: int | None = None,
    *,
    identity: dict | str | None = None,
    experts: list | None = None,
    referee: Callable | None = None,
) -> dict:
    """The judge card of `recipe`: one entry per critic expert and per judge measurement of `recipe.evaluation`,
    then a gaming entry per critic expert and the selector entry (`gaming_entries`). The faithfulness expert's
    entry is followed by its other phrasing's (`probes.other_phrasing_probe`), suggested when it is better.

    `judge()` returns the `Judge`, `classifier(path)` a (model, tokenizer) pair, both loading on first use (the
    `model_roles.Models`); `experts` replaces the experts the registry would build (tests). `identity` (the
    judge's model identity) is recorded in the card so a card can be matched to the judge it measured. `referee()`
    returns the referee's `Judge` when the recipe holds out pairs for one (`referee.held_out_pairs`).
    """
    critic = recipe.critic
    seed = recipe.loop.seed if seed is None else seed
    thresholds = (critic.probe_informative, critic.probe_weak)
    conversations = probe_conversations(seed_records, critic.probe_conversations, seed)
    if experts is None:
        experts = [EXPERTS[name](name, critic, judge, classifier) for name in critic.experts]
    measurements = set(recipe.evaluation.measurements)
    if "toxicity" in measurements and not any(e.name == "toxicity" for e in experts):
        experts = experts + [EXPERTS["toxicity"]("toxicity", critic, judge, classifier)]  # evaluation's backend
    entries = []
    for expert in experts:
        logger.debug("Probing critic expert %s.", expert.name)
        if expert.name in ("faithfulness", "faithfulness_nli"):
            entries.append(probes.faithfulness_probe(expert, conversations, seed, thresholds))
            if isinstance(expert, FaithfulnessExpert):
                entries.append(probes.other_phrasing_probe(expert, conversations, seed, thresholds))
                suggest_phrasing(entries[-2], entries[-1])
        elif expert.name == "toxicity":
            entries.append(probes.toxicity_probe(expert, None, thresholds))
        elif expert.name in POLICIES:
            entries.append(probes.policy_probe(expert, conversations, seed, thresholds))
        elif expert.name == "persona_grounding":
            entries.append(probes.grounding_probe(expert, conversations, seed, thresholds))
        else:
            logger.warning("No probe for critic expert %s: the card leaves it out.", expert.name)
    for measurement in (m for m in JUDGED_MEASUREMENTS if m in measurements):
        logger.debug("Probing the %s judge.", measurement)
        if measurement == "detection":
            entries.append(probes.detection_probe(judge(), conversations, seed, thresholds))
        elif measurement == "extraction":
            entries.append(probes.extraction_probe(judge(), conversations, seed, thresholds))
        else:
            for family in recipe.evaluation.llm_judge_families:
                entries.append(probes.llm_judge_probe(judge(), conversations, seed, family, thresholds))
    if recipe.referee.held_out_pairs and referee is not None:
        logger.debug("Probing the referee.")
        entries.append(
            probes.referee_probe(
                referee(), conversations, seed, recipe.referee.criteria, thresholds, recipe.referee.mode
            )
        )
    entries += gaming_entries(critic, experts, conversations, seed, thresholds)
    low = warn_if_low(
        {f"{entry['kind']} '{entry['name']}' (probe)": entry["option_mass"] for entry in entries},
        critic.min_option_mass,
    )
    for entry in entries:
        if f"{entry['kind']} '{entry['name']}' (probe)" in low:
            # The figure ranks renormalised answers the judge mostly did not give: say so beside the verdict.
            note = f"option mass {entry['option_mass']['mean']:.0%}: answers are mostly off-option"
            entry["note"] = f"{entry['note']}; {note}" if entry["note"] else note
    return {
        "version": CARD_VERSION,
        "judge": identity,
        "seed": seed,
        "conversations": len(conversations),
        "pair_ids": [c["pair_id"] for c in conversations],
        "thresholds": {
            "informative": critic.probe_informative,
            "weak": critic.probe_weak,
            "min_option_mass": critic.min_option_mass,
        },
        "entries": entries,
    }
