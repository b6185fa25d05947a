"""What a blind judge does (`loop.on_blind_judge`): `warn` names every judge at chance and goes on, its numbers
marked in the report and the end-of-loop table; `stop` refuses to go on before those numbers are used."""

from __future__ import annotations

import logging

from ..configs import RecipeError
from .card import _number, blind

logger = logging.getLogger(__name__)


class BlindJudgeError(RecipeError):
    """A judge scored at chance on its probe and the recipe says `loop.on_blind_judge: stop`."""


def _figures(entry: dict) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in entry["figures"].items())


def enforce(card: dict, on_blind: str = "warn") -> list[str]:
    """Warn about (or, with `stop`, raise `BlindJudgeError` for) the card's entries at chance; returns their names."""
    entries = blind(card)
    names = [entry["name"] for entry in entries]
    if entries:
        logger.warning(
            "Judges at chance on their probes, so their numbers do not measure what they say: %s. Use a stronger "
            "judge model, or read them as noise (the judge card: RUN/probes/card.md; the report marks them).",
            "; ".join(f"{entry['kind']} {entry['name']} ({_figures(entry)})" for entry in entries),
        )
    if names and on_blind == "stop":
        raise BlindJudgeError(
            f"Judges at chance on their probes: {', '.join(names)} (loop.on_blind_judge: stop). See the judge card; "
            "use a stronger judge, drop those experts / measurements, or set loop.on_blind_judge: warn."
        )
    return names
