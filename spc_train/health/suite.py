"""All probes of a recipe's judges, run on its own models: the judge card.

`run_probes` takes the models as the loop's critique stage does, as loaders (`judge()`, `classifier(path)`), so a
probe that is not needed loads nothing. The seed conversations are the run's (`seed_records`, as
`spc_train.data.read_seed` gives them); at most `critic.probe_conversations` of them, chosen by `seed`, keep the
cost bounded: per FED policy 2 questions a conversation, faithfulness 2 a conversation plus the 4 examples,
extraction up to 16 a conversation, each LLM-judge criterion 2 a conversation.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from ..critic.fed import POLICIES
from ..critic.registry import EXPERTS
from . import probes
from .option_mass import warn_if_low

logger = logging.getLogger(__name__)

CARD_VERSION = 1
JUDGED_MEASUREMENTS = ("detection", "extraction", "llm_judge")


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


def run_probes(
    recipe,
    judge: Callable,
    classifier: Callable,
    seed_records: list[dict],
    seed: int | None = None,
    *,
    identity: dict | str | None = None,
    experts: list | None = None,
) -> dict:
    """The judge card of `recipe`: one entry per critic expert and per judge measurement of `recipe.evaluation`.

    `judge()` returns the `Judge`, `classifier(path)` a (model, tokenizer) pair, both loading on first use (the
    `model_roles.Models`); `experts` replaces the experts the registry would build (tests). `identity` (the
    judge's model identity) is recorded in the card so a card can be matched to the judge it measured.
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
