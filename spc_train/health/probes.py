"""Probes with known answers: each expert and judge measurement asked questions whose right answer is known.

They are built from the run's own seed conversations (the judge sees the kind of text it will judge) and one small
shipped fixture (toxicity). Each probe returns one judge-card entry:
`{"name", "kind", "probe", "figure_name", "figure", "figures", "verdict", "note", "option_mass", "metrics",
"details"}`. `figure` is on the 0.5 = chance scale of `verdicts.py`; `option_mass` is the judge's raw probability
on the answer options over the probe's questions (None for classifiers and embedders); `metrics` are the patterns
of the metric / column names this judge produces (`card.judge_of`).

| probe | known answer | figure |
| --- | --- | --- |
| faithfulness | a seed conversation contradicts another pair's personas more than its own | AUC of P(Yes) |
| toxicity | the fixture's toxic conversations are toxic, its clean ones are not | AUC of P(toxic) |
| FED policy | a seed conversation beats a degraded copy of itself | win rate, position consistency |
| persona_grounding | a conversation is grounded in its own personas more than in another pair's | AUC |
| detection | a degraded copy of a seed conversation is the "AI" one | detection rate, position consistency |
| extraction | a speaker's own attributes are inferred more than another pair's | AUC of P(Yes) |
| LLM-judge family | a seed conversation scores above its degraded copy, per criterion | mean AUC over criteria |
"""

from __future__ import annotations

import json
from importlib import resources

from ..critic import fed
from ..critic.faithfulness import EXAMPLES
from ..critic.probes import swapped_personas
from ..evaluation import detection, llm_judge, profile_extraction
from .degrade import degraded_copies
from .figures import position_consistency, roc_auc, win_rate
from .option_mass import recording
from .verdicts import inverted, verdict, worst


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def _entry(name, kind, probe, figures, thresholds, metrics, log=None, details=None, main=None) -> dict:
    """A card entry; its verdict is the worst of its figures' verdicts, its main figure the first one."""
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


def faithfulness_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """Own personas (negatives) against another pair's (positives: P(contradiction) should be higher): ROC AUC.

    The shipped answered EXAMPLES are scored too and shown apart (`details`): the judge has seen them answered in
    its prompt, so they test only whether it copies, and they do not count in the AUC.
    """
    own = _asked(conversations)
    swapped = _asked(swapped_personas(conversations, seed))
    examples = _asked([{**e, "pair_id": f"example-{i}"} for i, e in enumerate(EXAMPLES)])
    with recording(getattr(expert, "judge", None)) as log:
        scores = expert.score(own + swapped + examples)
    n = len(own)
    own_scores, swapped_scores, example_scores = scores[:n], scores[n : 2 * n], scores[2 * n :]
    faithful = [s for s, e in zip(example_scores, EXAMPLES) if e["answer"].startswith("No")]
    unfaithful = [s for s, e in zip(example_scores, EXAMPLES) if e["answer"].startswith("Yes")]
    details = {
        "p_contradiction_own": _mean(own_scores),
        "p_contradiction_swapped": _mean(swapped_scores),
        "p_contradiction_examples_faithful": _mean(faithful),
        "p_contradiction_examples_unfaithful": _mean(unfaithful),
        "conversations": n,
    }
    figures = {"AUC": roc_auc(swapped_scores, own_scores)}
    probe = "seed conversations with another pair's personas vs their own"
    return _entry(expert.name, "expert", probe, figures, thresholds, expert_metrics(expert.name), log, details)


