"""Option mass: how much of a judge's next-token probability falls on the answer options before renormalisation.

`Judge.option_probabilities` renormalises over the options, so a judge whose next token would be "The" or "User"
still looks like it answered firmly. The raw mass on the options (`judge.last_option_mass`) shows that it did not:
a judge that answers the question puts most of its probability there. `recording` collects it for every call an
expert or measurement makes, without the expert knowing; `summary` and `warn_if_low` turn it into the figures of
the critique rows, `stage.json`, the eval metrics and the judge card.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# The default of `critic.min_option_mass`: under half the probability on the options, the judge mostly says
# something else, and its renormalised answer is mostly noise.
DEFAULT_MIN_OPTION_MASS = 0.5


@dataclass
class MassLog:
    """Per judge question, in the order asked: the raw option mass and the judge's top next token."""

    masses: list[float] = field(default_factory=list)
    top_tokens: list[str] = field(default_factory=list)
    calls: int = 0

    def summary(self) -> dict | None:
        return summary(self.masses, self.top_tokens)


def summary(masses: Iterable[float], top_tokens: Iterable[str] = ()) -> dict | None:
    """Mean and minimum option mass, the question count and the (up to 3) most common top tokens; None if no
    question was asked."""
    values = [float(m) for m in masses if m == m]
    if not values:
        return None
    common = [token for token, _ in Counter(top_tokens).most_common(3)]
    return {"mean": sum(values) / len(values), "min": min(values), "questions": len(values), "top_tokens": common}


@contextmanager
def recording(judge) -> Iterator[MassLog]:
    """Collect `last_option_mass` / `last_top_tokens` of every `option_probabilities` call `judge` answers inside.

    The judge's method is wrapped on the instance, so experts and measurements that hold the judge are recorded as
    they are; a None judge (a classifier expert) records nothing.
    """
    log = MassLog()
    if judge is None:
        yield log
        return
    original = judge.option_probabilities

    def recorded(questions, options, *args, **kwargs):
        answers = original(questions, options, *args, **kwargs)
        log.calls += 1
        log.masses += list(getattr(judge, "last_option_mass", []) or [])
        log.top_tokens += list(getattr(judge, "last_top_tokens", []) or [])
        return answers

    judge.option_probabilities = recorded
    try:
        yield log
    finally:
        del judge.option_probabilities  # the class's method again


def warn_if_low(figures: dict[str, dict | None], minimum: float) -> list[str]:
    """One WARNING naming every judge (`figures`: label -> option-mass figures) whose mean option mass is under
    `minimum`, with its figure and top tokens; returns the labels named."""
    low = {name: f for name, f in figures.items() if f and math.isfinite(f["mean"]) and f["mean"] < minimum}
    if low:
        named = "; ".join(
            f"{name} {100 * f['mean']:.1f}% (min {100 * f['min']:.1f}% over {f.get('questions', 0)} questions, "
            f"top tokens {', '.join(repr(t) for t in f.get('top_tokens') or []) or 'unknown'})"
            for name, f in low.items()
        )
        logger.warning(
            "Judges put little of their next-token probability on the answer options (critic.min_option_mass "
            "%.0f%%): %s. Their scores are renormalised guesses: use a larger or instruction-tuned judge "
            "(judge.name_or_path), check that its chat template ends where the answer begins, or read these numbers "
            "as uninformative (see the judge card).",
            100 * minimum,
            named,
        )
    return list(low)


def merge(rows_figures: Iterable[dict | None]) -> dict | None:
    """One figure from several (per row or per shard): mean of means weighted by questions, min of mins, and the
    most common top tokens."""
    parts = [f for f in rows_figures if f]
    if not parts:
        return None
    questions = sum(f.get("questions", 1) for f in parts)
    tokens: Counter = Counter()
    for f in parts:
        tokens.update({t: f.get("questions", 1) for t in f.get("top_tokens") or []})
    return {
        "mean": sum(f["mean"] * f.get("questions", 1) for f in parts) / questions,
        "min": min(f["min"] for f in parts),
        "questions": questions,
        "top_tokens": [token for token, _ in tokens.most_common(3)],
    }
