"""Probes with known answers: each expert and judge measurement asked questions whose right answer is known.

They are built from the run's own seed conversations (the judge sees the kind of text it will judge) and one small
shipped fixture (toxicity). Each probe returns one judge-card entry (`card_entry`):
`{"name", "kind", "probe", "figure_name", "figure", "figures", "verdict", "note", "option_mass", "metrics",
"details"}`. `figure` is on the 0.5 = chance scale of `verdicts.py`; `option_mass` is the judge's raw probability
on the answer options over the probe's questions (None for classifiers and embedders); `metrics` are the patterns
of the metric / column names this judge produces (`card.judge_of`).

No known answer can be found by length or by position. Length: a degraded or gamed copy has exactly its
conversation's words (`degrade`, `gaming`), a persona swap or an extraction question keeps the conversation itself,
and the toxicity fixture's toxic and clean conversations are paired by length, the shorter padded with its own words.
Position: a pairwise probe asks both orders, each in a call of its own (`both_orders`); a score probe asks its
positives and its negatives in separate calls of one size (`matched_scores`), so paired items stand at the same place
and a judge that scores by place in the call gives them the same score.

| probe | known answer | figure |
| --- | --- | --- |
| faithfulness | a seed conversation contradicts another pair's personas more than its own | AUC of P(contradiction) |
| faithfulness, other phrasing | the same, asked in the phrasing the recipe does not use (kind `alternative`) | AUC |
| toxicity | the fixture's toxic conversations are toxic, its clean ones are not | AUC of P(toxic) |
| FED policy | a seed conversation beats a degraded copy of itself | win rate, position consistency |
| persona_grounding | a conversation is grounded in its own personas more than in another pair's | AUC |
| detection | a degraded copy of a seed conversation is the "AI" one | detection rate, position consistency |
| extraction | a speaker's own attributes are inferred more than another pair's | AUC of P(Yes) |
| LLM-judge family | a seed conversation scores above its degraded copy, per criterion | mean AUC over criteria |
| gaming (per expert) | a seed conversation beats each of its gamed copies | AUC or win rate per gaming kind |
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from importlib import resources

from ..critic import fed
from ..critic.faithfulness import EXAMPLES, PHRASINGS, FaithfulnessExpert
from ..critic.probes import swapped_personas
from ..critic.selection import GROUNDING
from ..evaluation import detection, llm_judge, profile_extraction
from . import gaming
from .degrade import degraded_copies, padded
from .figures import position_consistency, roc_auc, win_rate
from .option_mass import recording
from .verdicts import inverted, verdict, worst


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def weakest(figures: dict[str, float]) -> str:
    """The name of the lowest figure (NaN counts lowest: nothing measured)."""
    return min(figures, key=lambda name: figures[name] if figures[name] == figures[name] else -math.inf)


def card_entry(name, kind, probe, figures, thresholds, metrics, log=None, details=None, main=None) -> dict:
    """A card entry; its verdict is the worst of its figures' verdicts, its main figure the first one (or `main`)."""
    informative, weak = thresholds
    main = main or next(iter(figures))
    verdicts = [verdict(value, informative, weak) for value in figures.values()]
    note = None
    if inverted(figures[main], weak):
        note = f"{main} {figures[main]:.2f}: the judge prefers the wrong answer"
    return {
        "name": name,
        "kind": kind,
        "probe": probe,
        "figure_name": main,
        "figure": figures[main],
        "figures": figures,
        "verdict": worst(*verdicts),
        "note": note,
        "option_mass": log.summary() if log is not None else None,
        "metrics": metrics,
        "details": details or {},
    }


def _asked(records: list[dict]) -> list[dict]:
    """As candidates: parsed, with a candidate index, so experts score them as they score generated ones."""
    return [{**record, "parsed": True, "candidate": record.get("candidate", 0)} for record in records]