def toxicity_fixture() -> list[dict]:
    """The shipped clean / toxic conversations (`fixtures/toxicity.jsonl`, see its README for source and licence)."""
    text = resources.files("spc_train.health").joinpath("fixtures/toxicity.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def toxicity_probe(expert, fixture: list[dict] | None = None, thresholds=(0.7, 0.6)) -> dict:
    """Toxic (positives) against clean fixture conversations: ROC AUC of the expert's P(toxic)."""
    fixture = fixture if fixture is not None else toxicity_fixture()
    records = _asked(
        [{"pair_id": r["id"], "user1_persona": [], "user2_persona": [], "turns": r["turns"]} for r in fixture]
    )
    with recording(getattr(expert, "judge", None)) as log:
        scores = expert.score(records)
    toxic = [s for s, r in zip(scores, fixture) if r["toxic"]]
    clean = [s for s, r in zip(scores, fixture) if not r["toxic"]]
    details = {"p_toxic_toxic": _mean(toxic), "p_toxic_clean": _mean(clean), "conversations": len(fixture)}
    probe = "shipped toxic vs clean conversations"
    metrics = expert_metrics(expert.name) + ["toxicity_"]
    return _entry(expert.name, "expert", probe, {"AUC": roc_auc(toxic, clean)}, thresholds, metrics, log, details)


def _both_orders(judge, question, better: list[dict], worse: list[dict], options: list[str]):
    """P(the better item wins) with it shown first (P("1")) and second (P("2")), one batched call."""
    questions = []
    for good, bad in zip(better, worse):
        questions += [question(good, bad), question(bad, good)]
    answers = judge.option_probabilities(questions, options) if questions else []
    return [answers[2 * i][0] for i in range(len(better))], [answers[2 * i + 1][1] for i in range(len(better))]


def policy_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """A FED policy asked, in both orders, to compare each seed conversation with a degraded copy of itself."""
    worse = degraded_copies(conversations, seed)
    with recording(expert.judge) as log:
        first, second = _both_orders(
            expert.judge,
            lambda a, b: fed.pairwise_question(expert.name, a, b),
            conversations,
            worse,
            list(fed.OPTIONS),
        )
    figures = {"win rate": win_rate(first, second), "position consistency": position_consistency(first, second)}
    details = {"p_first_answer": _mean([a for a in first] + [1 - b for b in second]), "items": len(first)}
    probe = "seed conversation vs a degraded copy (shuffled / looped / truncated), both orders"
    return _entry(expert.name, "expert", probe, figures, thresholds, expert_metrics(expert.name), log, details)


def grounding_probe(expert, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """The persona_grounding expert's own-vs-swapped personas AUC (`critic.probes.grounding_auc`)."""
    from ..critic.probes import own_and_swapped_scores

    own, swapped = own_and_swapped_scores(expert, _asked(conversations), seed)
    details = {"grounding_own": _mean(own), "grounding_swapped": _mean(swapped), "conversations": len(own)}
    probe = "seed conversations with their own personas vs another pair's"
    metrics = expert_metrics(expert.name) + [f"{expert.name}_"]
    return _entry(expert.name, "expert", probe, {"AUC": roc_auc(own, swapped)}, thresholds, metrics, None, details)


def detection_probe(judge, conversations: list[dict], seed: int, thresholds=(0.7, 0.6)) -> dict:
    """The detection judge shown a seed conversation and a degraded copy as the pair's "generated" one: it should
    name the copy the AI one, in both orders."""
    pairs = list(zip(conversations, degraded_copies(conversations, seed)))
    with recording(judge) as log:
        items = detection.detection_items(judge, pairs)
    first = [item["p_generated_first"] for item in items]
    second = [item["p_generated_second"] for item in items]
    figures = {"detection rate": win_rate(first, second), "position consistency": position_consistency(first, second)}
    probe = "seed conversation vs a degraded copy as the 'generated' one, both orders"
    return _entry("detection", "measurement", probe, figures, thresholds, ["detection_"], log, {"items": len(items)})


def extraction_probe(judge, conversations: list[dict], seed: int, thresholds=(0.7, 0.6), per_side: int = 4) -> dict:
    """P(Yes, inferable) of up to `per_side` of a speaker's own attributes (positives) against as many of the
    same speaker slot of another pair (negatives): ROC AUC."""
    others = swapped_personas(conversations, seed)
    questions, own_flags = [], []
    for record, other in zip(conversations, others):
        for speaker in (1, 2):
            key = f"user{speaker}_persona"
            for attribute in [a for a in record[key] if a.strip()][:per_side]:
                questions.append(profile_extraction.extraction_question(record, speaker, attribute))
                own_flags.append(True)
            for attribute in [a for a in other[key] if a.strip()][:per_side]:
                questions.append(profile_extraction.extraction_question(record, speaker, attribute))
                own_flags.append(False)
    with recording(judge) as log:
        answers = judge.option_probabilities(questions, list(profile_extraction.OPTIONS)) if questions else []
    own = [p[0] for p, flag in zip(answers, own_flags) if flag]
    other = [p[0] for p, flag in zip(answers, own_flags) if not flag]
    details = {"p_yes_own": _mean(own), "p_yes_other": _mean(other), "questions": len(questions)}
    probe = "a speaker's own persona attributes vs another pair's"
    return _entry(
        "extraction", "measurement", probe, {"AUC": roc_auc(own, other)}, thresholds, ["extraction_"], log, details
    )


def llm_judge_probe(judge, conversations: list[dict], seed: int, family: str, thresholds=(0.7, 0.6)) -> dict:
    """Every criterion of an LLM-judge family scores each seed conversation and its degraded copy: per criterion
    the ROC AUC of seed over degraded, and their mean as the family's figure."""
    criteria = {name: c for name, c in llm_judge.CRITERIA.items() if c.family == family}
    worse = degraded_copies(conversations, seed)
    aucs = {}
    with recording(judge) as log:
        for name, criterion in criteria.items():
            questions = [llm_judge.criterion_question(criterion, r) for r in conversations + worse]
            answers = judge.option_probabilities(questions, list(criterion.options))
            scores = [llm_judge.expected_score(p, criterion.values) for p in answers]
            aucs[name] = roc_auc(scores[: len(conversations)], scores[len(conversations) :])
    probe = "seed conversation vs a degraded copy, each criterion"
    details = {"criterion_auc": aucs, "conversations": len(conversations)}
    figures = {"mean AUC": _mean(list(aucs.values()))}
    return _entry(family, "measurement", probe, figures, thresholds, [f"{family}_"], log, details)
