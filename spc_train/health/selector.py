"""The selector probe: does the whole critic, the recipe's filters and then its vote, choose a seed conversation over
a gamed copy of it (`gaming`: same words, written to please a gameable critic)?

It asks the judge nothing of its own: the gaming probes (`probes.gaming_probe`) have scored every seed conversation
and every gamed copy with every critic expert, and here each (conversation, copy) is a pair of two candidates with
the rows `critic.registry.critique` would have stored for them (scores, a policy's P(real beats copy) as its
pairwise matrix), chosen between by `critic.selection.select` with the recipe's thresholds and grounding rule.

Each pair is selected twice, the real conversation as candidate 0 and as candidate 1, so the lower-index tie-break
cannot decide it; a pair with no survivor counts half (neither is chosen). The figure per gaming kind is the share of
pairs whose real conversation is selected: 0.5 = a critic that cannot tell them apart, 1 = never gamed.
"""

from __future__ import annotations

import math

from ..critic.selection import filter_thresholds, grounding_rule, select
from .gaming import KINDS
from .probes import card_entry, weakest


def _row(pair_id: str, candidate: int, scores: dict, wins: dict, kind: str, real: bool) -> dict:
    """A critique row of one of a pair's two candidates; `wins[policy]` is P(this one beats the other)."""
    pairwise = {policy: [math.nan, w] if candidate == 0 else [w, math.nan] for policy, w in wins.items()}
    return {
        "pair_id": pair_id,
        "candidate": candidate,
        "parsed": True,
        "scores": {**scores, **wins},
        "pairwise": pairwise,
        "gaming_kind": kind,
        "real": real,
    }


def selector_probe(critic, experts: list, conversations: list[dict], answers: dict, thresholds=(0.7, 0.6)) -> dict:
    """The selector's card entry from `answers` (expert name -> what `probes.gaming_probe` returned for it) of the
    critic's `experts`; the filters and grounding rule are `critic`'s (`filter_thresholds`, `grounding_rule`)."""
    policies = [e.name for e in experts if e.name in answers and e.kind == "policy"]
    scorers = [e.name for e in experts if e.name in answers and e.kind != "policy"]
    rows, kind_of = [], {}
    for kind in KINDS:
        for i, conversation in enumerate(conversations):
            real = {name: answers[name]["real"][i] for name in scorers}
            copy = {name: answers[name][kind][i] for name in scorers}
            wins = {name: answers[name][kind][i] for name in policies}
            for real_candidate in (0, 1):
                pair_id = f"{conversation['pair_id']}:{kind}:{real_candidate}"
                kind_of[pair_id] = kind
                rows.append(_row(pair_id, real_candidate, real, wins, kind, True))
                rows.append(_row(pair_id, 1 - real_candidate, copy, {p: 1 - w for p, w in wins.items()}, kind, False))
    selected, stats = select(rows, filter_thresholds(critic), policies, grounding=grounding_rule(critic))
    figures, details = {}, {}
    pairs = 2 * len(conversations)
    for kind in KINDS:
        real = sum(row["real"] for row in selected if row["gaming_kind"] == kind)
        neither = sum(kind_of[pair_id] == kind for pair_id in stats["pairs_without_survivor"])
        figures[kind] = (real + 0.5 * neither) / pairs if pairs else math.nan
        details[kind] = {"real": real, "gamed": pairs - real - neither, "neither": neither}
    details.update(pairs=pairs, policies=policies, scorers=scorers)
    probe = "the critic's filters and vote between a seed conversation and each gamed copy: share real selected"
    return card_entry("selector", "selector", probe, figures, thresholds, [], None, details, main=weakest(figures))