def expert_metrics(name: str) -> list[str]:
    """The metric / column names an expert's scores end up in (`<name>_mean`, `pass:<name>`, ...)."""
    return [name, f"{name}_mean", f"pass:{name}", f"{name}_selected_win_rate"]


def matched_scores(score: Callable[[list], list[float]], *lists: list) -> list[list[float]]:
    """`score` of each list in a call of its own. Lists of one length put paired items at the same place of their
    calls, so whatever a judge reads from the place (position bias, batch neighbours) is the same for both."""
    return [list(score(items)) if items else [] for items in lists]


def both_orders(judge, question: Callable, better: list[dict], worse: list[dict], options: list[str]):
    """P(the better item wins) shown first (P of the first option) and shown second (P of the second), each order
    in a call of its own with item i at place i, so neither the order in the prompt nor the place in the call helps."""
    if not better:
        return [], []
    first = judge.option_probabilities([question(good, bad) for good, bad in zip(better, worse)], options)
    second = judge.option_probabilities([question(bad, good) for good, bad in zip(better, worse)], options)
    return [p[0] for p in first], [p[1] for p in second]


def pairwise_probe(
    name: str,
    kind: str,
    judge,
    question: Callable[[dict, dict], str],
    better: list[dict],
    worse: list[dict],
    options: list[str],
    thresholds: tuple[float, float],
    metrics: list[str],
    probe_text: str,
    *,
    rate_name: str = "win rate",
) -> dict:
    """A card entry for a judge that compares two items and answers `options` (first option: the one shown first):
    `question(first, second)` is its prompt, `better[i]` should beat `worse[i]`. Both orders are asked
    (`both_orders`); the figures are the win rate (`rate_name`) and the position consistency."""
    with recording(judge) as log:
        first, second = both_orders(judge, question, better, worse, options)
    figures = {rate_name: win_rate(first, second), "position consistency": position_consistency(first, second)}
    details = {"p_first_answer": _mean(first + [1 - b for b in second]), "items": len(first)}
    return card_entry(name, kind, probe_text, figures, thresholds, metrics, log, details)


def referee_probe(
    judge, conversations: list[dict], seed: int, criteria: list[str], thresholds=(0.7, 0.6), mode: str = "pairwise"
) -> dict:
    """The referee asked, per criterion, to tell each seed conversation from a length-matched degraded copy of
    itself: pairwise, in both orders (a win rate per criterion, and the position consistency over all of them);
    pointwise, each alone in matched calls (the ROC AUC of P(Yes) per criterion)."""
    from ..data.conversation import format_conversation
    from ..evaluation import referee

    worse = degraded_copies(conversations, seed)
    if mode == "pointwise":
        texts = [[format_conversation(r["turns"]) for r in records] for records in (conversations, worse)]
        with recording(judge) as log:
            real, copy = (referee.yes_probabilities(judge, conversations, t, criteria) for t in texts)
        figures = {f"{c} AUC": roc_auc([r[i] for r in real], [r[i] for r in copy]) for i, c in enumerate(criteria)}
        details = {"p_yes_real": _mean(sum(real, [])), "p_yes_copy": _mean(sum(copy, []))}
        probe = "seed conversation vs a length-matched degraded copy, each alone, per criterion"
        return card_entry("referee", "measurement", probe, figures, thresholds, ["referee_"], log, details)
    figures, first_all, second_all = {}, [], []
    with recording(judge) as log:
        for criterion in criteria:

            def question(first, second, criterion=criterion):
                shown = [format_conversation(r["turns"]) for r in (first, second)]
                return referee.question(criterion, first, *shown)

            first, second = both_orders(judge, question, conversations, worse, referee.OPTIONS)
            figures[f"{criterion} win rate"] = win_rate(first, second)
            first_all, second_all = first_all + first, second_all + second
    figures["position consistency"] = position_consistency(first_all, second_all)
    details = {"p_first_answer": _mean(first_all + [1 - b for b in second_all]), "items": len(first_all)}
    probe = "seed conversation vs a length-matched degraded copy, per criterion, both orders"
    return card_entry("referee", "measurement", probe, figures, thresholds, ["referee_"], log, details)


def faithfulness_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """Own personas (negatives) against another pair's (positives: P(contradiction) should be higher): ROC AUC.

    The shipped answered EXAMPLES are scored too and shown apart (`details`): the judge has seen them answered in
    its prompt, so they test only whether it copies, and they do not count in the AUC.
    """
    own = _asked(conversations)
    swapped = _asked(swapped_personas(conversations, seed))
    examples = _asked([{**e, "pair_id": f"example-{i}"} for i, e in enumerate(EXAMPLES)])
    with recording(getattr(expert, "judge", None)) as log:
        own_scores, swapped_scores, example_scores = matched_scores(expert.score, own, swapped, examples)
    faithful = [s for s, e in zip(example_scores, EXAMPLES) if e["answer"].startswith("No")]
    unfaithful = [s for s, e in zip(example_scores, EXAMPLES) if e["answer"].startswith("Yes")]
    details = {
        "p_contradiction_own": _mean(own_scores),
        "p_contradiction_swapped": _mean(swapped_scores),
        "p_contradiction_examples_faithful": _mean(faithful),
        "p_contradiction_examples_unfaithful": _mean(unfaithful),
        "conversations": len(own),
    }
    if hasattr(expert, "phrasing"):
        details["phrasing"] = expert.phrasing
    figures = {"AUC": roc_auc(swapped_scores, own_scores)}
    probe = "seed conversations with another pair's personas vs their own"
    return card_entry(expert.name, "expert", probe, figures, thresholds, expert_metrics(expert.name), log, details)


def other_phrasing_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """`faithfulness_probe` of the phrasing `expert` does not use, with its judge and example count: small judges
    answer one phrasing far better, and this shows which. Kind `alternative` with no metrics: it suggests a
    phrasing, and neither marks a metric nor counts as a blind judge (`card.blind`)."""
    other = next(phrasing for phrasing in PHRASINGS if phrasing != expert.phrasing)
    name = f"{expert.name} ({other})"
    alternative = FaithfulnessExpert(name, expert.judge, expert.threshold, len(expert.examples), other)
    entry = faithfulness_probe(alternative, conversations, seed, thresholds)
    entry["details"]["alternative"] = "the phrasing critic.faithfulness_phrasing does not use; no run metric"
    return {**entry, "kind": "alternative", "metrics": []}


def toxicity_fixture() -> list[dict]:
    """The shipped clean / toxic conversations (`fixtures/toxicity.jsonl`, see its README for source and licence)."""
    text = resources.files("spc_train.health").joinpath("fixtures/toxicity.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def length_matched(toxic: list[dict], clean: list[dict]) -> tuple[list[dict], list[dict]]:
    """The i-th shortest toxic conversation paired with the i-th shortest clean one, the shorter of each pair padded
    with its own words (`degrade.padded`) to the longer's count: a pad that keeps a conversation toxic or clean."""
    toxic = sorted(toxic, key=lambda r: gaming.words(r["turns"]))
    clean = sorted(clean, key=lambda r: gaming.words(r["turns"]))
    matched = []
    for a, b in zip(toxic, clean):
        count = max(gaming.words(a["turns"]), gaming.words(b["turns"]))
        matched.append(({**a, "turns": padded(a["turns"], count)}, {**b, "turns": padded(b["turns"], count)}))
    return [a for a, _ in matched], [b for _, b in matched]


def toxicity_probe(expert, fixture: list[dict] | None = None, thresholds=(0.7, 0.6)) -> dict:
    """Toxic (positives) against clean fixture conversations, paired by length: ROC AUC of the expert's P(toxic)."""
    fixture = fixture if fixture is not None else toxicity_fixture()
    records = [{"pair_id": r["id"], "user1_persona": [], "user2_persona": [], "turns": r["turns"]} for r in fixture]
    toxic, clean = length_matched(
        [r for r, f in zip(records, fixture) if f["toxic"]], [r for r, f in zip(records, fixture) if not f["toxic"]]
    )
    with recording(getattr(expert, "judge", None)) as log:
        toxic_scores, clean_scores = matched_scores(expert.score, _asked(toxic), _asked(clean))
    details = {"p_toxic_toxic": _mean(toxic_scores), "p_toxic_clean": _mean(clean_scores), "pairs": len(toxic)}
    probe = "shipped toxic vs clean conversations, paired by length"
    metrics = expert_metrics(expert.name) + ["toxicity_"]
    figures = {"AUC": roc_auc(toxic_scores, clean_scores)}
    return card_entry(expert.name, "expert", probe, figures, thresholds, metrics, log, details)


def policy_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """A FED policy asked, in both orders, to compare each seed conversation with a degraded copy of itself."""
    return pairwise_probe(
        expert.name,
        "expert",
        expert.judge,
        partial(fed.pairwise_question, expert.name),
        conversations,
        degraded_copies(conversations, seed),
        list(fed.OPTIONS),
        thresholds,
        expert_metrics(expert.name),
        "seed conversation vs a degraded copy (shuffled / looped / spliced, same words), both orders",
    )


def grounding_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """The persona_grounding expert's own-personas (positives) against swapped-personas scores: ROC AUC."""
    own, swapped = _asked(conversations), _asked(swapped_personas(conversations, seed))
    own_scores, swapped_scores = matched_scores(expert.score, own, swapped)
    details = {"grounding_own": _mean(own_scores), "grounding_swapped": _mean(swapped_scores)}
    details["conversations"] = len(own)
    probe = "seed conversations with their own personas vs another pair's"
    metrics = expert_metrics(expert.name) + [f"{expert.name}_"]
    figures = {"AUC": roc_auc(own_scores, swapped_scores)}
    return card_entry(expert.name, "expert", probe, figures, thresholds, metrics, None, details)


def detection_probe(judge, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """The detection judge shown a seed conversation and a degraded copy (the pair's personas as profiles): it should
    name the copy the AI one, in both orders."""
    return pairwise_probe(
        "detection",
        "measurement",
        judge,
        lambda first, second: detection.detection_question(first, first, second),
        degraded_copies(conversations, seed),
        conversations,
        list(detection.OPTIONS),
        thresholds,
        ["detection_"],
        "seed conversation vs a degraded copy (same words) as the 'generated' one, both orders",
        rate_name="detection rate",
    )


def extraction_probe(judge, conversations: list[dict], seed: int, thresholds=(0.7, 0.6), per_side: int = 4) -> dict:
    """P(Yes, inferable) of a speaker's own attributes (positives) against as many of the same speaker slot of
    another pair (negatives), at most `per_side` each, about the same conversation: ROC AUC."""
    others = swapped_personas(conversations, seed)
    own_questions, other_questions = [], []
    for record, other in zip(conversations, others):
        for speaker in (1, 2):
            key = f"user{speaker}_persona"
            mine, theirs = [a for a in record[key] if a.strip()], [a for a in other[key] if a.strip()]
            count = min(per_side, len(mine), len(theirs))
            own_questions += [profile_extraction.extraction_question(record, speaker, a) for a in mine[:count]]
            other_questions += [profile_extraction.extraction_question(record, speaker, a) for a in theirs[:count]]

    def p_yes(questions: list[str]) -> list[float]:
        return [p[0] for p in judge.option_probabilities(questions, list(profile_extraction.OPTIONS))]

    with recording(judge) as log:
        own, other = matched_scores(p_yes, own_questions, other_questions)
    details = {"p_yes_own": _mean(own), "p_yes_other": _mean(other), "questions": len(own) + len(other)}
    probe = "a speaker's own persona attributes vs another pair's"
    figures = {"AUC": roc_auc(own, other)}
    return card_entry("extraction", "measurement", probe, figures, thresholds, ["extraction_"], log, details)


def llm_judge_probe(judge, conversations: list[dict], seed: int, family: str, thresholds=(0.7, 0.6)) -> dict:
    """Every criterion of an LLM-judge family scores each seed conversation and its degraded copy: per criterion
    the ROC AUC of seed over degraded, and their mean as the family's figure."""
    criteria = {name: c for name, c in llm_judge.CRITERIA.items() if c.family == family}
    worse = degraded_copies(conversations, seed)
    aucs = {}

    def scores(criterion, records: list[dict]) -> list[float]:
        questions = [llm_judge.criterion_question(criterion, r) for r in records]
        answers = judge.option_probabilities(questions, list(criterion.options))
        return [llm_judge.expected_score(p, criterion.values) for p in answers]

    with recording(judge) as log:
        for name, criterion in criteria.items():
            seed_scores, worse_scores = matched_scores(partial(scores, criterion), conversations, worse)
            aucs[name] = roc_auc(seed_scores, worse_scores)
    probe = "seed conversation vs a degraded copy (same words), each criterion"
    details = {"criterion_auc": aucs, "conversations": len(conversations)}
    figures = {"mean AUC": _mean(list(aucs.values()))}
    return card_entry(family, "measurement", probe, figures, thresholds, [f"{family}_"], log, details)


def gamed_versions(conversations: list[dict], seed: int) -> dict[str, list[dict]]:
    """Per gaming kind (`gaming.KINDS`), a gamed copy of every probe conversation, as a candidate."""
    return {kind: _asked(gaming.gamed_copies(conversations, kind, seed)) for kind in gaming.KINDS}


def gaming_probe(
    expert, conversations: list[dict], gamed: dict[str, list[dict]], thresholds=(0.7, 0.6)
) -> tuple[dict, dict]:
    """Does the expert prefer each seed conversation to its gamed copies (`gamed_versions`: same words)? One figure
    per gaming kind: a policy's win rate, both orders; a scorer's ROC AUC with the real conversation on the right
    side (higher for persona grounding, lower for a filter, which scores something bad).

    Returns the entry and the answers that `selector.selector_probe` runs the selection on: per kind P(real beats
    its copy) for a policy, else the scores of the real conversations ("real") and of each kind's copies.
    """
    real = _asked(conversations)
    with recording(getattr(expert, "judge", None)) as log:
        if expert.kind == "policy":
            copies = [copy for kind in gamed for copy in gamed[kind]]
            question = partial(fed.pairwise_question, expert.name)
            first, second = both_orders(expert.judge, question, real * len(gamed), copies, list(fed.OPTIONS))
            parts = {kind: slice(k * len(real), (k + 1) * len(real)) for k, kind in enumerate(gamed)}
            answers = {kind: [(a + b) / 2 for a, b in zip(first[part], second[part])] for kind, part in parts.items()}
            figures = {kind: win_rate(first[part], second[part]) for kind, part in parts.items()}
            consistency = {kind: position_consistency(first[part], second[part]) for kind, part in parts.items()}
            details = {"position_consistency": consistency}
            probe = "seed conversation vs each gamed copy (same words), both orders: win rate per kind"
        else:
            real_scores, *copy_scores = matched_scores(expert.score, real, *gamed.values())
            answers = {"real": real_scores, **dict(zip(gamed, copy_scores))}
            higher = expert.name == GROUNDING
            figures = {
                kind: roc_auc(real_scores, scores) if higher else roc_auc(scores, real_scores)
                for kind, scores in zip(gamed, copy_scores)
            }
            details = {"mean_real": _mean(real_scores), **{f"mean_{k}": _mean(s) for k, s in zip(gamed, copy_scores)}}
            side = "higher" if higher else "lower"
            probe = f"seed conversation vs each gamed copy (same words): AUC per kind, the seed scoring {side}"
    details["conversations"] = len(real)
    name = f"{expert.name} vs gamed"
    entry = card_entry(name, "gaming", probe, figures, thresholds, [], log, details, main=weakest(figures))
    return entry, answers
